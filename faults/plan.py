"""A drill's plan: which fault, where and when, and how the run is set up around it (checkpoints,
the collective timeout that detects a hang, the restarts the engine may make). The plan turns into
run-spec settings that sit under the user's own flags and --set (those win)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainscale.faults.kinds import FAULT_KINDS
from trainscale.scaling.spec import SpecError


@dataclass
class DrillPlan:
    fault: str
    rank: int | None = None  # default: the last rank
    node: int | None = None  # kill-node: default the last node
    at_step: int | None = None  # default (no time given): half the steps
    at_time_s: float | None = None  # fire at the first step starting this many seconds after run_start
    random: bool = False  # draw the time ~ Exp(mtbf_s) and the rank uniformly from seed
    seed: int = 0
    mtbf_s: float = 3600.0
    ckpt_every: int = 5
    ckpt_every_s: float = 0.0
    async_ckpt: bool = False
    detect_timeout_s: float | None = None  # default: the kind's (10 s for hang and partition)
    partition_s: float = 6.0
    slow_factor: float = 3.0
    trace: str = ""  # a fault trace file (faults/trace.py): its faults instead of the one fault above

    def check(self) -> None:
        if not (math.isfinite(self.mtbf_s) and self.mtbf_s > 0):
            raise SpecError(f"--mtbf-s must be positive, got {self.mtbf_s:g}")
        if self.at_time_s is not None and not self.at_time_s >= 0:
            raise SpecError(f"--at-time must be 0 or more, got {self.at_time_s}")
        if self.detect_timeout_s is not None and not self.detect_timeout_s >= 0:
            raise SpecError(f"--detect-timeout must be 0 or more, got {self.detect_timeout_s}")

    def settings(self, world_size: int, nodes: int, steps: int) -> tuple[dict[str, Any], dict | None]:
        """The run-spec settings the drill stands for at this world size, and the random draw (if any)."""
        self.check()
        if self.trace:
            return self.trace_settings(), None
        kind = FAULT_KINDS.get(self.fault)
        fault: dict[str, Any] = {"kind": kind.name, "rank": world_size - 1 if self.rank is None else self.rank,
                                 "node": max(0, nodes - 1) if self.node is None else self.node,
                                 "slow_factor": self.slow_factor, "partition_s": self.partition_s,
                                 "detect_timeout_s": kind.detect_timeout_s if self.detect_timeout_s is None
                                 else self.detect_timeout_s}
        draw = None
        if self.random:
            rng = np.random.default_rng(self.seed)
            draw = {"seed": self.seed, "mtbf_s": self.mtbf_s, "at_time_s": float(rng.exponential(self.mtbf_s)),
                    "rank": int(rng.integers(world_size))}
            fault.update(at_time_s=draw["at_time_s"], rank=draw["rank"])
        elif self.at_time_s is not None:
            fault["at_time_s"] = self.at_time_s
        else:
            fault["at_step"] = self.at_step if self.at_step is not None else steps // 2
        settings = {"fault": fault, "comm": {"no_sync_steps": 0},
                    "checkpoint": {"every_steps": self.ckpt_every, "every_s": self.ckpt_every_s,
                                   "async_save": self.async_ckpt}}
        if kind.stops_rank:
            settings["launch"] = {"max_restarts": 1}
        return settings, draw

    def trace_settings(self) -> dict[str, Any]:
        """A trace's run: every fault that stops a rank may cost a restart; a hang or a partition is
        found by the collective timeout."""
        from trainscale.faults.trace import read

        faults = read(self.trace).faults
        timeout = max((FAULT_KINDS.get(f.kind).detect_timeout_s for f in faults), default=0.0)
        fault = {"kind": "none", "trace": self.trace, "partition_s": self.partition_s,
                 "detect_timeout_s": timeout if self.detect_timeout_s is None else self.detect_timeout_s}
        return {"fault": fault, "comm": {"no_sync_steps": 0}, "launch": {"max_restarts": len(faults)},
                "checkpoint": {"every_steps": self.ckpt_every, "every_s": self.ckpt_every_s,
                               "async_save": self.async_ckpt}}
