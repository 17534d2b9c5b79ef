"""Data sets and the sharded loader.

Synthetic data is a pure function of (seed, index): the same global batch at a step whatever the
world size, so runs at different world sizes (and parity tests) see identical data. The real
loader reads a class-per-folder image tree (ImageNet's layout). Sharding is torch's
DistributedSampler; its epoch is set each epoch so the order changes and stays reproducible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

DATA_KINDS = ("synthetic", "real")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")
# ImageNet channel statistics, as every ResNet-50 recipe normalises.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    kind: str = "synthetic"  # synthetic | real
    path: str = ""  # real data: root folder (or file) of the data set
    loader_workers: int = 0  # DataLoader worker processes per rank
    synthetic_size: int = 0  # synthetic samples per epoch; 0 = enough for the whole run
    token_dtype: str = "uint16"  # token files (gpt): dtype of the flat array of token ids

    def check(self) -> None:
        """ValueError naming the bad setting."""
        if self.kind not in DATA_KINDS:
            raise ValueError(f"unknown data.kind {self.kind!r} (known: {', '.join(DATA_KINDS)})")
        if self.loader_workers < 0:
            raise ValueError(f"data.loader_workers must be 0 or more, got {self.loader_workers}")
        if self.synthetic_size < 0:
            raise ValueError(f"data.synthetic_size must be 0 (auto) or more, got {self.synthetic_size}")
        if self.kind == "real":
            if not self.path:
                raise ValueError("data.kind is 'real' but data.path is empty")
            if not Path(self.path).exists():
                raise ValueError(f"data.path does not exist: {self.path}")


class SyntheticImages(Dataset):
    def __init__(self, length: int, resolution: int, num_classes: int, seed: int) -> None:
        self.length, self.resolution, self.num_classes, self.seed = length, resolution, num_classes, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        x = torch.randn(3, self.resolution, self.resolution, generator=g)
        y = int(torch.randint(self.num_classes, (1,), generator=g))
        return x, y


def find_images(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) for every image under root/<class>/; classes sorted by name, or the given
    class list (a validation folder is indexed with the training folder's classes)."""
    root = Path(root)
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes is None:
        classes = found
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise ValueError(f"{root} has class folder {unknown[0]!r} that the training data lacks")
    items = []
    for idx, name in enumerate(classes):
        if not (root / name).is_dir():
            continue
        for p in sorted((root / name).rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((p, idx))
    return items, classes


def check_image_folder(root: Path, what: str) -> None:
    """ValueError unless root is a folder with at least one <class>/<image> (found without listing the
    whole tree: an ImageNet-sized folder is checked in milliseconds)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{what} must be a folder of <class>/<image> files, got {'a file' if root.exists() else 'nothing'}: "
                         f"{root}")
    for class_dir in (d for d in root.iterdir() if d.is_dir()):
        for dirpath, _dirs, files in os.walk(class_dir):
            if any(Path(f).suffix.lower() in IMAGE_EXTENSIONS for f in files):
                return
    raise ValueError(f"{what} {root} holds no images in <class>/<image> layout "
                     f"(extensions {', '.join(IMAGE_EXTENSIONS)})")


class ImageFolder(Dataset):
    """Class-per-folder images, resized (shorter side) and centre-cropped to a square, normalised.
    Training adds a horizontal flip decided by (seed, epoch, index), so it is reproducible."""

    def __init__(self, root: str | Path, resolution: int, train: bool, seed: int = 0,
                 classes: list[str] | None = None) -> None:
        self.items, self.classes = find_images(Path(root), classes)
        if not self.items:
            raise ValueError(f"no images found under {root} (expected {root}/<class>/<image>)")
        self.resolution, self.train, self.seed, self.epoch = resolution, train, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = self.resolution / min(w, h)
            img = img.resize((max(self.resolution, round(w * scale)), max(self.resolution, round(h * scale))),
                             Image.BILINEAR)
            w, h = img.size
            left, top = (w - self.resolution) // 2, (h - self.resolution) // 2
            img = img.crop((left, top, left + self.resolution, top + self.resolution))
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = data.view(self.resolution, self.resolution, 3).permute(2, 0, 1).float().div_(255)
        x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        if self.train:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(2)
        return x, label


@dataclass
class ShardedLoader:
    loader: DataLoader
    sampler: DistributedSampler
    # Where this run's stream started: (step, epoch, global samples of that epoch already consumed).
    # (0, 0, 0) for a fresh run; a run resumed from a checkpoint written at another world size starts
    # inside an epoch at a sample count that need not be a whole number of this run's global batches.
    origin: tuple[int, int, int] = (0, 0, 0)

    @property
    def global_batch(self) -> int:
        return self.loader.batch_size * self.sampler.num_replicas

    def epoch_order(self, epoch: int) -> list[int]:
        """The epoch's global sample order before it is dealt to the ranks: DistributedSampler's own
        permutation (seed + epoch), of which rank r takes items r, r + W, r + 2W ..."""
        if not self.sampler.shuffle:
            return list(range(len(self.loader.dataset)))
        g = torch.Generator()
        g.manual_seed(self.sampler.seed + epoch)
        return torch.randperm(len(self.loader.dataset), generator=g).tolist()

    def remaining(self, epoch: int, consumed: int) -> list[int]:
        """This rank's items of the epoch after the first `consumed` of its global order: the rest is
        dealt round-robin over this run's ranks, cut to the same length on each (drop_last). Whatever
        world size consumed the first part (it took a prefix of the order), no item is seen twice and
        none of the rest is skipped but the cut tail, as an epoch's end always drops."""
        rest = self.epoch_order(epoch)[consumed:]
        world = self.sampler.num_replicas
        return rest[self.sampler.rank::world][:len(rest) // world]

    def batches(self, start_epoch: int = 0, skip_batches: int = 0, consumed: int | None = None
                ) -> Iterator[tuple[int, object]]:
        """Endless (epoch, batch) stream; each epoch reshuffles through the sampler. skip_batches:
        resume inside start_epoch (a restored checkpoint's position) without loading what is skipped;
        consumed: resume after that many samples of start_epoch's global order (a checkpoint of another
        world size)."""
        epoch = start_epoch
        if consumed is None:
            consumed = skip_batches * self.global_batch
        while True:
            self.sampler.set_epoch(epoch)
            dataset = self.loader.dataset
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = self.loader
            if consumed:
                loader = DataLoader(dataset, batch_size=self.loader.batch_size, sampler=self.remaining(epoch, consumed),
                                    num_workers=self.loader.num_workers, drop_last=self.loader.drop_last)
                consumed = 0
            for batch in loader:
                yield epoch, batch
            epoch += 1

    def resume(self, step: int, epoch: int, consumed: int) -> Iterator[tuple[int, object]]:
        """The stream of a run that starts at `step`, after `consumed` samples of `epoch`'s global order
        (a checkpoint written at another world size); position() counts from there."""
        self.origin = (step, epoch, consumed)
        return self.batches(epoch, consumed=consumed)

    def position(self, step: int) -> dict[str, int]:
        """Where the stream is after `step` batches (the next batch's epoch, its index in the epoch
        on this rank, and the global samples of the epoch consumed so far)."""
        per_epoch = len(self.loader)
        b = self.loader.batch_size
        start, epoch0, consumed0 = self.origin
        done = step - start
        left = (len(self.loader.dataset) - consumed0) // self.sampler.num_replicas  # len(remaining(epoch0, consumed0))
        first = left // b if consumed0 else per_epoch  # batches left in epoch0
        if done < first:
            epoch, consumed = epoch0, consumed0 + done * self.global_batch
        else:
            epoch, consumed = epoch0 + 1 + (done - first) // per_epoch, (done - first) % per_epoch * self.global_batch
        batch = consumed // self.global_batch  # this rank's batches of the epoch so far, at this world size
        return {"step": step, "epoch": epoch, "batch": batch, "batches_per_epoch": per_epoch, "consumed": consumed,
                "batch_size": b, "world_size": self.sampler.num_replicas}


def sharded_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int, seed: int,
                   workers: int = 0, shuffle: bool = True, drop_last: bool = True,
                   pin_memory: bool = False) -> ShardedLoader:
    """pin_memory: page-locked batches, for asynchronous copies to a GPU."""
    if len(dataset) < batch_size * world_size and drop_last:
        raise ValueError(f"data set has {len(dataset)} samples, fewer than one global batch "
                         f"({batch_size} x {world_size})")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                 seed=seed, drop_last=drop_last)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        drop_last=drop_last, pin_memory=pin_memory)
    return ShardedLoader(loader, sampler)


class EvalShard(Dataset):
    """One rank's share of an evaluation set: items rank, rank + W, rank + 2W, ... padded to the
    same length on every rank, so all ranks run the same number of equal batches (strategies with
    collectives in forward need that). Each item is (input, target, valid); padding repeats one of
    the rank's items with valid False, so no sample is counted twice. (DistributedSampler would pad
    by repeating items that then count twice.)"""

    def __init__(self, dataset: Dataset, rank: int, world_size: int) -> None:
        n = len(dataset)
        if n < world_size:
            raise ValueError(f"evaluation set has {n} samples, fewer than the {world_size} ranks")
        self.dataset = dataset
        self.indices = list(range(rank, n, world_size))
        self.valid = len(self.indices)
        self.length = -(-n // world_size)  # ceil: the longest shard
        self.indices += [self.indices[0]] * (self.length - self.valid)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[object, object, bool]:
        x, y = self.dataset[self.indices[i]]
        return x, y, i < self.valid


def sharded_eval_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int,
                        workers: int = 0) -> DataLoader:
    """Batches of (inputs, targets, valid mask) over this rank's EvalShard, in a fixed order."""
    return DataLoader(EvalShard(dataset, rank, world_size), batch_size=batch_size, shuffle=False,
                      num_workers=workers, drop_last=False)
