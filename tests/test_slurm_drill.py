"""A drill recovered by Slurm's requeue on a real local Slurm (tools/slurm-up.sh): the sbatch job's
first attempt loses a rank (SIGKILL), requeues itself, the second attempt (SLURM_RESTART_COUNT 1)
restores the newest checkpoint of the job and finishes, and the final model and optimizer state equal,
bit for bit, those of an uninterrupted run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainscale.scaling.results import schema
from trainscale.analysis.eventlog import all_of, read_events

from .conftest import read_json
from . import test_drill
from .test_drill import CONTRACT, RUN, STEPS, _assert_bitwise_equal, _check_recovered, _has_optimizer_state, _state
from .test_slurm_cluster import local_slurm

reference = test_drill.reference  # the uninterrupted run's final state (a module-scoped fixture)
CRED_EXPIRE_S = 10  # how long a requeued job waits before it may start again (Slurm's default: 120 s)


@pytest.fixture(scope="module")
def slurm():
    """A one-node local Slurm with a short credential lifetime."""
    with local_slurm(Path(f"/tmp/trainscale-slurm-drill-{os.getpid()}"), "--nodes", "1",
                     "--cred-expire", str(CRED_EXPIRE_S)) as env:
        yield env


def _scontrol_show(job: str, env: dict) -> str:
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env,
                          timeout=30).stdout


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Slurm daemons)")
def test_kill_rank_recovered_by_slurm_requeue_with_nothing_lost(slurm, tmp_path: Path, reference):
    results = tmp_path / "results"
    drill = ["trainscale", "drill", "--launcher", "slurm", *RUN, "--out", str(results), "--parallel", "ddp",
             "--fault", "kill-rank", "--at-step", "7", "--ckpt-every", "4", "--rank", "1"]
    script = tmp_path / "drill.sh"
    script.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --job-name=drill", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=2", "#SBATCH --time=00:10:00", "#SBATCH --requeue", "#SBATCH --open-mode=append",
        "#SBATCH --output=%x-%j.out", " ".join(drill), ""]))
    env = {**os.environ, **slurm}
    sub = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    job = sub.stdout.strip().split(";")[0]
    assert job.isdigit(), sub.stderr
    job_folder = results / f"job{job}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            show = _scontrol_show(job, env)
            if "JobState=COMPLETED" in show or "JobState=FAILED" in show or not show:
                break
            time.sleep(1)
        log = "".join(p.read_text() for p in tmp_path.glob("*.out"))
        assert "JobState=COMPLETED" in show and "Restarts=1" in show, show + log[-4000:]
    finally:
        subprocess.run(["scancel", job], env=env, timeout=30)
    assert sorted(p.name for p in results.iterdir()) == [f"job{job}", f"job{job}-0", f"job{job}-1"]
    first, second = read_json(results / f"job{job}-0" / schema.SUMMARY), read_json(results / f"job{job}-1" / schema.SUMMARY)
    assert first["status"] == "failed" and second["status"] == "ok"
    # The second attempt is Slurm's restart 1, seen by its ranks, and it never fired the fault again.
    attempts = all_of(read_events(results / f"job{job}-1" / schema.EVENTS), schema.EVENT_ATTEMPT)
    assert [a["metadata"]["slurm_restart_count"] for a in attempts] == [1]
    assert all_of(read_events(results / f"job{job}-1" / schema.EVENTS), schema.EVENT_FAULT) == []
    assert read_json(results / f"job{job}-1" / schema.PROVENANCE)["env"]["SLURM_RESTART_COUNT"] == "1"

    summary = read_json(job_folder / schema.SUMMARY)
    for section, keys in CONTRACT.items():
        assert keys <= summary[section].keys(), (section, summary[section])
    assert summary["drill"]["engine"].startswith("Slurm requeue") and summary["drill"]["slurm_job_id"] == job
    assert [a["slurm_restart_count"] for a in summary["attempts"]] == [0, 1]
    r = _check_recovered(summary, "kill-rank", 7, 4)
    # Through the requeue: torchrun's exit, the requeued job's wait (cred_expire), the new job's start.
    assert r["restart_s"] >= CRED_EXPIRE_S * 0.9, r
    q = r["slurm_requeue"]
    assert q["requeue_to_start_s"] >= CRED_EXPIRE_S * 0.9 and q["to_requeue_s"] > 0 and q["start_to_main_s"] > 0, q
    assert q["to_requeue_s"] + q["requeue_to_start_s"] + q["start_to_main_s"] == pytest.approx(r["restart_s"]), q
    assert "restart through Slurm requeue" in (job_folder / "drill_report.md").read_text()
    assert (job_folder / "drill_report.md").is_file() and (job_folder / "timeline.png").stat().st_size > 0

    ref = reference("ddp")
    got, want = _state(job_folder, STEPS, tmp_path), _state(ref, STEPS, tmp_path)
    assert _has_optimizer_state(want)
    _assert_bitwise_equal(got, want)


def test_slurm_drill_outside_a_job_is_one_line_exit_2(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "-m", "trainscale.scaling", "drill", "--launcher", "slurm", *RUN,
                           "--out", str(tmp_path), "--fault", "kill-rank"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and "SLURM_JOB_ID" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_attempts_merge_into_one_run_folder_in_attempt_order(tmp_path: Path):
    """Hand-made attempt folders: the merged job folder has the layout of a run torchrun restarted."""
    from trainscale.scaling.results.files import write_json_atomic
    from trainscale.faults.slurm_requeue import attempt_dirs, merge_attempts

    out = tmp_path / "results"
    for n, (status, sample) in enumerate([("failed", "rank00000.csv.partial"), ("ok", "rank00000.csv")]):
        a = out / f"job42-{n}"
        (a / "samples").mkdir(parents=True)
        (a / "samples" / sample).write_text(f"step\n{n}\n")
        (a / "events.log").write_text(f"event of attempt {n}\n")
        (a / "agent_events.jsonl").write_text(f'{{"attempt": {n}}}\n')
        write_json_atomic(a / "summary.json", {"status": status, "reason": None if n else "killed"})
    (out / "job42-9-not-an-attempt").mkdir()
    (out / "job7-0").mkdir()  # another job's attempt
    attempts = attempt_dirs(out, "42")
    assert [a.name for a in attempts] == ["job42-0", "job42-1"]
    merge_attempts(attempts, out / "job42")
    job = out / "job42"
    assert (job / "events.log").read_text() == "event of attempt 0\nevent of attempt 1\n"
    assert (job / "agent_events.jsonl").read_text() == '{"attempt": 0}\n{"attempt": 1}\n'
    assert (job / "samples" / "attempts" / "rank00000-attempt0.csv").read_text() == "step\n0\n"
    assert (job / "samples" / "rank00000.csv").read_text() == "step\n1\n"
    summary = read_json(job / "summary.json")
    assert summary["status"] == "ok" and summary["run_id"] == "job42"
    assert [(a["slurm_restart_count"], a["status"]) for a in summary["attempts"]] == [(0, "failed"), (1, "ok")]
