"""torchrun (torch.distributed.run, the elastic agent) with a structured failure record.

    python -m trainscale.launchers.agent --failures FILE -- <torchrun arguments>

Runs torchrun in this process; when workers fail, torchrun's ChildFailedError carries every failed
rank's exit code or signal and the error its @record-decorated main wrote. That goes to FILE as JSON
so the orchestrator can name the rank and the reason, instead of scraping logs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from trainscale.launchers.ownership import PARENT_PID_ENV
from trainscale.launchers.ownership import die_with_parent


def _root_cause_order(item) -> tuple[bool, int]:
    """Root cause first. When one worker dies the agent stops the others with SIGTERM, and their
    records can carry the same (whole-second) timestamp, so a SIGTERM death sorts after any other."""
    _rank, f = item
    return (f.exitcode == -signal.SIGTERM, f.timestamp)


def failure_records(err) -> list[dict]:
    records = []
    for rank, f in sorted(err.failures.items(), key=_root_cause_order):
        message = f.message
        if isinstance(message, dict):  # written by @record: {"message": "...", "extraInfo": {...}}
            message = message.get("message", "")
        signal_name = f.signal_name() if f.exitcode is not None and f.exitcode < 0 else None
        records.append({
            "rank": int(rank), "local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode,
            "signal": signal_name, "message": str(message).strip(), "timestamp": f.timestamp,
            "host": socket.gethostname(),
        })
    return records


class AgentEvents(logging.Handler):
    """Times the agent's reactions to a failed worker, as JSON lines in FILE with this machine's
    monotonic clock (the clock of the ranks' event log):
      closing_workers      torchrun's monitor (every --monitor-interval, 0.1 s by default) saw a worker
                           fail and starts stopping the others ("Sending process P closing signal")
      worker_group_failed  the group is down; "will restart worker group" (after the others stopped), or,
                           with no restarts left, torchrun gives up (ChildFailedError): the only
                           reaction logged when every worker died before the monitor looked
    A worker stopped by SIGSTOP (a hang) ignores torchrun's SIGTERM until torchrun escalates to SIGKILL
    30 s later; as a supervisor of hung workers does, stopped workers are killed here when the first
    reaction is seen, so that the restart is not held up."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.INFO)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "closing signal" in text:
            event = "closing_workers"
        elif "Worker group" in text and "will restart" in text:
            event = "worker_group_failed"
        else:
            return
        now = time.monotonic()
        killed = kill_stopped_children()
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": event, "mono_s": now, "message": text, "killed_stopped_pids": killed}) + "\n")


def kill_stopped_children() -> list[int]:
    """SIGKILL this process's children that are stopped (state T); their pids."""
    me, killed = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] in ("T", "t"):
            pid = int(stat.parent.name)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def with_node_rank(ours: argparse.Namespace, torchrun_argv: list[str], rank: int) -> tuple[argparse.Namespace, list[str]]:
    """The same command on every node of a step, made this node's: its rank in the record paths, in
    --node-rank, and whether it hosts the c10d rendezvous (node rank 0)."""
    for name in ("failures", "events"):
        if getattr(ours, name) is not None:
            setattr(ours, name, Path(str(getattr(ours, name)).replace("{node_rank}", str(rank))))
    out = []
    for arg in torchrun_argv:
        if arg.startswith("--node-rank="):
            arg = f"--node-rank={rank}"
        elif arg.startswith("--rdzv-conf=is_host="):
            arg = f"--rdzv-conf=is_host={'true' if rank == 0 else 'false'}"
        out.append(arg)
    return ours, out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: python -m trainscale.launchers.agent --failures FILE -- <torchrun args>", file=sys.stderr)
        return 2
    # This agent ends when the trainscale process that started it does (torchrun stops its workers on SIGTERM).
    if os.environ.get(PARENT_PID_ENV, "").isdigit():
        die_with_parent(signal.SIGTERM, int(os.environ[PARENT_PID_ENV]))
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="trainscale.launchers.agent")
    parser.add_argument("--failures", required=True, type=Path)
    parser.add_argument("--events", type=Path, help="JSON lines: the agent's failure reactions, timed")
    parser.add_argument("--node-rank-from", dest="node_rank_from", metavar="VAR",
                        help="this node's rank is in environment variable VAR (one srun task per node: SLURM_PROCID); "
                             "it replaces {node_rank} in the paths and the node rank torchrun is given")
    ours = parser.parse_args(argv[:split])
    torchrun_argv = argv[split + 1:]
    if ours.node_rank_from:
        ours, torchrun_argv = with_node_rank(ours, torchrun_argv, int(os.environ[ours.node_rank_from]))

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from trainscale.scaling.results.files import write_json_atomic

    if ours.events:  # after torch's imports, which set the agent logger's level
        handler = AgentEvents(ours.events)
        for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
            torch_logger = logging.getLogger(name)
            torch_logger.addHandler(handler)
            if torch_logger.getEffectiveLevel() > logging.INFO:
                torch_logger.setLevel(logging.INFO)

    try:
        run(parse_args(torchrun_argv))
    except ChildFailedError as err:
        if ours.events:
            with open(ours.events, "a") as f:
                f.write(json.dumps({"event": "worker_group_failed", "mono_s": time.monotonic(),
                                    "message": "no restarts left: torchrun gives up (ChildFailedError)",
                                    "killed_stopped_pids": []}) + "\n")
        write_json_atomic(ours.failures, {"failures": failure_records(err)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
