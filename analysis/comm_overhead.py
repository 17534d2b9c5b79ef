"""All-reduce overhead inside training, from a run's raw samples (docs/method.md).

For a run whose strategy timed its gradient collectives (sample columns comm_s, comm_ops) and/or ran
compute-only steps after the measured window (phase "no_sync"):
- in collectives: per rank, mean over measured steps of comm_s (seconds per step with a gradient
  collective in flight, launch to completion); the run's figure is the mean over ranks;
- exposed communication: mean compute time (forward + backward, where the gradient sync happens) of
  the measured steps minus that of the no_sync steps, both averaged over ranks step by step; 95% CI
  of that difference from Welch's t (scipy.stats.ttest_ind, unequal variances);
- overlap: the share of the in-collective time hidden behind compute, 1 - exposed / in collectives;
- % of step: against the mean global step time (slowest rank per step) of the measured steps.
Straggler view: in a synchronous collective the other ranks wait inside it for the last one to
arrive, so the rank with the least time in collectives is the one the others wait for: named as the
slowest rank (with no timings, the rank with the slowest compute-only steps).
"""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from trainscale.analysis.reduction import COMM_OPS, COMM_S, RunReduction, reduce_ranks


def _welch_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan")
    if np.all(a == a[0]) and np.all(b == b[0]):
        d = float(a[0] - b[0])
        return d, d
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return float(ci.low), float(ci.high)


def comm_overhead(source: dict[int, dict[str, np.ndarray]] | RunReduction) -> dict | None:
    """The run's communication figures (from per-rank columns, or their reduction), or None when it
    recorded nothing about communication."""
    if isinstance(source, dict):
        if not source:
            return None
        try:
            source = reduce_ranks(source.items())
        except ValueError:
            return None
    red = source
    ranks = red.ranks
    timed = red.timed_comm
    n_nosync = min(c.size for c in red.no_sync_compute)
    if not timed and n_nosync == 0:
        return None
    step_s = float(red.global_step_s.mean())
    out: dict = {"world_size": len(ranks), "measured_steps": red.measured_steps,
                 "no_sync_steps": int(n_nosync), "step_time_s": step_s,
                 "comm_s": None, "comm_ops_per_step": None, "comm_pct_of_step": None,
                 "compute_s": None, "compute_only_s": None, "exposed_comm_s": None, "exposed_ci_low": None,
                 "exposed_ci_high": None, "exposed_pct_of_step": None, "overlap_pct": None,
                 "slowest_rank": None, "slowest_rank_basis": None}
    per_rank: dict[str, dict] = {str(r): {} for r in ranks}
    compute = red.column_means["compute_s"]
    out["compute_s"] = float(compute.mean())
    for i, r in enumerate(ranks):
        per_rank[str(r)]["compute_s"] = float(compute[i])
    if timed:
        comm = red.column_means[COMM_S]
        out["comm_s"] = float(comm.mean())
        out["comm_ops_per_step"] = float(red.column_means[COMM_OPS].mean())
        out["comm_pct_of_step"] = 100.0 * out["comm_s"] / step_s
        for i, r in enumerate(ranks):
            per_rank[str(r)]["comm_s"] = float(comm[i])
            per_rank[str(r)]["comm_p95_s"] = float(red.comm_p95_s[i])
        if len(ranks) > 1:
            out["slowest_rank"] = ranks[int(np.argmin(comm))]
            out["slowest_rank_basis"] = "least time inside gradient collectives (the others wait for it)"
    if n_nosync:
        synced = red.compute_step_sum / len(ranks)  # per measured step, mean over ranks
        only_by_rank = np.vstack([c[:n_nosync] for c in red.no_sync_compute])
        only = only_by_rank.mean(axis=0)
        exposed = float(synced.mean() - only.mean())
        lo, hi = _welch_ci(synced, only)
        out.update(compute_only_s=float(only.mean()), exposed_comm_s=exposed, exposed_ci_low=lo, exposed_ci_high=hi,
                   exposed_pct_of_step=100.0 * exposed / step_s)
        if len(ranks) == 1:  # a one-rank collective moves nothing: the difference is noise, not communication
            out.update(exposed_comm_s=None, exposed_ci_low=None, exposed_ci_high=None, exposed_pct_of_step=None,
                       undefined="no communication between ranks, so no exposed time or overlap")
        elif out["comm_s"] and exposed < 0:
            out["undefined"] = "overlap not defined: the exposed time is below zero (within noise; see its CI)"
        elif out["comm_s"]:
            out["overlap_pct"] = 100.0 * (1.0 - exposed / out["comm_s"])
        for i, r in enumerate(ranks):
            only_r = float(only_by_rank[i].mean())
            per_rank[str(r)]["compute_only_s"] = only_r
            per_rank[str(r)]["exposed_comm_s"] = per_rank[str(r)]["compute_s"] - only_r if len(ranks) > 1 else None
        if out["slowest_rank"] is None and len(ranks) > 1:
            out["slowest_rank"] = max(ranks, key=lambda r: per_rank[str(r)]["compute_only_s"])
            out["slowest_rank_basis"] = "slowest compute-only (no_sync) steps"
    out["per_rank"] = per_rank
    return out


SUMMED = ("comm_s", "comm_ops_per_step", "comm_pct_of_step", "compute_s", "compute_only_s", "exposed_comm_s",
          "exposed_pct_of_step", "overlap_pct", "step_time_s")


def combine_runs(runs: list[dict]) -> dict | None:
    """The figures of repeated runs at one world size: means over runs; the exposed time's CI is
    Student-t over runs when there are 2 or more, else the single run's Welch CI. The per-rank view
    and the slowest rank are those of the first run."""
    runs = [r for r in runs if r]
    if not runs:
        return None
    out = {k: (float(np.mean([r[k] for r in runs])) if all(r.get(k) is not None for r in runs) else None)
           for k in SUMMED}
    exposed = [r["exposed_comm_s"] for r in runs if r.get("exposed_comm_s") is not None]
    if len(exposed) >= 2:
        half = sps.t.ppf(0.975, len(exposed) - 1) * np.std(exposed, ddof=1) / np.sqrt(len(exposed))
        out.update(exposed_ci_low=float(np.mean(exposed) - half), exposed_ci_high=float(np.mean(exposed) + half),
                   exposed_ci_basis=f"Student-t 95% over {len(exposed)} runs")
    else:
        out.update(exposed_ci_low=runs[0].get("exposed_ci_low"), exposed_ci_high=runs[0].get("exposed_ci_high"),
                   exposed_ci_basis="Welch 95% over steps of 1 run")
    out.update(runs=len(runs), no_sync_steps=runs[0]["no_sync_steps"], per_rank=runs[0]["per_rank"],
               slowest_rank=runs[0]["slowest_rank"], slowest_rank_basis=runs[0]["slowest_rank_basis"])
    if runs[0].get("world_size") == 1:
        out.update(exposed_ci_low=None, exposed_ci_high=None)
    if out["overlap_pct"] is None or out["exposed_comm_s"] is None:  # why a figure is "-" (one run's reason)
        out["undefined"] = next((r["undefined"] for r in runs if r.get("undefined")), None)
    return out
