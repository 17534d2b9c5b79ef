"""Faults a rank injects into itself at a given step.

  exception  the rank raises (a software crash: the error text reaches the run record)
  kill-rank  the rank SIGKILLs itself (a hard crash: no error text, only the signal)
  slow       a straggler: from at_step on, the rank sleeps (slow_factor - 1) x its own compute time
             after each step's forward/backward, as a device slow_factor times slower would take
"""
from __future__ import annotations

import os
import signal
import time

FAULT_KINDS = ("none", "exception", "kill-rank", "slow")


class InjectedFault(RuntimeError):
    pass


def maybe_inject(kind: str, fault_rank: int, at_step: int, rank: int, step: int) -> None:
    """Called before each step; crash faults fire here (slow acts in slow_down)."""
    if kind in ("none", "slow") or rank != fault_rank or step != at_step:
        return
    if kind == "exception":
        raise InjectedFault(f"injected exception on rank {rank} at step {step}")
    if kind == "kill-rank":
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"unknown fault kind {kind!r}")


def slow_down(kind: str, fault_rank: int, at_step: int, rank: int, step: int, slow_factor: float,
              compute_s: float) -> float:
    """Called after each step's compute (compute_s seconds); the straggler sleeps here so that its
    compute takes slow_factor times as long. Returns the seconds slept (0 on other ranks and steps)."""
    if kind != "slow" or rank != fault_rank or step < at_step or slow_factor <= 1:
        return 0.0
    delay = (slow_factor - 1.0) * compute_s
    time.sleep(delay)
    return delay
