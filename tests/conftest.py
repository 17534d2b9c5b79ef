"""Shared helpers: the CLI as a real subprocess, and a tiny ResNet-50 configuration for CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

# The real ResNet-50 structure at 1/8 width and 32x32 inputs: seconds per run on 2 cores.
TINY_RESNET = ["--set", "model.width=0.125", "--set", "model.resolution=32", "--set", "model.num_classes=10"]


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainscale.scaling", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def tiny_resnet():
    return list(TINY_RESNET)


@contextmanager
def emulated_cluster(name: str, state_dir: Path, nodes: int = 2) -> Iterator[dict]:
    """A real emulated cluster (network namespaces; the test is skipped without root), removed
    however the test ended. Yields the environment that names its state folder."""
    from trainscale.launchers import namespaces as netns

    if not netns.has_net_admin():
        pytest.skip("needs root (network namespaces)")
    env = {"TRAINSCALE_STATE_DIR": str(state_dir)}
    up = run_cli("cluster", "up", "--nodes", str(nodes), "--name", name, timeout=120, env=env)
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        down = run_cli("cluster", "down", "--name", name, timeout=120, env=env)
        assert down.returncode == 0, down.stderr
