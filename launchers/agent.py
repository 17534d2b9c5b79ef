"""torchrun (torch.distributed.run, the elastic agent) with a structured failure record.

    python -m trainscale.launchers.agent --failures FILE -- <torchrun arguments>

Runs torchrun in this process; when workers fail, torchrun's ChildFailedError carries every failed
rank's exit code or signal and the error its @record-decorated main wrote. That goes to FILE as JSON
so the orchestrator can name the rank and the reason, instead of scraping logs.
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: python -m trainscale.launchers.agent --failures FILE -- <torchrun args>", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="trainscale.launchers.agent")
    parser.add_argument("--failures", required=True, type=Path)
    ours = parser.parse_args(argv[:split])

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from trainscale.analysis.files import write_json_atomic

    try:
        run(parse_args(argv[split + 1:]))
    except ChildFailedError as err:
        write_json_atomic(ours.failures, {"failures": failure_records(err)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
