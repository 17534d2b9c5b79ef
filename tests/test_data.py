"""Synthetic data is a function of (seed, index); sharding is DistributedSampler-correct; the image
folder loader reads a class-per-folder tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainscale.workloads.data import ImageFolder, SyntheticImages, find_images, sharded_loader


def test_synthetic_is_deterministic_and_seed_dependent():
    a, b, c = SyntheticImages(10, 32, 5, seed=1), SyntheticImages(10, 32, 5, seed=1), SyntheticImages(10, 32, 5, seed=2)
    assert torch.equal(a[3][0], b[3][0]) and a[3][1] == b[3][1]
    assert not torch.equal(a[3][0], c[3][0])
    assert not torch.equal(a[3][0], a[4][0])


def _indices(world: int, rank: int, n: int, batch: int, epoch: int = 0) -> list[list[int]]:
    class Idx(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return i

    sl = sharded_loader(Idx(), batch, rank, world, seed=3)
    sl.sampler.set_epoch(epoch)
    return [b.tolist() for b in sl.loader]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_shards_partition_each_epoch(world: int):
    n, batch = 64, 4
    per_rank = [sum(_indices(world, r, n, batch), []) for r in range(world)]
    flat = sum(per_rank, [])
    assert len(flat) == len(set(flat)) == n  # no overlap, nothing missing (n divides evenly)
    assert sorted(flat) != flat  # shuffled


def test_global_batch_at_each_step_is_the_same_for_any_world_size():
    n, global_batch = 64, 8
    def global_batches(world: int) -> list[set[int]]:
        ranks = [_indices(world, r, n, global_batch // world) for r in range(world)]
        return [set(sum((ranks[r][k] for r in range(world)), [])) for k in range(len(ranks[0]))]
    assert global_batches(1) == global_batches(2) == global_batches(4)


def test_epochs_reshuffle():
    assert _indices(2, 0, 64, 4, epoch=0) != _indices(2, 0, 64, 4, epoch=1)


def make_image_folder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int) -> None:
    from PIL import Image

    for name, color in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40 + i, 30), color).save(root / name / f"img{i}.png")


def test_image_folder_reads_classes_and_pixels(tmp_path: Path):
    make_image_folder(tmp_path, {"cat": (255, 0, 0), "dog": (0, 0, 255)}, per_class=3)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    items, classes = find_images(tmp_path)
    assert classes == ["cat", "dog"] and len(items) == 6
    ds = ImageFolder(tmp_path, resolution=32, train=False)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0
    # red image -> channel 0 at its max after normalisation, blue channel at its min
    assert np.isclose(x[0].mean().item(), (1 - 0.485) / 0.229, atol=1e-3)
    assert np.isclose(x[2].mean().item(), (0 - 0.406) / 0.225, atol=1e-3)
    assert ds[5][1] == 1


def test_image_folder_through_the_sharded_loader(tmp_path: Path):
    make_image_folder(tmp_path, {"a": (10, 20, 30), "b": (200, 100, 0), "c": (0, 255, 0)}, per_class=4)
    ds = ImageFolder(tmp_path, resolution=32, train=True, seed=0)
    seen = []
    for rank in range(2):
        sl = sharded_loader(ds, 2, rank, 2, seed=0)
        for x, y in sl.loader:
            assert x.shape == (2, 3, 32, 32)
            seen += y.tolist()
    assert sorted(seen) == sorted([0] * 4 + [1] * 4 + [2] * 4)


def test_empty_image_folder_is_a_clear_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        ImageFolder(tmp_path, resolution=32, train=False)
