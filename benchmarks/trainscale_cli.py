"""The trainscale CLI as the emulated-cluster benchmarks drive it (imported by scripts run as
`python benchmarks/NAME.py`, whose folder is then on sys.path)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def trainscale(*args: str, env: dict) -> subprocess.CompletedProcess:
    """Run `trainscale ARGS`; a failure ends the benchmark with the command and its exit code."""
    proc = subprocess.run([sys.executable, "-m", "trainscale.scaling", *args], env=env, text=True,
                          stdout=subprocess.PIPE, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"trainscale {' '.join(args[:2])} failed with exit code {proc.returncode}")
    return proc


def emulated_sweep(name: str, nodes: str, bandwidth: str, sweep_args: list[str], env: dict) -> Path:
    """`cluster up` with as many nodes as the largest count and links shaped to `bandwidth`, a sweep over
    `nodes` (one rank per node), and `cluster down` whatever happens; the sweep's folder."""
    trainscale("cluster", "up", "--nodes", str(max(int(n) for n in nodes.split(","))), "--bandwidth", bandwidth,
               "--name", name, env=env)
    try:
        sweep = trainscale("sweep", "--launcher", "local", "--cluster", name, "--nodes", nodes, "--nproc", "1",
                           *sweep_args, env=env)
    finally:
        trainscale("cluster", "down", "--name", name, env=env)
    return sweep_folder(sweep)


def sweep_folder(sweep: subprocess.CompletedProcess) -> Path:
    """`trainscale sweep` prints its folder last."""
    return Path(sweep.stdout.strip().splitlines()[-1])
