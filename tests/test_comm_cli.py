"""trainscale comm's bad input: one line naming the bad value, exit 2, nothing written."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainscale.scaling.cli.main import main


@pytest.mark.parametrize("args, needle", [
    (["--op", "all_reduce,gather"], "unknown collective 'gather' for --op"),
    (["-b", "1X"], "-b must be a size like 1K, 64M or 1G, got '1X'"),
    (["-b", "1M", "-e", "1K"], "-e (maximum bytes, 1024) must be at least -b (minimum bytes, 1048576)"),
    (["-f", "1"], "-f (step factor) must be at least 2, got 1"),
    (["-n", "0"], "-n (iterations) must be at least 1, got 0"),
    (["-w", "many"], "-w must be an integer, got 'many'"),
    (["--dtype", "float8"], "unknown --dtype 'float8'"),
    (["--nproc", "0"], "--nproc values must be at least 1, got 0"),
    (["--nproc", "2,x"], "--nproc must be a comma-separated list of integers, got '2,x'"),
    (["--op", "send_recv", "--nproc", "1"], "send_recv needs at least 2 processes, got --nproc 1"),
    (["--dtype", "int8", "--nproc", "128"], "--dtype int8 cannot hold an exact sum over 128 ranks"),
    (["--root", "2"], "--root must be a rank of every world size (0..1), got 2"),
    (["--op", "all_gather", "-b", "1", "-e", "4"], "-e must be at least 8 bytes"),
    (["--backend", "nccl"], "backend 'nccl' needs CUDA GPUs and none is visible"),
    (["--backend", "mpi"], "unknown backend 'mpi'"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys, args, needle):
    out = tmp_path / "results"
    assert main(["comm", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainscale comm: error: ") and needle in err[0], err
    assert not out.exists()


def test_bad_input_through_the_real_command(cli, tmp_path: Path):
    proc = cli("comm", "--op", "all_reduce", "-e", "lots", "--out", str(tmp_path / "r"), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["trainscale comm: error: -e must be a size like 1K, 64M or 1G, got 'lots'"]
    assert not (tmp_path / "r").exists()
    help_ = cli("comm", "--help", timeout=60)
    assert help_.returncode == 0 and "example:" in help_.stdout and "-b MINBYTES" in help_.stdout
