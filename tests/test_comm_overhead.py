"""All-reduce overhead inside real 2-process gloo DDP runs: per-step time in gradient collectives,
compute-only (no_sync) steps outside the measured window, and an exposed-communication figure that
grows when communication is made slower (an emulated delay on every gradient collective)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trainscale.scaling.results import schema
from .conftest import read_json

pytestmark = pytest.mark.slow

DELAY_MS = 150.0
STEPS, WARMUP, NO_SYNC = 8, 2, 3


def _common(tiny_resnet) -> list[str]:
    return ["--steps", str(STEPS), "--warmup", str(WARMUP), "--batch-size", "4",
            "--set", f"comm.no_sync_steps={NO_SYNC}", *tiny_resnet]


def test_exposed_comm_grows_when_comm_is_slower_and_the_sweep_report_shows_it(cli, tmp_path: Path, tiny_resnet):
    proc = cli("sweep", "--nproc", "1,2", "--out", str(tmp_path / "sweep"), *_common(tiny_resnet))
    assert proc.returncode == 0, proc.stderr
    sweep_dir = Path(proc.stdout.strip().splitlines()[-1])
    run2 = sweep_dir / schema.SWEEP_RUNS_DIR / "1x2-r0"

    # Samples: the no_sync block follows the measured window, skips the gradient collectives, and is
    # not part of the measured steps.
    for rank in (0, 1):
        with open(schema.samples_path(run2, rank), newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["phase"] for r in rows] == (["warmup"] * WARMUP + ["measured"] * (STEPS - WARMUP)
                                              + ["no_sync_warmup"] + ["no_sync"] * NO_SYNC)
        assert [int(r["step"]) for r in rows] == list(range(STEPS + 1 + NO_SYNC))
        assert all(int(r["comm_ops"]) >= 1 and float(r["comm_s"]) > 0 for r in rows if r["phase"] == "measured")
        assert all(int(r["comm_ops"]) == 0 and float(r["comm_s"]) == 0 for r in rows if r["phase"] == "no_sync")
    fast = read_json(run2 / schema.SUMMARY)["metrics"]
    assert fast["measured_steps"] == STEPS - WARMUP
    comm = fast["comm"]
    assert comm["no_sync_steps"] == NO_SYNC and comm["comm_ops_per_step"] >= 1
    assert comm["exposed_comm_s"] == pytest.approx(comm["compute_s"] - comm["compute_only_s"])
    assert comm["slowest_rank"] in (0, 1) and set(comm["per_rank"]) == {"0", "1"}

    # The sweep report puts the overhead next to scaling efficiency, per world size, and names the slowest rank.
    rows = read_json(sweep_dir / "report" / "report.json")["rows"]
    assert [r["world_size"] for r in rows if r["comm"]] == [1, 2]
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "## Communication inside training (all-reduce overhead)" in md
    assert f"| 2 | {comm['slowest_rank']} (slowest) |" in md
    assert (sweep_dir / "report" / "comm_overhead.png").stat().st_size > 5000

    # The same run with every gradient collective completing DELAY_MS later.
    slow_proc = cli("run", "--nproc", "2", "--set", f"comm.delay_ms={DELAY_MS:g}", "--out", str(tmp_path / "slow"),
                    *_common(tiny_resnet))
    assert slow_proc.returncode == 0, slow_proc.stderr
    slow_dir = Path(slow_proc.stdout.strip().splitlines()[-1])
    slow = read_json(slow_dir / schema.SUMMARY)["metrics"]["comm"]
    margin = 0.5 * DELAY_MS / 1e3  # the last bucket's delay cannot hide behind compute: expect ~DELAY_MS
    assert slow["exposed_comm_s"] - comm["exposed_comm_s"] > margin, (slow, comm)
    assert slow["comm_s"] - comm["comm_s"] > margin, (slow, comm)
    report = cli("report", str(slow_dir), timeout=120)
    assert report.returncode == 0 and "emulated communication delay" in (slow_dir / "report" / "report.md").read_text()
