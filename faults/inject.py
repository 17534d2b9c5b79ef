"""Faults a rank injects into itself, at a given step or at the first step that starts a given time
after run_start (on that rank's monotonic clock).

  exception     the rank raises (a software crash: the error text reaches the run record)
  kill-rank     the rank SIGKILLs itself (a hard crash: no error text, only the signal)
  kill-node     every rank of node fault.node SIGKILLs itself at the same step (a node lost; its agent lives)
  hang          the rank SIGSTOPs itself: it stays alive but never answers; its peers find out only
                when a collective times out (fault.detect_timeout_s sets the process group's timeout)
  partition     (emulated clusters) the rank takes its node's link down (inside the node's namespace)
                for fault.partition_s seconds; a detached process brings it up again. Its peers' collectives
                time out (fault.detect_timeout_s) and the group restarts once the link is back
  slow          a straggler: from the fault on, the rank sleeps (slow_factor - 1) x its own compute
                time after each step's forward/backward, as a device slow_factor times slower would
  ckpt-corrupt  the rank truncates the newest complete checkpoint, then SIGKILLs itself: the restart
                must fall back to the checkpoint before

Faults fire once per run: in the first attempt only (TORCHELASTIC_RESTART_COUNT 0) and only while the
run folder has no fault_fired.json (engines without torchrun's count, e.g. Ray Train; fault.marker
puts it elsewhere: a Slurm drill's attempts share one), so a restarted group runs on. Before firing, the rank appends a ``ts_fault`` event (kind, rank, step, mono_s) to the run's
event log: the time the recovery timeline starts from.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from trainscale.scaling.results import schema
FAULT_KINDS = ("none", "exception", "kill-rank", "kill-node", "slow", "hang", "ckpt-corrupt", "partition")
EVENT_FAULT = schema.EVENT_FAULT


class InjectedFault(RuntimeError):
    pass


def restart_count() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


class FaultInjector:
    """One rank's view of the run's fault plan (a spec.FaultConfig)."""

    def __init__(self, fault: Any, rank: int, run_start: float, events_path: Path | None = None,
                 checkpoint_root: Path | None = None, node_rank: int = 0) -> None:
        self.fault, self.rank, self.run_start = fault, rank, run_start
        self.events_path, self.checkpoint_root = events_path, checkpoint_root
        # Fire once per run, whatever restarts the group (torchrun's count; the marker for Ray and others).
        self.marker = events_path.parent / schema.FAULT_FIRED if events_path is not None else None
        if getattr(fault, "marker", ""):  # shared by the attempts of a requeued Slurm job
            self.marker = Path(fault.marker)
        mine = node_rank == fault.node if fault.kind == "kill-node" else rank == fault.rank
        self.armed = (fault.kind != "none" and mine and restart_count() == 0
                      and not (self.marker is not None and self.marker.exists()))
        self.slow_from: int | None = None  # the step a straggler starts at

    def _due(self, step: int) -> bool:
        if self.fault.at_time_s >= 0:
            return time.monotonic() - self.run_start >= self.fault.at_time_s
        return step == self.fault.at_step

    def before_step(self, step: int) -> None:
        """Called before each step: crash faults fire here; a straggler starts here."""
        if not self.armed or not self._due(step):
            return
        kind = self.fault.kind
        self.armed = False
        if kind == "slow":
            self.slow_from = step
            self._log(step, {})
            return
        extra: dict = {}
        if kind == "partition":
            extra = {"interface": os.environ.get("GLOO_SOCKET_IFNAME", ""), "partition_s": self.fault.partition_s}
        if kind == "ckpt-corrupt":
            from trainscale.faults.checkpoint import corrupt_newest

            extra = {"corrupted": corrupt_newest(self.checkpoint_root)}
        self._log(step, extra)
        if kind == "exception":
            raise InjectedFault(f"injected exception on rank {self.rank} at step {step}")
        sys.stdout.flush()
        sys.stderr.flush()
        if kind == "partition":
            self._partition(step)
            return
        if kind in ("kill-rank", "kill-node", "ckpt-corrupt"):
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    def _partition(self, step: int) -> None:
        import subprocess

        iface = os.environ.get("GLOO_SOCKET_IFNAME", "")
        if not iface:
            raise InjectedFault("partition needs an emulated cluster node (no GLOO_SOCKET_IFNAME)")
        # The healer outlives this rank (its own session: the agent's kill of the group misses it).
        subprocess.Popen(["sh", "-c", f"sleep {float(self.fault.partition_s)}; ip link set dev {iface} up"],
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "set", "dev", iface, "down"], check=True, timeout=10)

    def slow_down(self, step: int, compute_s: float) -> float:
        """Called after each step's compute (compute_s seconds); the straggler sleeps so that its
        compute takes slow_factor times as long. Returns the seconds slept."""
        if self.slow_from is None or step < self.slow_from or self.fault.slow_factor <= 1:
            return 0.0
        delay = (self.fault.slow_factor - 1.0) * compute_s
        time.sleep(delay)
        return delay

    def _log(self, step: int, extra: dict) -> None:
        if self.events_path is None:
            return
        from trainscale.scaling.results.files import write_json_atomic

        write_json_atomic(self.marker, {"kind": self.fault.kind, "rank": self.rank, "step": step})
        from trainscale.scaling.runtime.events import EventLog

        log = EventLog(self.events_path)  # appends; rank 0 may be writing too (whole lines, O_APPEND)
        log.event(EVENT_FAULT, self.fault.kind, metadata={"rank": self.rank, "step": step, **extra})
        log.close()
