"""A real Slurm on this machine (tools/slurm-up.sh: munged, slurmctld and two slurmd node names):
the committed CPU smoke script is submitted as it is, runs one torchrun agent per Slurm node, and
its results are reported. The daemons are stopped (by PID) even when a test fails."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainscale.analysis import schema

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


@pytest.fixture(scope="module")
def slurm():
    # Not under pytest's tmp (mode 700): munged runs as the munge user and must reach its folder.
    folder = Path(f"/tmp/trainscale-slurm-test-{os.getpid()}")
    try:
        up = subprocess.run([str(REPO / "tools" / "slurm-up.sh"), "--nodes", "2", "--dir", str(folder)],
                            capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"SLURM_CONF": str(folder / "etc" / "slurm.conf"),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    finally:
        down = subprocess.run([str(REPO / "tools" / "slurm-down.sh"), "--dir", str(folder)],
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert _daemons_using(folder) == [] and not folder.exists()


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
