"""Faults a rank injects into itself at a given step.

  exception  the rank raises (a software crash: the error text reaches the run record)
  kill-rank  the rank SIGKILLs itself (a hard crash: no error text, only the signal)
"""
from __future__ import annotations

import os
import signal

FAULT_KINDS = ("none", "exception", "kill-rank")


class InjectedFault(RuntimeError):
    pass


def maybe_inject(kind: str, fault_rank: int, at_step: int, rank: int, step: int) -> None:
    if kind == "none" or rank != fault_rank or step != at_step:
        return
    if kind == "exception":
        raise InjectedFault(f"injected exception on rank {rank} at step {step}")
    if kind == "kill-rank":
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"unknown fault kind {kind!r}")
