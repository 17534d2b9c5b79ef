"""Launcher flags without starting clusters: torchrun's per-node commands, one-line errors for bad
input (exit 2, nothing written), Ray address checks, Slurm not installed."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from trainscale.launchers.torchrun import _without_flags

from .conftest import TINY_RESNET

REPO = Path(__file__).resolve().parent.parent


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_dry_run_prints_each_nodes_torchrun_command(cli, tmp_path: Path):
    proc = cli("run", "--launcher", "torchrun", "--nodes", "3", "--nproc", "8", "--rdzv-endpoint", "head:29400",
               "--run-id", "exp1", "--max-restarts", "2", "--out", str(tmp_path / "shared"), "--dry-run",
               *TINY_RESNET)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    users = [line for line in lines if line.startswith("trainscale run ")]
    engines = [line.split("which starts: ", 1)[1] for line in lines if "which starts: " in line]
    assert len(users) == len(engines) == 3
    for rank, (user, engine) in enumerate(zip(users, engines)):
        assert user.endswith(f"--node-rank {rank}") and "--dry-run" not in user
        assert "--rdzv-endpoint head:29400" in user and "--run-id exp1" in user
        for arg in ("--nnodes=3", f"--node-rank={rank}", "--nproc-per-node=8", "--rdzv-backend=c10d",
                    "--rdzv-endpoint=head:29400", "--rdzv-id=exp1", "--max-restarts=2",
                    f"--run-dir {tmp_path / 'shared' / 'exp1'}"):
            assert arg in engine, (arg, engine)
        assert ("is_host=true" in engine) == (rank == 0)
    assert not (tmp_path / "shared").exists()  # a dry run writes nothing


def test_without_flags_handles_both_spellings():
    argv = ["--nodes", "2", "--node-rank", "1", "--dry-run", "--node-rank=3", "--out", "x"]
    assert _without_flags(argv, {"--dry-run": 0, "--node-rank": 1}) == ["--nodes", "2", "--out", "x"]


@pytest.mark.parametrize("extra, needles", [
    ([], ["needs --rdzv-endpoint"]),
    (["--rdzv-endpoint", "head:99999", "--run-id", "a", "--node-rank", "0"], ["--rdzv-endpoint", "head:99999"]),
    (["--rdzv-endpoint", "head:29400", "--node-rank", "0"], ["needs --run-id"]),
    (["--rdzv-endpoint", "head:29400", "--run-id", "a"], ["needs this node's rank"]),
    (["--rdzv-endpoint", "head:29400", "--run-id", "a", "--node-rank", "2"], ["node rank must be 0..1", "2"]),
    (["--rdzv-endpoint", "head:29400", "--run-id", "../x", "--node-rank", "0"], ["--run-id", "'../x'"]),
])
def test_torchrun_bad_input_is_one_line_exit_2(cli, tmp_path: Path, extra, needles):
    env = {k: "" for k in ("NODE_RANK", "SLURM_NODEID")}
    proc = cli("run", "--launcher", "torchrun", "--nodes", "2", "--out", str(tmp_path / "r"), *extra, env=env)
    _one_line_error(proc, *needles)
    assert not (tmp_path / "r").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with-block ends: nothing listens there


def test_ray_address_unreachable_is_one_line_exit_2(cli, tmp_path: Path):
    address = f"127.0.0.1:{_closed_port()}"
    proc = cli("run", "--launcher", "ray", "--ray-address", address, "--nproc", "2", "--out", str(tmp_path / "r"))
    _one_line_error(proc, f"--ray-address {address} is unreachable")
    assert not (tmp_path / "r").exists()


def test_ray_address_malformed_is_one_line_exit_2(cli, tmp_path: Path):
    proc = cli("run", "--launcher", "ray", "--ray-address", "no-port-here", "--out", str(tmp_path / "r"))
    _one_line_error(proc, "--ray-address", "'no-port-here'")


def test_dry_run_needs_torchrun(cli):
    _one_line_error(cli("run", "--dry-run"), "--dry-run", "'local'")


def test_slurm_submit_without_slurm_is_one_line_exit_2(cli, tmp_path: Path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    bare = tmp_path / "bin"  # a PATH without sbatch (the CLI itself runs from sys.executable)
    bare.mkdir()
    proc = cli("slurm", "submit", str(script), env={"PATH": str(bare)})
    _one_line_error(proc, "sbatch not found", "Slurm is not installed")


def test_slurm_up_refuses_without_root(tmp_path: Path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    import tempfile

    # A copy where the unprivileged user can read it (the checkout may sit under a private home).
    public = Path(tempfile.mkdtemp(prefix="trainscale-test-"))
    try:
        public.chmod(0o755)
        shutil.copy(REPO / "tools" / "slurm-up.sh", public / "slurm-up.sh")
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                               str(public / "slurm-up.sh"), "--dir", str(public / "s")],
                              capture_output=True, text=True, timeout=60)
        _one_line_error(proc, "needs root")
        assert not (public / "s").exists()
    finally:
        shutil.rmtree(public)


def test_cluster_commands_refuse_without_root_capabilities(cli, tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the capabilities")
    env = {**os.environ, "TRAINSCALE_STATE_DIR": str(tmp_path / "state")}
    import sys

    proc = subprocess.run(["setpriv", "--bounding-set=-net_admin,-sys_admin", sys.executable, "-m",
                           "trainscale.scaling", "cluster", "up", "--nodes", "2", "--name", "nocaps"],
                          capture_output=True, text=True, timeout=120, env=env)
    _one_line_error(proc, "needs root", "CAP_NET_ADMIN")
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("args, needle", [
    (["--bandwidth", "fast"], "--bandwidth must look like"),
    (["--name", "Bad Name"], "cluster name"),
    (["--nodes", "0"], "--nodes must be"),
])
def test_cluster_up_bad_values(cli, tmp_path: Path, args, needle):
    base = {"--nodes": "2", "--name": "t"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    proc = cli("cluster", "up", *flat, env={"TRAINSCALE_STATE_DIR": str(tmp_path / "state")})
    _one_line_error(proc, needle)
    assert not (tmp_path / "state").exists()
