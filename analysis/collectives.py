"""Collective-communication metrics (docs/method.md "Collective bandwidth", the nccl-tests convention),
the alpha-beta model fitted to a sweep, and predictions from a stored fit.

Message size and bus factor are the op's definition (scaling/results/collectives.py);
algbw = bytes / time (GB = 1e9 B), busbw = algbw x the op's bus factor.
Time of one size: each rank's mean over its timed iterations, then the slowest rank's mean (nccl-tests
``-a 3``); p50/p99 are over iterations of the per-iteration maximum across ranks.

Alpha-beta model (Hockney): t(m) = alpha + beta * m, alpha the latency, 1/beta the asymptotic algbw.
Fitted by weighted least squares with relative errors (sigma proportional to t), so 1 KB and 64 MB
messages count alike; every value derived from it is labelled fitted or extrapolated, never measured.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from trainscale.scaling.results.collectives import COLLECTIVES

GB = 1e9
OPS = tuple(COLLECTIVES.names())


def bus_factor(op: str, world: int) -> float:
    """busbw / algbw for an op at world size n (the op's definition, as nccl-tests defines bus bandwidth)."""
    if world < 1:
        raise ValueError(f"world size must be at least 1, got {world}")
    return COLLECTIVES.get(op).bus_factor(world)


def algbw(nbytes: float, seconds: float) -> float:
    """Algorithm bandwidth in GB/s (1e9 B/s)."""
    return nbytes / seconds / GB


def busbw(op: str, nbytes: float, seconds: float, world: int) -> float:
    """Bus bandwidth in GB/s: algbw times the op's factor, comparable across world sizes and with
    the hardware's peak link bandwidth."""
    return algbw(nbytes, seconds) * bus_factor(op, world)


def ring_steps(op: str, world: int) -> int:
    """Sequential latency terms of the ring algorithm, used only to extrapolate alpha to a world
    size that was not measured."""
    return COLLECTIVES.get(op).ring_steps(world)


# ---------------------------------------------------------------------------------------------
# One size of a sweep, from raw per-rank per-iteration timings


@dataclass(frozen=True)
class SizeResult:
    op: str
    world_size: int
    bytes: int
    count: int  # elements per rank in nccl-tests' sense (bytes / element size)
    dtype: str
    redop: str  # "sum" for reducing ops, "none" otherwise
    root: int  # broadcast root, -1 when it does not apply
    iterations: int
    time_s: float  # the slowest rank's mean iteration time
    p50_s: float
    p99_s: float
    min_s: float
    max_s: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int  # elements that failed the correctness check, summed over ranks
    per_rank_mean_s: list[float]
    slowest_rank: int

    def to_dict(self) -> dict:
        return asdict(self)


def size_result(op: str, world: int, nbytes: int, count: int, dtype: str, root: int,
                times_by_rank: dict[int, Sequence[float]], wrong_by_rank: dict[int, int]) -> SizeResult:
    """Aggregate one (op, size) from each rank's per-iteration seconds and wrong-element count."""
    ranks = sorted(times_by_rank)
    if not ranks or sorted(wrong_by_rank) != ranks:
        raise ValueError(f"{op} {nbytes} B: timings from ranks {ranks}, checks from ranks {sorted(wrong_by_rank)}")
    lengths = {len(times_by_rank[r]) for r in ranks}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"{op} {nbytes} B: ranks disagree on the number of timed iterations: {lengths}")
    t = np.array([np.asarray(times_by_rank[r], dtype=float) for r in ranks])  # ranks x iterations
    per_rank_mean = t.mean(axis=1)
    slowest = int(np.argmax(per_rank_mean))
    time_s = float(per_rank_mean[slowest])
    per_iter_max = t.max(axis=0)
    p50, p99 = np.percentile(per_iter_max, [50, 99])
    return SizeResult(
        op=op, world_size=world, bytes=int(nbytes), count=int(count), dtype=dtype,
        redop="sum" if COLLECTIVES.get(op).reducing else "none", root=root if COLLECTIVES.get(op).rooted else -1,
        iterations=int(t.shape[1]), time_s=time_s, p50_s=float(p50), p99_s=float(p99),
        min_s=float(per_iter_max.min()), max_s=float(per_iter_max.max()),
        algbw_gbps=algbw(nbytes, time_s), busbw_gbps=busbw(op, nbytes, time_s, world),
        wrong=int(sum(wrong_by_rank[r] for r in ranks)),
        per_rank_mean_s=[float(x) for x in per_rank_mean], slowest_rank=ranks[slowest],
    )


# ---------------------------------------------------------------------------------------------
# The alpha-beta fit


@dataclass(frozen=True)
class AlphaBetaFit:
    op: str
    world_size: int
    alpha_s: float  # fitted latency
    beta_s_per_byte: float  # fitted inverse bandwidth
    alpha_stderr_s: float
    beta_stderr_s_per_byte: float
    r_squared: float  # on the times themselves (1 - SS_res / SS_tot)
    rel_rms_error: float  # root mean square of (fit - measured) / measured
    max_rel_error: float
    points: int
    min_bytes: int
    max_bytes: int
    method: str = "weighted least squares t = alpha + beta*bytes, sigma proportional to t (scipy curve_fit)"
    label: str = "fitted"

    @property
    def asymptotic_algbw_gbps(self) -> float:
        return math.inf if self.beta_s_per_byte <= 0 else 1.0 / self.beta_s_per_byte / GB

    @property
    def asymptotic_busbw_gbps(self) -> float:
        return self.asymptotic_algbw_gbps * bus_factor(self.op, self.world_size)

    def time_s(self, nbytes: float) -> float:
        return self.alpha_s + self.beta_s_per_byte * nbytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["asymptotic_algbw_gbps"] = self.asymptotic_algbw_gbps
        d["asymptotic_busbw_gbps"] = self.asymptotic_busbw_gbps
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AlphaBetaFit":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def fit_alpha_beta(op: str, world: int, nbytes: Sequence[float], seconds: Sequence[float]) -> AlphaBetaFit:
    """Fit t = alpha + beta * bytes to (bytes, time) points with relative weights.

    alpha and beta are bounded at 0 (a negative latency or bandwidth has no meaning); standard
    errors come from the fit's covariance scaled by the residuals.
    """
    from scipy.optimize import curve_fit

    m = np.asarray(nbytes, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if m.size != t.size:
        raise ValueError("bytes and times differ in length")
    if np.unique(m).size < 2:
        raise ValueError(f"{op} at world {world}: an alpha-beta fit needs at least 2 message sizes")
    if np.any(t <= 0):
        raise ValueError(f"{op} at world {world}: times must be positive")

    def model(x, alpha, beta):
        return alpha + beta * x

    # A starting point from the smallest and largest sizes keeps the optimiser well scaled.
    order = np.argsort(m)
    beta0 = max((t[order[-1]] - t[order[0]]) / (m[order[-1]] - m[order[0]]), 1e-15)
    alpha0 = max(t[order[0]] - beta0 * m[order[0]], 0.0)
    # Parameters are scaled to O(1) so the optimiser's tolerances mean the same for both.
    a_scale, b_scale = max(t.min(), 1e-9), max(beta0, 1e-15)

    def scaled(x, a, b):
        return model(x, a * a_scale, b * b_scale)

    popt, pcov = curve_fit(scaled, m, t, p0=(alpha0 / a_scale, 1.0), sigma=t, absolute_sigma=False,
                           bounds=([0.0, 0.0], [np.inf, np.inf]), max_nfev=10_000)
    alpha, beta = popt[0] * a_scale, popt[1] * b_scale
    with np.errstate(invalid="ignore"):
        err = np.sqrt(np.diag(pcov)) if np.all(np.isfinite(pcov)) else np.array([np.nan, np.nan])
    pred = model(m, alpha, beta)
    ss_res = float(np.sum((t - pred) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    rel = (pred - t) / t
    return AlphaBetaFit(
        op=op, world_size=int(world), alpha_s=float(alpha), beta_s_per_byte=float(beta),
        alpha_stderr_s=float(err[0] * a_scale), beta_stderr_s_per_byte=float(err[1] * b_scale),
        r_squared=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        rel_rms_error=float(np.sqrt(np.mean(rel ** 2))), max_rel_error=float(np.max(np.abs(rel))),
        points=int(m.size), min_bytes=int(m.min()), max_bytes=int(m.max()),
    )


def fit_results(results: Iterable[SizeResult]) -> list[AlphaBetaFit]:
    """One fit per (op, world size) that has at least 2 sizes."""
    groups: dict[tuple[str, int], list[SizeResult]] = {}
    for r in results:
        groups.setdefault((r.op, r.world_size), []).append(r)
    fits = []
    for (op, world), rows in sorted(groups.items(), key=lambda kv: (OPS.index(kv[0][0]), kv[0][1])):
        if len({r.bytes for r in rows}) >= 2:
            fits.append(fit_alpha_beta(op, world, [r.bytes for r in rows], [r.time_s for r in rows]))
    return fits


# ---------------------------------------------------------------------------------------------
# Predictions from stored fits (what capacity planning calls)


@dataclass(frozen=True)
class Prediction:
    op: str
    bytes: float
    world_size: int
    seconds: float
    label: str  # "fitted" (inside a measured world size and size range) or "extrapolated"
    basis: str  # which fit, and how it was carried to this size / world size


class CollectiveModel:
    """Alpha-beta fits of a comm sweep; predicts a collective's time for any size and world size.

    At a measured world size the fit is used as it is (labelled "extrapolated" outside the measured
    message sizes). At another world size, the nearest measured world size's fit is carried over with
    the ring model: the bus bandwidth stays, so beta scales with the op's bus factor, and alpha scales
    with the ring's sequential steps. That is a model, and it is labelled so.
    """

    def __init__(self, fits: Iterable[AlphaBetaFit]) -> None:
        self.fits = {(f.op, f.world_size): f for f in fits}

    @classmethod
    def from_results(cls, results: dict) -> "CollectiveModel":
        """From a comm results document (comm_results.json: {"fits": [...]})."""
        return cls(AlphaBetaFit.from_dict(d) for d in results.get("fits", []))

    @classmethod
    def load(cls, path) -> "CollectiveModel":
        from pathlib import Path

        from trainscale.scaling.results import schema
        from trainscale.scaling.results.files import read_json

        p = Path(path)
        if p.is_dir():
            p = p / schema.COMM_RESULTS
        return cls.from_results(read_json(p))

    def ops(self) -> list[str]:
        return sorted({op for op, _ in self.fits}, key=OPS.index)

    def world_sizes(self, op: str) -> list[int]:
        return sorted(w for o, w in self.fits if o == op)

    def predict_time(self, op: str, nbytes: float, world_size: int) -> Prediction:
        if world_size < 1:
            raise ValueError(f"world size must be at least 1, got {world_size}")
        measured = self.world_sizes(op)
        if not measured:
            raise KeyError(f"no fit for {op!r} (fitted: {', '.join(self.ops()) or 'none'})")
        if world_size in measured:
            f = self.fits[(op, world_size)]
            inside = f.min_bytes <= nbytes <= f.max_bytes
            return Prediction(op, nbytes, world_size, f.time_s(nbytes), "fitted" if inside else "extrapolated",
                              f"alpha-beta fit at world size {world_size}"
                              + ("" if inside else f", outside the measured {f.min_bytes}-{f.max_bytes} B"))
        if world_size == 1 and op != "send_recv":
            return Prediction(op, nbytes, world_size, 0.0, "extrapolated", "a collective over 1 rank moves no data")
        # A world of 1 moves no bytes between ranks, so it says nothing about bus bandwidth.
        usable = [w for w in measured if w > 1 or op == "send_recv"]
        if not usable:
            raise KeyError(f"no fit for {op!r} above world size 1: cannot carry it to world size {world_size}")
        base_world = min(usable, key=lambda w: (abs(math.log(w) - math.log(world_size)), -w))
        f = self.fits[(op, base_world)]
        beta = f.beta_s_per_byte * bus_factor(op, world_size) / bus_factor(op, base_world)
        alpha = f.alpha_s * ring_steps(op, world_size) / ring_steps(op, base_world)
        return Prediction(op, nbytes, world_size, alpha + beta * nbytes, "extrapolated",
                          f"fit at world size {base_world} carried to {world_size} with the ring model "
                          f"(same bus bandwidth, alpha x {ring_steps(op, world_size)}/{ring_steps(op, base_world)})")


def predict_time(model: CollectiveModel, op: str, nbytes: float, world_size: int) -> Prediction:
    return model.predict_time(op, nbytes, world_size)
