"""The package installs into an existing PyTorch: its metadata asks for a lowest torch, never an exact
version; the local CPU pin lives only in constraints.txt, which the install script applies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _torch_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    return [d.replace(" ", "") for d in every if re.match(r"^torch(\W|$)", d)]


def test_the_package_asks_for_a_lowest_torch_and_pins_no_exact_version():
    requirements = _torch_requirements()
    assert requirements == ["torch>=2.6"]
    assert not any("==" in r or "~=" in r or "<" in r for r in requirements)


def test_the_local_pin_is_the_constraints_file_that_every_install_uses():
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch")]
    assert pins == ["torch==2.13.0"]
    install = (ROOT / "tools" / "install.sh").read_text()
    assert "-c constraints.txt" in install and 'PIP_CONSTRAINT="$PWD/constraints.txt"' in install
