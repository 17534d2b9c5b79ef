"""GPU energy over a window (docs/method.md "Energy").

Preferred: the difference of NVML's cumulative energy counter at the window's edges. Where a GPU
has no counter: its power samples integrated over the window (trapezoid rule), labelled estimated.
The boundary is always "GPU board only": host CPUs, memory, network and cooling are not in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

BOUNDARY = "GPU board only"
COUNTER = "NVML total energy counter"
INTEGRATED = "integrated power samples (estimated)"


@dataclass
class WindowEnergy:
    joules: dict[int, float] = field(default_factory=dict)  # per GPU index
    method: dict[int, str] = field(default_factory=dict)
    boundary: str = BOUNDARY

    @property
    def total_j(self) -> float:
        return float(sum(self.joules.values()))

    @property
    def estimated(self) -> bool:
        return any(m == INTEGRATED for m in self.method.values())


def integrate_power(times: Sequence[float], watts: Sequence[float], t0: float, t1: float) -> float:
    """Joules from power samples over [t0, t1], linearly interpolated at the edges."""
    t, w = np.asarray(times, dtype=float), np.asarray(watts, dtype=float)
    if t.size < 2 or t1 <= t0:
        raise ValueError("need at least two power samples and a positive window")
    inside = (t > t0) & (t < t1)
    grid = np.concatenate([[t0], t[inside], [t1]])
    return float(np.trapezoid(np.interp(grid, t, w), grid))


def window_energy(start_mj: dict[int, int | None], end_mj: dict[int, int | None], t0: float, t1: float,
                  power: dict[int, tuple[Sequence[float], Sequence[float]]]) -> WindowEnergy:
    """Energy per GPU between two marks; power[gpu] = (times, watts) for the fallback."""
    out = WindowEnergy()
    for gpu in start_mj:
        a, b = start_mj[gpu], end_mj.get(gpu)
        if a is not None and b is not None and b >= a:
            out.joules[gpu], out.method[gpu] = (b - a) / 1000.0, COUNTER
        elif gpu in power:
            out.joules[gpu], out.method[gpu] = integrate_power(*power[gpu], t0, t1), INTEGRATED
    return out
