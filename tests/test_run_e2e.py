"""Real multi-process gloo runs through the CLI: results folder, recomputable numbers, failures."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from trainscale.scaling.results import schema
from .conftest import read_json

pytestmark = pytest.mark.slow

STEPS, WARMUP = 8, 3


def _run(cli, tmp_path: Path, tiny_resnet, *extra: str):
    proc = cli("run", "--nproc", "2", "--steps", str(STEPS), "--warmup", str(WARMUP), "--batch-size", "4",
               "--out", str(tmp_path), *tiny_resnet, *extra)
    run_dir = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    return proc, run_dir


def test_two_process_run_writes_the_results_folder(cli, tmp_path: Path, tiny_resnet):
    proc, run_dir = _run(cli, tmp_path, tiny_resnet)
    assert proc.returncode == 0, proc.stderr
    summary = read_json(run_dir / schema.SUMMARY)
    assert summary["status"] == "ok" and summary["world_size"] == 2
    config = read_json(run_dir / schema.CONFIG)
    assert config["nproc"] == 2 and config["model"]["width"] == 0.125

    # Per-rank samples: every step, warmup marked, from both ranks.
    for rank in (0, 1):
        with open(schema.samples_path(run_dir, rank)) as f:
            rows = [r for r in csv.DictReader(f) if r["phase"] in ("warmup", "measured")]  # no_sync rows follow
        assert [int(r["step"]) for r in rows] == list(range(STEPS))
        assert [r["phase"] for r in rows].count("warmup") == WARMUP
        assert all(float(r["step_s"]) >= float(r["compute_s"]) > 0 for r in rows)
    assert not list((run_dir / schema.SAMPLES_DIR).glob("*.partial"))

    # Independent recomputation of the headline numbers from the raw CSVs.
    per_rank = {}
    for rank in (0, 1):
        with open(schema.samples_path(run_dir, rank)) as f:
            m = [r for r in csv.DictReader(f) if r["phase"] == "measured"]
        start, end = float(m[0]["t_start"]), float(m[-1]["t_start"]) + float(m[-1]["step_s"])
        per_rank[rank] = (end - start, sum(int(r["samples"]) for r in m), [float(r["step_s"]) for r in m])
    window = max(w for w, _, _ in per_rank.values())
    throughput = sum(n for _, n, _ in per_rank.values()) / window
    metrics = summary["metrics"]
    assert metrics["throughput"]["global_samples_per_s"] == pytest.approx(throughput, rel=1e-6)
    global_steps = np.max([per_rank[0][2], per_rank[1][2]], axis=0)
    assert metrics["step_time_s"]["p99"] == pytest.approx(np.percentile(global_steps, 99), rel=1e-6)
    assert metrics["warmup_steps_discarded"] == WARMUP and metrics["measured_steps"] == STEPS - WARMUP

    # Provenance per docs/method.md and per-rank facts.
    prov = read_json(run_dir / schema.PROVENANCE)
    for key in ("versions", "git", "config", "seed", "backend", "world_size", "orchestrator_host", "gpu", "env",
                "time_utc", "hostnames", "ranks", "launch", "data"):
        assert key in prov, key
    assert prov["versions"]["torch"].startswith("2.13.0")
    assert prov["gpu"]["available"] is False and prov["gpu"]["reason"]
    assert prov["launch"]["threads_per_rank"] >= 1 and prov["launch"]["cores"] >= 1
    assert {r["rank"] for r in prov["ranks"]} == {0, 1}

    # MLPerf-format event log from rank 0.
    events = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in (run_dir / schema.EVENTS).read_text().splitlines()]
    keys = [e["key"] for e in events]
    for key in ("init_start", "init_stop", "run_start", "run_stop", "global_batch_size", "seed"):
        assert key in keys, key
    assert next(e for e in events if e["key"] == "global_batch_size")["value"] == 8
    assert next(e for e in events if e["key"] == "run_stop")["metadata"]["status"] == "success"


@pytest.mark.parametrize("kind, needle", [("exception", "InjectedFault: injected exception on rank 1 at step 4"),
                                          ("kill-rank", "killed by SIGKILL")])
def test_a_crashing_rank_is_recorded_as_failed_with_rank_and_reason(cli, tmp_path: Path, tiny_resnet, kind, needle):
    proc, run_dir = _run(cli, tmp_path, tiny_resnet, "--set", f"fault.kind={kind}", "--set", "fault.rank=1",
                         "--set", "fault.at_step=4")
    assert proc.returncode == 1
    summary = read_json(run_dir / schema.SUMMARY)
    assert summary["status"] == "failed"
    assert summary["reason"].startswith("rank 1 ") and needle in summary["reason"], summary["reason"]
    assert summary["failures"][0]["rank"] == 1
    # The dead rank's samples stay partial: never mistaken for a complete file.
    assert not schema.samples_path(run_dir, 1).exists()


def test_sweep_goes_on_after_a_failed_run_and_the_report_shows_it(cli, tmp_path: Path, tiny_resnet):
    # rank 1 exists only at world size 2: those runs fail, the 1-process runs after them still run.
    proc = cli("sweep", "--nproc", "1,2", "--repeats", "2", "--steps", "6", "--warmup", "2", "--batch-size", "4",
               "--out", str(tmp_path), *tiny_resnet, "--set", "fault.kind=exception", "--set", "fault.rank=1",
               "--set", "fault.at_step=3")
    assert proc.returncode == 0, proc.stderr
    sweep_dir = Path(proc.stdout.strip().splitlines()[-1])
    index = read_json(sweep_dir / schema.SWEEP_INDEX)
    assert [(r["name"], r["status"]) for r in index["runs"]] == [
        ("1x1-r0", "ok"), ("1x2-r0", "failed"), ("1x1-r1", "ok"), ("1x2-r1", "failed")]
    assert index["runs"][2]["seed"] == 1  # repeats use different seeds
    report = (sweep_dir / "report" / "report.md").read_text()
    assert "## Failed runs" in report and "InjectedFault" in report
    rows = read_json(sweep_dir / "report" / "report.json")["rows"]
    assert [(r["world_size"], r["runs_ok"], r["runs_failed"]) for r in rows] == [(1, 2, 0)]
    assert rows[0]["ci_basis"].startswith("Student-t 95% over 2 runs")


def test_sweep_report_and_plots(cli, tmp_path: Path, tiny_resnet):
    proc = cli("sweep", "--nproc", "1,2", "--scaling", "strong", "--batch-size", "4", "--steps", "7",
               "--warmup", "2", "--out", str(tmp_path), *tiny_resnet)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = Path(proc.stdout.strip().splitlines()[-1])
    index = read_json(sweep_dir / schema.SWEEP_INDEX)
    assert [r["global_batch"] for r in index["runs"]] == [4, 4]  # strong: fixed global batch
    assert [r["batch_size_per_rank"] for r in index["runs"]] == [4, 2]
    rep = read_json(sweep_dir / "report" / "report.json")
    assert rep["mode"] == "strong"
    r1, r2 = rep["rows"]
    assert r1["efficiency"] == pytest.approx(1.0)
    assert r2["efficiency"] == pytest.approx(r1["time_per_step_s"] / (2 * r2["time_per_step_s"]))
    for png in ("efficiency.png", "throughput.png", "breakdown.png", "per_rank_step_times.png"):
        assert (sweep_dir / "report" / png).stat().st_size > 5000
    # report on its own, from the folder alone
    again = cli("report", str(sweep_dir), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert read_json(tmp_path / "again" / "report.json")["rows"] == rep["rows"]


def test_the_cause_comes_first_even_when_a_survivor_is_stamped_a_second_earlier():
    """torchrun stamps failures in whole seconds: a survivor's "connection closed by peer" can carry an
    earlier second than the agent's record of the rank that was killed. The killed rank is the cause."""
    from trainscale.launchers.base import describe_failures, order_failures

    survivor = {"rank": 0, "local_rank": 0, "host": "vm", "timestamp": 100, "signal": None, "exitcode": 1,
                "message": "RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:32468."}
    killed = {"rank": 1, "local_rank": 1, "host": "vm", "timestamp": 101, "signal": "SIGKILL", "exitcode": -9,
              "message": ""}
    ordered = order_failures([survivor, killed])
    assert [f["rank"] for f in ordered] == [1, 0]
    assert describe_failures(ordered).startswith("rank 1 (local rank 1 on vm) killed by SIGKILL")
    # Two failures of their own: the earlier one is the cause.
    other = {**killed, "rank": 2, "timestamp": 99}
    assert [f["rank"] for f in order_failures([survivor, killed, other])] == [2, 1, 0]
