"""Optimal checkpoint intervals (METHOD.md "Checkpoint interval").

Young (1974): tau = sqrt(2 * delta * M), for a save time delta much smaller than the MTBF M.
Daly (2006, "A higher order estimate of the optimum checkpoint interval for restart dumps", eq. 37):
tau = sqrt(2 delta M) * (1 + sqrt(delta / 2M) / 3 + (delta / 2M) / 9) - delta  for delta < 2M, else M.
Both give the compute time between the ends of consecutive saves, in the units of their inputs.
"""
from __future__ import annotations

import math


def _check(save_s: float, mtbf_s: float) -> None:
    if not (save_s > 0 and mtbf_s > 0):
        raise ValueError(f"save time and MTBF must be positive, got save_s={save_s}, mtbf_s={mtbf_s}")


def young_interval_s(save_s: float, mtbf_s: float) -> float:
    _check(save_s, mtbf_s)
    return math.sqrt(2.0 * save_s * mtbf_s)


def daly_interval_s(save_s: float, mtbf_s: float) -> float:
    _check(save_s, mtbf_s)
    if save_s >= 2.0 * mtbf_s:
        return mtbf_s
    x = save_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * save_s * mtbf_s) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - save_s
