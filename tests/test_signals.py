"""No orphans: a signal to the `trainscale` process (TERM, INT, HUP; KILL, which nothing of it can catch)
ends every process of its run within seconds, checked by process id, and the record says how the run
ended: stopped by the signal, or (after KILL) abandoned. Real runs, sweeps and drills."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainscale.analysis.report import build
from trainscale.analysis.runs import load_run
from trainscale.launchers.ownership import alive, descendants, mentioning
from trainscale.scaling.results import schema

from .conftest import read_json

pytestmark = pytest.mark.slow

LONG = ["--workload", "gpt", "--set", "model.preset=tiny", "--steps", "100000", "--warmup", "1", "--batch-size", "2"]
COMMANDS = {
    "run": ["run", *LONG, "--nproc", "2"],
    "sweep": ["sweep", *LONG, "--nproc", "1,2", "--no-report"],  # stopped in its first run, of 1 rank
    "drill": ["drill", "--fault", "kill-rank", "--at-step", "99990", "--ckpt-every", "50000", *LONG, "--nproc", "2"],
}
SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "HUP": signal.SIGHUP, "KILL": signal.SIGKILL}


def _start(args: list[str], out: Path) -> subprocess.Popen:
    # Its own session, as a command started from a terminal or a batch script is: the signal below goes
    # to the trainscale process alone, not to its agents.
    return subprocess.Popen([sys.executable, "-m", "trainscale.scaling", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _run_folder(out: Path) -> Path | None:
    found = glob.glob(str(out / "**" / schema.PROGRESS), recursive=True)
    return Path(found[0]).parent if found else None


def _left_after(seen: set[tuple[int, int]], out: Path, timeout_s: float) -> list:
    """The run's processes (those seen, and any naming its folder) still alive once all were gone,
    or when timeout_s ran out; a second look a second after they were gone catches one started late."""
    deadline = time.monotonic() + timeout_s
    while (left := alive(seen) + alive(mentioning(out))) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        return left
    time.sleep(1.0)
    return alive(seen) + alive(mentioning(out))


# Every signal on `run`; sweep and drill share its stop path (the orchestrator's handler), so they are
# stopped by one handled signal and by SIGKILL, which no handler sees.
CASES = [("run", sig) for sig in SIGNALS] + [(command, sig) for command in ("sweep", "drill") for sig in ("TERM", "KILL")]


@pytest.mark.parametrize("command, sig", CASES)
def test_a_signal_ends_every_process_of_the_run_and_the_record_says_how(command, sig, tmp_path):
    out = tmp_path / "out"
    proc = _start(COMMANDS[command], out)
    seen: set[tuple[int, int]] = set()
    try:
        deadline = time.monotonic() + 240
        while (run_dir := _run_folder(out)) is None or read_json(run_dir / schema.PROGRESS)["step"] < 2:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "training did not start within 240 s"
            seen |= descendants([proc.pid])
            time.sleep(0.2)
        seen |= descendants([proc.pid]) | mentioning(out)
        commands = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p, _ in alive(seen)}
        ranks = [p for p, c in commands.items() if b"runtime.worker" in c and b"launchers.agent" not in c]
        # what is checked below really includes the workers
        assert len(ranks) == (1 if command == "sweep" else 2), commands

        os.kill(proc.pid, SIGNALS[sig])
        code = proc.wait(timeout=60)
        left = _left_after(seen, out, 10.0)
        assert left == [], f"processes of the run still alive 10 s after SIG{sig}: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr[-3000:]
    run = load_run(run_dir)
    if sig == "KILL":
        assert code == -signal.SIGKILL
        assert run.summary["status"] == schema.STATUS_ABANDONED, run.summary
        assert "ended without recording an outcome" in run.summary["reason"]
    else:
        assert code == 128 + SIGNALS[sig], stderr[-2000:]
        assert f"stopped by SIG{sig}" in stderr.splitlines()[-1]
        assert run.summary["status"] == schema.STATUS_STOPPED and run.summary["reason"] == f"stopped by SIG{sig}"
    if command == "sweep":
        sweep_dir = run_dir.parent.parent
        index = read_json(sweep_dir / schema.SWEEP_INDEX)
        if sig == "KILL":
            assert index["status"] == "running"  # its writer is gone: the run inside says abandoned
        else:
            assert index["status"] == schema.STATUS_STOPPED and index["reason"].startswith(f"stopped by SIG{sig}")
            assert [r["status"] for r in index["runs"]] == [schema.STATUS_STOPPED]
        warnings = build(sweep_dir).warnings
        assert any(w.startswith("The sweep did not finish") and ("abandoned" in w) == (sig == "KILL") for w in warnings)


def test_a_signal_stops_a_comm_sweep_and_its_record_says_so(tmp_path):
    out = tmp_path / "out"
    proc = _start(["comm", "--op", "all_reduce", "-b", "1K", "-e", "1M", "-n", "100000", "--nproc", "2"], out)
    seen: set[tuple[int, int]] = set()
    try:
        deadline = time.monotonic() + 240
        while len(seen := seen | descendants([proc.pid])) < 4:  # trainscale, the agent and both benchmark ranks
            assert proc.poll() is None and time.monotonic() < deadline, "the benchmark did not start"
            time.sleep(0.2)
        time.sleep(2)  # into the measurement
        seen |= descendants([proc.pid]) | mentioning(out)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert _left_after(seen, out, 10.0) == []
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = read_json(next(out.glob("*-comm-*")) / schema.SUMMARY)
    assert summary["status"] == schema.STATUS_STOPPED and summary["reason"] == "stopped by SIGTERM"


def test_the_cleanup_leaves_the_processes_of_another_live_trainscale_process_alone(tmp_path):
    """Several nodes' trainscale processes share one run folder; on one machine (a local multi-node
    Slurm) one node's cleanup stopped another node's agent that was still finishing. A process that
    names the folder is ours to stop unless it carries another live owner (TRAINSCALE_PARENT_PID)."""
    from trainscale.launchers.ownership import PARENT_PID_ENV

    folder = tmp_path / "run"
    folder.mkdir()
    other_owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_owner.wait()
    procs = {}
    try:
        for who, owner in (("other", other_owner.pid), ("ours", os.getpid()), ("orphan", gone_owner.pid),
                           ("unmarked", None)):
            env = {k: v for k, v in os.environ.items() if k != PARENT_PID_ENV}
            if owner:
                env[PARENT_PID_ENV] = str(owner)
            procs[who] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(folder / who)],
                                          env=env)
        time.sleep(1)
        found = {pid for pid, _ in mentioning(folder)}
        assert procs["other"].pid not in found
        assert {procs[w].pid for w in ("ours", "orphan", "unmarked")} <= found
    finally:
        for p in [*procs.values(), other_owner]:
            p.kill()
            p.wait()
