"""trainscale compare: bad input is one line and exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("args, needle", [
    (["/nonexistent/a", "/nonexistent/b"], "results folder not found: /nonexistent/a"),
    (["{empty}", "{empty}"], "no runs found under"),
    (["{empty}", "{empty}", "--alpha", "2"], "--alpha must be in (0, 1), got 2.0"),
    (["{empty}", "{empty}", "--allow-difference", "colour"], "unknown --allow-difference key 'colour'"),
])
def test_compare_bad_input_exits_2_with_one_line(cli, tmp_path: Path, args, needle):
    (tmp_path / "empty").mkdir()
    proc = cli("compare", *[a.replace("{empty}", str(tmp_path / "empty")) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_compare_has_help_with_an_example(cli):
    proc = cli("compare", "--help")
    assert proc.returncode == 0 and "example:" in proc.stdout and "--allow-difference" in proc.stdout
