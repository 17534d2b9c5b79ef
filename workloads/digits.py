"""digits: a small CNN on the handwritten digits that ship with scikit-learn (1,797 8x8 images, 10
classes; no download). Real data and a real quality target on a CPU in seconds: the time-to-accuracy
workload for laptops and tests.

The train/validation split is fixed (stratified, ``model.split_seed``, not the run seed), as MLPerf
fixes its validation set: repeats with different seeds are measured against the same 20%. The file is
read on first use (the data loader's first touch), which in a time-to-accuracy run is after run_start.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from trainscale.workloads.data import DataConfig
from trainscale.workloads.base import Built, Workload



def bundled_digits_csv() -> Path:
    """The file sklearn.datasets.load_digits reads (64 pixel columns 0..16, then the label), found
    without importing scikit-learn (seconds of import on every rank)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scikit-learn is not installed: the digits workload reads its bundled data set")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


DIGITS_CSV = bundled_digits_csv()
DIGITS_TARGET = 0.97  # top-1 validation accuracy; a converging recipe reaches it in a few epochs
NUM_CLASSES = 10
PIXEL_MAX = 16.0


@dataclass
class DigitsConfig:
    channels: int = 16  # first conv layer; the second has twice as many
    hidden: int = 64  # units of the hidden fully connected layer
    val_fraction: float = 0.2  # share of the data held out for validation
    split_seed: int = 0  # seed of the fixed train/validation split


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 64 in [0, 16], labels N), exactly as sklearn.datasets.load_digits returns them."""
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1], data[:, -1].astype(np.int64)


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split of the indices, fixed by seed: each class gives
    round(val_fraction x its count) randomly chosen samples to validation."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        val.append(members[:int(round(val_fraction * members.size))])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(labels.size), val_idx), val_idx


class DigitsSource:
    """Reads and splits the file once, on first use, for both data sets of a run."""

    def __init__(self, path: Path, val_fraction: float, split_seed: int) -> None:
        self.path, self.val_fraction, self.split_seed = path, val_fraction, split_seed
        self._lock = threading.Lock()
        self._splits: dict[bool, tuple[torch.Tensor, torch.Tensor]] | None = None

    def split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            if self._splits is None:
                images, labels = load_arrays(self.path)
                x = torch.tensor(images, dtype=torch.float32).div_(PIXEL_MAX).view(-1, 1, 8, 8)
                y = torch.tensor(labels)
                tr, va = split_indices(labels, self.val_fraction, self.split_seed)
                self._splits = {True: (x[tr], y[tr]), False: (x[va], y[va])}
            return self._splits[train]


class DigitsSplit(Dataset):
    def __init__(self, source: DigitsSource, train: bool) -> None:
        self.source, self.train = source, train

    def __len__(self) -> int:
        return len(self.source.split(self.train)[1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.source.split(self.train)
        return x[index], int(y[index])


class DigitsCNN(nn.Module):
    def __init__(self, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 16, hidden), nn.ReLU(),
                                        nn.Linear(hidden, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsWorkload(Workload):
    name = "digits"
    summary = "small CNN on scikit-learn's 8x8 digits (real data and an accuracy target on a CPU in seconds)"
    config_cls = DigitsConfig
    spec_defaults: dict = {
        "batch_size": 32,
        "warmup": 5,
        # one thread per rank: intra-op threads only add synchronisation to a model this small
        "threads_per_rank": 1,
        "optim": {"name": "adamw", "lr": 0.01},
        "data": {"kind": "real", "path": str(DIGITS_CSV)},
        "eval": {"max_epochs": 30},
    }

    def default_target(self, data_kind: str) -> float | None:
        return DIGITS_TARGET if data_kind == "real" else None

    def validate_model(self, cfg: DigitsConfig) -> None:
        if cfg.channels < 1:
            raise ValueError(f"model.channels must be at least 1, got {cfg.channels}")
        if cfg.hidden < 1:
            raise ValueError(f"model.hidden must be at least 1, got {cfg.hidden}")
        if not 0 < cfg.val_fraction < 1:
            raise ValueError(f"model.val_fraction must be in (0, 1), got {cfg.val_fraction}")

    def validate_run(self, spec) -> None:
        if spec.data.kind != "real":
            raise ValueError(f"digits reads real data only (scikit-learn's digits file), got data.kind {spec.data.kind!r}")
        if not Path(spec.data.path).is_file():
            raise ValueError(f"digits: data.path must be the digits CSV file, got {spec.data.path!r}")

    def build(self, cfg: DigitsConfig, data: DataConfig, seed: int, min_train_samples: int) -> Built:
        source = DigitsSource(Path(data.path), cfg.val_fraction, cfg.split_seed)
        return Built(model=DigitsCNN(cfg.channels, cfg.hidden), loss_fn=nn.CrossEntropyLoss(),
                     train_set=DigitsSplit(source, train=True), eval_set=DigitsSplit(source, train=False),
                     sample_unit="images")
