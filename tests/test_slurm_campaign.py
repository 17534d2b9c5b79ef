"""A scaling campaign in one sbatch job on a real local Slurm with four nodes (tools/slurm-up.sh):
the committed CPU campaign script runs every point as an srun step on the first N nodes and ends
with one sweep folder and its report; requeued in the middle (scontrol requeue, then Slurm's USR2
warning before the time limit), it resumes by itself and still runs every point exactly once; a
point whose worker is killed is recorded as failed and the campaign goes on."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from trainscale.launchers.ownership import mentioning
from trainscale.scaling.results import schema
from .conftest import read_json
from .test_slurm_cluster import _wait_for, local_slurm

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Slurm daemons)")]

REPO = Path(__file__).resolve().parent.parent
CAMPAIGN = REPO / "slurm" / "resnet50_cpu_campaign.sh"


@pytest.fixture(scope="module")
def slurm():
    # A short credential lifetime: a requeued job may start again that many seconds after it ended.
    with local_slurm(Path(f"/tmp/trainscale-slurm-campaign-{os.getpid()}"), "--nodes", "4",
                     "--cred-expire", "10") as env:
        yield env


def _submit(slurm: dict, script: Path, results: Path, cwd: Path) -> str:
    env = {**os.environ, **slurm, "RESULTS_DIR": str(results)}
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env, cwd=cwd,
                         timeout=60)
    job = out.stdout.strip().split(";")[0]
    assert job.isdigit(), out.stderr
    return job


def _job_field(slurm: dict, job: str, field: str) -> str:
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                          env={**os.environ, **slurm}, timeout=30).stdout
    return next((w.split("=", 1)[1] for w in show.split() if w.startswith(f"{field}=")), "")


def _wait_job_end(slurm: dict, job: str, timeout: float) -> str:
    return _wait_for(lambda: (s := _job_field(slurm, job, "JobState")) in ("COMPLETED", "FAILED", "CANCELLED",
                                                                           "TIMEOUT") and s, timeout, f"job {job} to end")


def _processes_mentioning(folder: Path) -> list[int]:
    return sorted(pid for pid, _ in mentioning(folder))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _log(cwd: Path) -> str:
    return "".join(p.read_text() for p in cwd.glob("*.out"))[-4000:]


def _check_curve(sweep_dir: Path, job: str) -> None:
    """One job ran the whole curve: each point on the allocation's first N nodes, one rank on each,
    and the report over 1, 2 and 4 nodes."""
    for nodes in (1, 2, 4):
        run_dir = sweep_dir / "runs" / f"{nodes}x1-r0"
        summary = read_json(run_dir / schema.SUMMARY)
        assert (summary["status"], summary["launcher"], summary["nodes"], summary["world_size"]) == \
            ("ok", "slurm", nodes, nodes)
        want = [f"node{i}" for i in range(1, nodes + 1)]  # each point on the allocation's first N nodes
        assert summary["launch"]["slurm_nodes"] == want and summary["launch"]["slurm_job_id"] == job
        prov = read_json(run_dir / schema.PROVENANCE)
        assert sorted(r["node_name"] for r in prov["ranks"]) == want  # one rank on each of them
        assert sorted(p.name for p in (run_dir / "logs").glob("agent-node*.log")) == \
            [f"agent-node{i}.log" for i in range(nodes)]
    report = read_json(sweep_dir / "report" / "report.json")
    rows = [(r["world_size"], r["nodes"], r["runs_ok"]) for r in report["rows"]]
    assert rows == [(1, 1, 1), (2, 2, 1), (4, 4, 1)]
    assert report["rows"][0]["efficiency"] == pytest.approx(1.0)
    assert all(0 < r["efficiency"] for r in report["rows"])
    assert (sweep_dir / "report" / "efficiency.png").stat().st_size > 0


def test_a_requeued_campaign_resumes_and_runs_every_point_once(slurm, tmp_path: Path):
    """Attempt 0 is requeued by scontrol during the 2-node point; attempt 1 gets Slurm's USR2 warning
    (sent to the batch shell, as --signal=B:USR2@120 does) during the 4-node point and requeues
    itself; attempt 2 finishes. The finished points are never rerun, byte for byte, and the job's curve
    is whole: every point on its nodes, the report over 1, 2 and 4 nodes."""
    results = tmp_path / "results"
    env = {**os.environ, **slurm}
    job = _submit(slurm, CAMPAIGN, results, tmp_path)
    runs = results / f"campaign-job{job}" / "runs"
    try:
        _wait_for(lambda: (runs / "2x1-r0" / schema.PROGRESS).exists(), 300, "the 2-node point to train")
        first = _digest(runs / "1x1-r0")
        subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=30)
        _wait_for(lambda: _job_field(slurm, job, "Restarts") == "1" and _job_field(slurm, job, "JobState") == "RUNNING",
                  120, "attempt 1 to start")
        _wait_for(lambda: (runs / "4x1-r0" / schema.PROGRESS).exists(), 300, "the 4-node point to train")
        second = _digest(runs / "2x1-r0")
        subprocess.run(["scancel", "--batch", "--signal=USR2", job], env=env, check=True, timeout=30)
        _wait_for(lambda: _job_field(slurm, job, "Restarts") == "2", 120, "the job to requeue itself")
        state = _wait_job_end(slurm, job, 400)
    finally:
        subprocess.run(["scancel", job], env=env, timeout=30)
    assert state == "COMPLETED", _log(tmp_path)

    sweep_dir = results / f"campaign-job{job}"
    index = read_json(sweep_dir / schema.SWEEP_INDEX)
    assert index["status"] == "done"
    assert [(r["name"], r["status"]) for r in index["runs"]] == [("1x1-r0", "ok"), ("2x1-r0", "ok"), ("4x1-r0", "ok")]
    assert [(r["kept"], r["run"]) for r in index["resumes"]] == [(["1x1-r0"], ["2x1-r0", "4x1-r0"]),
                                                                 (["1x1-r0", "2x1-r0"], ["4x1-r0"])]
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["1x1-r0", "2x1-r0", "4x1-r0"]
    assert _digest(runs / "1x1-r0") == first and _digest(runs / "2x1-r0") == second
    partial = {p.name: read_json(p / schema.SUMMARY) for p in (runs / schema.PARTIAL_DIR).iterdir()}
    assert sorted(partial) == ["2x1-r0-1", "4x1-r0-1"]
    assert partial["2x1-r0-1"]["status"] == "stopped" and partial["2x1-r0-1"]["launch"]["stopped_by"] == "SIGTERM"
    assert partial["4x1-r0-1"]["status"] == "stopped" and partial["4x1-r0-1"]["launch"]["stopped_by"] == "SIGUSR2"
    assert "the job is requeued" in partial["4x1-r0-1"]["reason"]
    _check_curve(sweep_dir, job)  # and the curve is the one an uninterrupted job makes
    assert _processes_mentioning(results) == []


def _process_on(node: str, run_dir: Path, agent: bool) -> int | None:
    """The pid of the training worker (or, with agent, the torchrun agent) that Slurm node `node` runs
    for run_dir."""
    for pid in _processes_mentioning(run_dir):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        role = b"trainscale.launchers.agent" if agent else b"trainscale.scaling.runtime.worker"
        if role in cmd and (agent or b"trainscale.launchers.agent" not in cmd) and \
                f"SLURMD_NODENAME={node}".encode() in env:
            return pid
    return None


def _record(run_dir: Path) -> dict:
    return _wait_for(lambda: (s := read_json(run_dir / schema.SUMMARY))["status"] != "started" and s, 120,
                     f"the record of {run_dir.name}")


def test_failed_points_are_recorded_and_the_campaign_goes_on(slurm, cli, tmp_path: Path):
    """On 2 nodes a worker is killed on node2; on 3 nodes the agent of node3 itself (a node lost): both
    points are recorded as failed, naming the node, and the campaign goes on to 4 nodes."""
    script = tmp_path / "campaign.sh"
    render = cli("slurm", "render", "--workload", "resnet50", "--sweep-nodes", "2,3,4", "--gpus-per-node", "0",
                 "--nproc-per-node", "1", "--cpus-per-task", "1", "--time", "00:20:00", "--steps", "100000",
                 "--warmup", "2", "--batch-size", "2", "--set", "model.width=0.125", "--set", "model.resolution=32",
                 "--set", "model.num_classes=10", "--output", str(script))
    assert render.returncode == 0, render.stderr
    results = tmp_path / "results"
    job = _submit(slurm, script, results, tmp_path)
    runs = results / f"campaign-job{job}" / "runs"
    env = {**os.environ, **slurm}
    try:
        for point, node, agent in (("2x1-r0", "node2", False), ("3x1-r0", "node3", True)):
            _wait_for(lambda: (runs / point / schema.PROGRESS).exists(), 300, f"{point} to train")
            os.kill(_wait_for(lambda: _process_on(node, runs / point, agent), 60, f"{node}'s process"), signal.SIGKILL)
            _record(runs / point)
        # The campaign goes on to 4 nodes; its 100000 steps are not waited for.
        _wait_for(lambda: (runs / "4x1-r0" / schema.PROGRESS).exists(), 300, "the 4-node point to train")
    finally:
        subprocess.run(["scancel", job], env=env, timeout=30)
    worker_lost, agent_lost = read_json(runs / "2x1-r0" / schema.SUMMARY), read_json(runs / "3x1-r0" / schema.SUMMARY)
    assert worker_lost["status"] == agent_lost["status"] == "failed"
    # (c10d numbers the ranks in the order the nodes joined: node2's may be rank 0 or 1)
    assert re.match(r"rank [01] \(local rank 0 on \S+ as node2\) killed by SIGKILL", worker_lost["reason"]), \
        worker_lost["reason"]
    assert worker_lost["failures"][0]["node"] == "node2"
    assert agent_lost["reason"].startswith("the agent on node3 (node rank 2) ended first: Killed"), agent_lost["reason"]
    index = read_json(results / f"campaign-job{job}" / schema.SWEEP_INDEX)
    assert [(r["name"], r["status"]) for r in index["runs"][:2]] == [("2x1-r0", "failed"), ("3x1-r0", "failed")]
    _wait_job_end(slurm, job, 120)
    _wait_for(lambda: _processes_mentioning(results) == [], 60, "every process of the job to end")
