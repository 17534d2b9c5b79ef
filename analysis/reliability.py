"""Checkpoint intervals and expected goodput under failures (docs/method.md "Checkpoint interval",
"Goodput / ETTR"), written once for planning and drills.

Symbols (all seconds): M = mean time between failures of the job, delta = time to save one checkpoint
(what training waits for), R = restart time after a failure (detection + restart + rendezvous +
restore; the work lost since the last checkpoint is accounted for by the model, not by R),
tau = compute time between two checkpoints.

- Young (1974): tau = sqrt(2 * delta * M); a first-order optimum, good while delta << M.
- Daly (2006, "A higher order estimate of the optimum checkpoint interval for restart dumps"):
      tau = sqrt(2 delta M) * [1 + (1/3) sqrt(delta / (2M)) + (1/9) (delta / (2M))] - delta   if delta < 2M
      tau = M                                                                                 otherwise
- Expected wall time with exponentially distributed failures (Daly 2006, eq. 12), for T_s seconds of
  failure-free work:   T_w = M * exp(R / M) * (exp((tau + delta) / M) - 1) * T_s / tau
  Goodput (ETTR) = T_s / T_w. Its first-order breakdown of the lost time (checkpoint saves, restarts,
  recomputed work of half an interval per failure) is given beside it, labelled as an approximation.
Every value here is a model: callers label it "modelled", never "measured".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

YOUNG, DALY = "young", "daly"
INTERVAL_METHODS = (YOUNG, DALY)


def _check(mtbf_s: float, save_s: float) -> None:
    if not mtbf_s > 0 or not math.isfinite(mtbf_s):
        raise ValueError(f"MTBF must be a positive number of seconds, got {mtbf_s}")
    if not save_s >= 0 or not math.isfinite(save_s):
        raise ValueError(f"checkpoint save time must be 0 or more seconds, got {save_s}")


def young_interval_s(save_s: float, mtbf_s: float) -> float:
    """Young's optimum compute time between checkpoints: sqrt(2 * save * MTBF)."""
    _check(mtbf_s, save_s)
    return math.sqrt(2.0 * save_s * mtbf_s)


def daly_interval_s(save_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum compute time between checkpoints (M when save >= 2M)."""
    _check(mtbf_s, save_s)
    if save_s >= 2.0 * mtbf_s:
        return mtbf_s
    x = save_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * save_s * mtbf_s) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - save_s


def checkpoint_interval(mtbf_s: float, save_s: float, method: str = DALY) -> float:
    if method == YOUNG:
        return young_interval_s(save_s, mtbf_s)
    if method == DALY:
        return daly_interval_s(save_s, mtbf_s)
    raise ValueError(f"checkpoint interval method must be one of {', '.join(INTERVAL_METHODS)}, got {method!r}")


def expected_wall_s(work_s: float, mtbf_s: float, save_s: float, restart_s: float, interval_s: float) -> float:
    """Daly's expected wall time for work_s seconds of failure-free work (exponential failures)."""
    _check(mtbf_s, save_s)
    if interval_s <= 0:
        raise ValueError(f"checkpoint interval must be positive, got {interval_s}")
    if restart_s < 0:
        raise ValueError(f"restart time must be 0 or more seconds, got {restart_s}")
    return mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((interval_s + save_s) / mtbf_s) * work_s / interval_s


@dataclass(frozen=True)
class GoodputEstimate:
    """Expected goodput of a job with checkpoints every interval_s of compute (all values modelled)."""
    mtbf_s: float  # of the whole job
    save_s: float
    restart_s: float
    interval_s: float
    interval_method: str
    goodput: float  # failure-free work / expected wall time (ETTR)
    expected_failures_per_hour: float
    # First-order shares of the wall time (approximation; they and goodput add to about 1):
    save_share: float  # delta / (tau + delta)
    restart_share: float  # R / M
    lost_work_share: float  # (tau + delta) / 2 / M
    label: str = "modelled (Daly 2006, exponential failures)"

    def to_dict(self) -> dict:
        return asdict(self)


def expected_goodput(mtbf_s: float, save_s: float, restart_s: float, interval_s: float | None = None,
                     method: str = DALY) -> GoodputEstimate:
    """Goodput with checkpoints every interval_s (default: the optimum of ``method``)."""
    _check(mtbf_s, save_s)
    if interval_s is None:
        interval_s = checkpoint_interval(mtbf_s, save_s, method)
        used = method
    else:
        used = "given"
    if interval_s == 0 and save_s == 0:  # free checkpoints, taken continuously: only restarts are lost
        wall_per_work = math.exp(restart_s / mtbf_s)
    else:
        wall_per_work = expected_wall_s(1.0, mtbf_s, save_s, restart_s, interval_s)
    return GoodputEstimate(
        mtbf_s=mtbf_s, save_s=save_s, restart_s=restart_s, interval_s=interval_s, interval_method=used,
        goodput=1.0 / wall_per_work, expected_failures_per_hour=3600.0 / mtbf_s,
        save_share=save_s / (interval_s + save_s) if interval_s + save_s > 0 else 0.0, restart_share=restart_s / mtbf_s,
        lost_work_share=(interval_s + save_s) / 2.0 / mtbf_s)


def job_mtbf_s(node_mtbf_s: float, nodes: int) -> float:
    """A job fails when any of its nodes does: with independent exponential failures, MTBF / nodes."""
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    return node_mtbf_s / nodes
