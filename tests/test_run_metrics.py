"""Run metrics from hand-made samples files: the arithmetic of analysis.runs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trainscale.scaling.results import schema
from trainscale.analysis.runs import load_rank_samples, run_metrics


def write_rank(run_dir: Path, rank: int, step_times: list[float], warmup: int, batch: int,
               gaps: list[float] | None = None) -> None:
    path = schema.samples_path(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = 0.0
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=schema.SAMPLE_COLUMNS)
        w.writeheader()
        for i, s in enumerate(step_times):
            w.writerow({"step": i, "phase": "warmup" if i < warmup else "measured", "t_start": t, "data_s": 0.01,
                        "compute_s": s - 0.03, "optimizer_s": 0.02, "step_s": s, "samples": batch, "loss": 1.0})
            t += s + (gaps[i] if gaps else 0.0)


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


def test_gaps_between_steps_count_and_the_ci_contains_the_throughput(tmp_path: Path):
    # A loader restart between steps (a new epoch in a time-to-accuracy run) is wall time the run
    # spent: it lowers throughput, and the CI must still be around that same estimate.
    steps = [1.0, 1.0, 1.1, 0.9, 1.0, 1.0]
    gaps = [0.0, 0.0, 3.0, 0.0, 0.0, 0.0]
    write_rank(tmp_path, 0, steps, warmup=1, batch=8, gaps=gaps)
    m = run_metrics(load_rank_samples(tmp_path))
    assert m["window_s"] == pytest.approx(5.0 + 3.0)
    x = m["throughput"]["global_samples_per_s"]
    assert x == pytest.approx(5 * 8 / 8.0)
    assert m["throughput"]["ci_low"] <= x <= m["throughput"]["ci_high"]


def test_ranks_disagreeing_on_steps_is_an_error(tmp_path: Path):
    write_rank(tmp_path, 0, [1.0, 1.0, 1.0], warmup=1, batch=4)
    write_rank(tmp_path, 1, [1.0, 1.0], warmup=1, batch=4)
    with pytest.raises(ValueError, match="disagree"):
        run_metrics(load_rank_samples(tmp_path))
