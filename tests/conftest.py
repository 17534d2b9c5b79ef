"""Shared helpers: the CLI as a real subprocess, and a tiny ResNet-50 configuration for CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
