"""The digits workload (real data, fixed split, lazy first touch), the evaluation sharding, and how a
run becomes a time-to-accuracy run (targets, defaults, validation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainscale.scaling.resolve import resolve
from trainscale.scaling.spec import SpecError
from trainscale.workloads.data import EvalShard
from trainscale.workloads.digits import (DIGITS_CSV, DigitsCNN, DigitsSource, DigitsSplit, load_arrays,
                                         split_indices)

from .test_data import make_image_folder


def test_the_data_is_sklearns_load_digits():
    from sklearn.datasets import load_digits

    x, y = load_arrays(DIGITS_CSV)
    sx, sy = load_digits(return_X_y=True)
    assert np.array_equal(x, sx) and np.array_equal(y, sy)
    assert x.shape == (1797, 64)


def test_split_is_fixed_stratified_and_disjoint():
    _, y = load_arrays(DIGITS_CSV)
    train, val = split_indices(y, 0.2, seed=0)
    again_train, again_val = split_indices(y, 0.2, seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not set(train) & set(val) and len(train) + len(val) == len(y)
    assert len(val) == sum(round(0.2 * c) for c in np.bincount(y))  # 20% of every class
    assert np.array_equal(np.bincount(y[val]), [round(0.2 * c) for c in np.bincount(y)])
    other_train, _ = split_indices(y, 0.2, seed=1)
    assert not np.array_equal(train, other_train)


def test_data_is_read_on_first_touch_not_at_build():
    source = DigitsSource(DIGITS_CSV, 0.2, 0)
    train, val = DigitsSplit(source, train=True), DigitsSplit(source, train=False)
    assert source._splits is None  # building the data sets touched nothing
    x, label = train[0]
    assert x.shape == (1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1 and 0 <= label < 10
    assert len(train) + len(val) == 1797


def test_model_shape():
    logits = DigitsCNN(channels=8, hidden=16)(torch.zeros(5, 1, 8, 8))
    assert logits.shape == (5, 10)


@pytest.mark.parametrize("n", [1, 7, 10, 359])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_eval_shards_cover_every_sample_once_with_equal_lengths(n: int, world: int):
    if n < world:
        with pytest.raises(ValueError, match="fewer than"):
            EvalShard(list(zip(range(n), range(n))), 0, world)
        return
    data = [(i, i) for i in range(n)]
    shards = [EvalShard(data, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of batches
    counted = [x for s in shards for i in range(len(s)) for (x, _, valid) in [s[i]] if valid]
    assert sorted(counted) == list(range(n))  # each sample counted exactly once, padding excluded


def test_digits_runs_are_tta_runs_by_default():
    spec = resolve(flags={"workload": "digits"})
    assert spec.is_tta and spec.target_accuracy == 0.97
    assert spec.data.kind == "real" and Path(spec.data.path).is_file()
    assert spec.optim.name == "adamw" and spec.eval.max_epochs == 30 and spec.threads_per_rank == 1
    # 'none' (as the CLI passes it) overrides the workload's default target: a throughput run
    assert not resolve(flags={"workload": "digits", "target_accuracy": "none"}).is_tta
    assert resolve(flags={"workload": "digits"}, sets=["target_accuracy=0.9"]).target_accuracy == 0.9
    # steps/warmup do not apply to TTA runs, so they are not checked against each other
    assert resolve(flags={"workload": "digits", "steps": 3, "warmup": 10}).warmup == 10


def test_resnet50_target_is_0759_on_real_data_and_none_on_synthetic(tmp_path: Path):
    assert not resolve().is_tta  # synthetic: throughput
    make_image_folder(tmp_path / "train", {"a": (255, 0, 0), "b": (0, 0, 255)}, per_class=2)
    make_image_folder(tmp_path / "val", {"a": (255, 0, 0), "b": (0, 0, 255)}, per_class=1)
    spec = resolve(sets=["data.kind=real", f"data.path={tmp_path}"])
    assert spec.target_accuracy == 0.759
    assert not resolve(flags={"target_accuracy": "none"}, sets=["data.kind=real", f"data.path={tmp_path}"]).is_tta


@pytest.mark.parametrize("kwargs, needle", [
    ({"flags": {"workload": "digits", "target_accuracy": 0.9}, "sets": ["data.kind=synthetic"]},
     "target_accuracy needs real data"),
    ({"flags": {"workload": "digits"}, "sets": ["data.kind=synthetic"]}, "digits reads real data only"),
    ({"sets": ["target_accuracy=0.5"]}, "target_accuracy needs real data"),
    ({"flags": {"workload": "digits"}, "sets": ["eval.max_epochs=0"]}, "eval.max_epochs must be at least 1, got 0"),
    ({"flags": {"workload": "digits"}, "sets": ["eval.every_epochs=0"]}, "eval.every_epochs must be at least 1"),
    ({"flags": {"workload": "digits", "target_accuracy": 1.5}}, "target_accuracy must be in (0, 1], got 1.5"),
    ({"flags": {"workload": "digits"}, "sets": ["fault.kind=slow", "fault.slow_factor=0.5"]},
     "fault.slow_factor must be at least 1, got 0.5"),
    ({"flags": {"workload": "digits"}, "sets": ["model.val_fraction=1"]}, "model.val_fraction must be in (0, 1)"),
])
def test_bad_tta_settings_name_the_value(kwargs, needle):
    with pytest.raises(SpecError) as e:
        resolve(**kwargs)
    assert needle in str(e.value)


def test_resnet50_real_tta_needs_a_val_folder(tmp_path: Path):
    make_image_folder(tmp_path / "train", {"a": (255, 0, 0)}, per_class=2)
    with pytest.raises(SpecError, match="needs a validation set"):
        resolve(sets=["data.kind=real", f"data.path={tmp_path}"])


def test_val_folder_uses_the_training_class_indices(tmp_path: Path):
    from trainscale.workloads.data import ImageFolder

    make_image_folder(tmp_path / "train", {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}, per_class=1)
    make_image_folder(tmp_path / "val", {"c": (0, 0, 255)}, per_class=1)  # a class subset
    train = ImageFolder(tmp_path / "train", 32, train=True)
    val = ImageFolder(tmp_path / "val", 32, train=False, classes=train.classes)
    assert val[0][1] == 2


def test_cli_target_accuracy_must_be_a_number_or_none(cli, tmp_path: Path):
    proc = cli("run", "--workload", "digits", "--target-accuracy", "high", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "must be a number or 'none', got 'high'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
