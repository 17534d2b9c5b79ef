"""A run's torchft Lighthouse: the server every replica group's Manager asks for the quorum (which
groups take part in the next step) and sends heartbeats to.

    python -m trainscale.launchers.torchft_lighthouse --bind HOST:PORT --address-file FILE [...]

Writes FILE (JSON: the address the Managers are given, http://HOST:PORT) once it listens, then serves
until SIGTERM or SIGINT, or until the trainscale process that started it dies. The address is built
from the bind host and the port it got, not from the server's own report, which names this machine's
host name: on an emulated node only the namespace address may be used.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from trainscale.launchers.ownership import PARENT_PID_ENV, die_with_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainscale.launchers.torchft_lighthouse")
    parser.add_argument("--bind", required=True, help="HOST:PORT to listen on (port 0: any free port)")
    parser.add_argument("--address-file", required=True, type=Path)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--join-timeout-ms", type=int, default=10_000)
    parser.add_argument("--quorum-tick-ms", type=int, default=100)
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=1_000)
    args = parser.parse_args(argv)
    if os.environ.get(PARENT_PID_ENV, "").isdigit():
        die_with_parent(signal.SIGTERM, int(os.environ[PARENT_PID_ENV]))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # taken by sigwait below

    from torchft._torchft import LighthouseServer

    from trainscale.scaling.results.files import write_json_atomic

    server = LighthouseServer(bind=args.bind, min_replicas=args.min_replicas, join_timeout_ms=args.join_timeout_ms,
                              quorum_tick_ms=args.quorum_tick_ms, heartbeat_timeout_ms=args.heartbeat_timeout_ms)
    reported = server.address()
    host = args.bind.rsplit(":", 1)[0]
    port = reported.rsplit(":", 1)[1].strip("/")
    write_json_atomic(args.address_file, {"address": f"http://{host}:{port}", "reported": reported,
                                          "pid": os.getpid(), "min_replicas": args.min_replicas,
                                          "join_timeout_ms": args.join_timeout_ms,
                                          "quorum_tick_ms": args.quorum_tick_ms,
                                          "heartbeat_timeout_ms": args.heartbeat_timeout_ms})
    print(f"lighthouse listening on {host}:{port} (reports {reported})", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
