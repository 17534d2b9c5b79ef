"""Run metrics from hand-made samples files: the arithmetic of analysis.runs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trainscale.analysis import schema
from trainscale.analysis.runs import load_rank_samples, run_metrics


def write_rank(run_dir: Path, rank: int, step_times: list[float], warmup: int, batch: int) -> None:
    path = schema.samples_path(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = 0.0
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=schema.SAMPLE_COLUMNS)
        w.writeheader()
        for i, s in enumerate(step_times):
            w.writerow({"step": i, "phase": "warmup" if i < warmup else "measured", "t_start": t, "data_s": 0.01,
                        "compute_s": s - 0.03, "optimizer_s": 0.02, "step_s": s, "samples": batch, "loss": 1.0})
            t += s


def test_metrics_by_hand(tmp_path: Path):
    write_rank(tmp_path, 0, [5.0, 1.0, 1.0, 1.0, 1.0], warmup=1, batch=8)
    write_rank(tmp_path, 1, [5.0, 1.0, 2.0, 1.0, 1.0], warmup=1, batch=8)
    m = run_metrics(load_rank_samples(tmp_path))
    assert m["warmup_steps_discarded"] == 1 and m["measured_steps"] == 4
    assert m["window_s"] == pytest.approx(5.0)  # rank 1: 1 + 2 + 1 + 1
    assert m["throughput"]["global_samples_per_s"] == pytest.approx(4 * 16 / 5.0)
    assert m["time_per_step_s"] == pytest.approx(1.25)
    assert m["step_time_s"]["max"] == pytest.approx(2.0)  # global step = slowest rank
    assert m["slowest_rank"] == 1
    lo, hi = m["throughput"]["ci_low"], m["throughput"]["ci_high"]
    assert lo < m["throughput"]["global_samples_per_s"] < hi
    assert m["breakdown_s"]["data_s"] == pytest.approx(0.01)


def test_ranks_disagreeing_on_steps_is_an_error(tmp_path: Path):
    write_rank(tmp_path, 0, [1.0, 1.0, 1.0], warmup=1, batch=4)
    write_rank(tmp_path, 1, [1.0, 1.0], warmup=1, batch=4)
    with pytest.raises(ValueError, match="disagree"):
        run_metrics(load_rank_samples(tmp_path))
