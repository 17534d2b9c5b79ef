"""A real Slurm on this machine (tools/slurm-up.sh: munged, slurmctld and two slurmd node names):
the committed CPU smoke script is submitted as it is, runs one torchrun agent per Slurm node, and
its results are reported. The daemons are stopped (by PID) even when a test fails."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from trainscale.scaling.results import schema
from .conftest import read_json, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (Slurm daemons)")]

REPO = Path(__file__).resolve().parent.parent


def _daemons_using(folder: Path) -> list[int]:
    needle = f"{folder}/".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@contextmanager
def local_slurm(folder: Path, *up_args: str) -> Iterator[dict[str, str]]:
    """A real local Slurm (tools/slurm-up.sh --dir folder *up_args): yields the client environment;
    stopped (by PID) whatever happens. The folder is not under pytest's tmp (mode 700): munged runs as
    the munge user and must reach it."""
    try:
        up = subprocess.run([str(REPO / "tools" / "slurm-up.sh"), *up_args, "--dir", str(folder)],
                            capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"SLURM_CONF": str(folder / "etc" / "slurm.conf"),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    finally:
        down = subprocess.run([str(REPO / "tools" / "slurm-down.sh"), "--dir", str(folder)],
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert _daemons_using(folder) == [] and not folder.exists()


@pytest.fixture(scope="module")
def slurm():
    with local_slurm(Path(f"/tmp/trainscale-slurm-test-{os.getpid()}"), "--nodes", "2") as env:
        yield env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sbatch_cpu_smoke_runs_on_two_slurm_nodes_and_is_reported(slurm, tmp_path: Path):
    results = tmp_path / "results"
    env = {**slurm, "RESULTS_DIR": str(results), "RDZV_PORT": str(_free_port())}
    sub = subprocess.run([sys.executable, "-m", "trainscale.scaling", "slurm", "submit", "--wait", "--timeout", "540",
                          str(REPO / "slurm" / "resnet50_cpu_smoke.sh")], capture_output=True, text=True,
                         timeout=600, env={**os.environ, **env}, cwd=tmp_path)
    job = sub.stdout.strip()
    log = "".join(p.read_text() for p in tmp_path.glob("*.out"))
    assert sub.returncode == 0, sub.stderr + log[-3000:]
    run_dir = results / f"job{job}-0"
    summary = read_json(run_dir / schema.SUMMARY)
    assert summary["status"] == "ok" and summary["launcher"] == "torchrun"
    assert summary["nodes"] == 2 and summary["world_size"] == 2
    prov = read_json(run_dir / schema.PROVENANCE)
    assert sorted(r["node_name"] for r in prov["ranks"]) == ["node1", "node2"]  # one rank per Slurm node
    assert prov["env"]["SLURM_JOB_ID"] == job
    assert (run_dir / "logs" / "agent-node0.log").exists() and (run_dir / "logs" / "agent-node1.log").exists()
    rep = run_cli("report", str(run_dir), timeout=120)
    assert rep.returncode == 0, rep.stderr
    report = read_json(run_dir / "report" / "report.json")
    assert [(r["world_size"], r["nodes"], r["runs_ok"]) for r in report["rows"]] == [(2, 2, 1)]


def _wait_for(predicate, timeout: float, what: str):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_usr2_before_the_time_limit_stops_records_and_requeues(slurm, cli, tmp_path: Path):
    """What --signal=USR2@120 does, sent now with scancel: every node stops cleanly, node rank 0
    records the run as stopped by SIGUSR2, and the job goes back to the queue (--requeue)."""
    script = tmp_path / "long.sh"
    render = cli("slurm", "render", "--workload", "resnet50", "--nodes", "2", "--gpus-per-node", "0",
                 "--cpus-per-task", "1", "--time", "00:15:00", "--steps", "100000", "--warmup", "1",
                 "--batch-size", "2", "--set", "model.width=0.125", "--set", "model.resolution=32",
                 "--set", "model.num_classes=10", "--output", str(script))
    assert render.returncode == 0, render.stderr
    env = {**os.environ, **slurm, "RESULTS_DIR": str(tmp_path / "results"), "RDZV_PORT": str(_free_port())}
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60).stdout.strip().split(";")[0]
    assert job.isdigit()
    run_dir = tmp_path / "results" / f"job{job}-0"
    try:
        _wait_for(lambda: (run_dir / schema.PROGRESS).exists(), 240, "training to start")
        subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True, timeout=30)
        summary = _wait_for(lambda: (s := read_json(run_dir / schema.SUMMARY))["status"] != "started" and s,
                            120, "the run record")
        assert summary["status"] == "stopped" and summary["launch"]["stopped_by"] == "SIGUSR2"
        assert summary["reason"].startswith("stopped by SIGUSR2 on node 0"), summary["reason"]

        def restarts() -> bool:
            show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env,
                                  timeout=30).stdout
            return "Restarts=1" in show

        _wait_for(restarts, 60, "the job to be requeued")
    finally:
        subprocess.run(["scancel", job], env=env, timeout=30)
