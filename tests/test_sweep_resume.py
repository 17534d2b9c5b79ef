"""A stopped sweep continues with its recorded plan: a sweep SIGKILLed in its second point, then
`trainscale sweep --resume`, ends with every point exactly once, the finished point's files untouched
(byte for byte) and the point that was in flight kept aside as evidence."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainscale.analysis.report import build
from trainscale.scaling.results import schema

from .conftest import read_json

pytestmark = pytest.mark.slow

SWEEP = ["sweep", "--workload", "gpt", "--set", "model.preset=tiny", "--steps", "40", "--warmup", "2",
         "--batch-size", "2", "--nproc", "1,2", "--repeats", "2", "--no-report"]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_sweep_resumes_with_every_point_once_and_the_finished_ones_untouched(cli, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "trainscale.scaling", *SWEEP, "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # until the first point has finished and the second one is training
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:] if proc.poll() else ""
            found = list(tmp_path.glob(f"*/{schema.SWEEP_INDEX}"))
            if found:
                sweep = found[0].parent
                index = read_json(found[0])
                if len(index["runs"]) == 2 and (sweep / index["runs"][1]["path"] / schema.PROGRESS).exists():
                    break
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    plan = [p["name"] for p in index["plan"]]
    first, second = index["runs"][0]["name"], index["runs"][1]["name"]
    assert index["runs"][0]["status"] == schema.STATUS_OK and plan[:2] == [first, second]
    before = _digest(sweep / "runs" / first)

    partial = build(sweep).warnings
    assert any("3 of 4 planned point(s) have no result" in w and second in w for w in partial), partial

    time.sleep(2)  # the killed sweep's agents end with it (parent-death signal)
    resumed = cli("sweep", "--resume", str(sweep), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 finished point(s) kept, 3 run" in resumed.stderr

    index = read_json(sweep / schema.SWEEP_INDEX)
    assert index["status"] == "done" and sorted(e["name"] for e in index["runs"]) == sorted(plan)
    assert all(e["status"] == schema.STATUS_OK for e in index["runs"])
    assert _digest(sweep / "runs" / first) == before  # the finished point: same files, same bytes
    assert (sweep / "runs" / ".partial" / f"{second}-1" / schema.CONFIG).exists()  # the in-flight one, kept aside
    assert index["resumes"][0]["kept"] == [first] and index["resumes"][0]["run"] == plan[1:]
    assert not any("planned point" in w for w in build(sweep).warnings)

    again = cli("sweep", "--resume", str(sweep), timeout=120)
    assert again.returncode == 2 and "is done" in again.stderr
