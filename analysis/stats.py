"""Summary statistics of timing samples (docs/method.md "Statistics").

Student-t confidence intervals (never the normal 1.96 for small n), percentiles, and MAD outlier
flags. Outliers are reported, never dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats as sps

MAD_THRESHOLD = 3.5  # Iglewicz and Hoaglin's cut-off on the modified z-score


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    std: float
    min: float
    max: float
    p5: float
    p50: float
    p95: float
    p99: float
    ci_low: float
    ci_high: float
    ci_method: str
    outliers: list[int] = field(default_factory=list)  # indices into the samples, MAD rule

    def to_dict(self) -> dict:
        return asdict(self)


def t_confidence_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval for the mean. A single sample has no interval: (x, x) is
    not claimed; NaNs are returned instead."""
    x = np.asarray(samples, dtype=float)
    n = x.size
    if n < 2:
        return (float("nan"), float("nan"))
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return (float(x.mean() - half), float(x.mean() + half))


def bootstrap_confidence_interval(
    samples: Sequence[float], confidence: float = 0.95, seed: int = 0, resamples: int = 2000
) -> tuple[float, float]:
    """BCa bootstrap interval for the mean, for skewed distributions."""
    x = np.asarray(samples, dtype=float)
    if x.size < 2 or np.all(x == x[0]):
        return t_confidence_interval(x, confidence)
    res = sps.bootstrap(
        (x,), np.mean, confidence_level=confidence, n_resamples=resamples,
        random_state=np.random.default_rng(seed), method="BCa",
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def mad_outliers(samples: Sequence[float], threshold: float = MAD_THRESHOLD) -> list[int]:
    """Indices whose modified z-score 0.6745 * |x - median| / MAD exceeds the threshold."""
    x = np.asarray(samples, dtype=float)
    if x.size < 3:
        return []
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad == 0:
        return [int(i) for i in np.flatnonzero(x != med)] if np.any(x != med) else []
    z = 0.6745 * np.abs(x - med) / mad
    return [int(i) for i in np.flatnonzero(z > threshold)]


def summarize(samples: Sequence[float], confidence: float = 0.95, skewed: bool = False) -> Summary:
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("cannot summarise an empty sample")
    if skewed:
        lo, hi = bootstrap_confidence_interval(x, confidence)
        method = f"bootstrap BCa {confidence:.0%}"
    else:
        lo, hi = t_confidence_interval(x, confidence)
        method = f"student-t {confidence:.0%}"
    p5, p50, p95, p99 = np.percentile(x, [5, 50, 95, 99])
    return Summary(
        n=int(x.size),
        mean=float(x.mean()),
        median=float(np.median(x)),
        std=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        min=float(x.min()),
        max=float(x.max()),
        p5=float(p5),
        p50=float(p50),
        p95=float(p95),
        p99=float(p99),
        ci_low=lo,
        ci_high=hi,
        ci_method=method,
        outliers=mad_outliers(x),
    )


# ---------------------------------------------------------------------------------------------
# Repeated runs (docs/method.md: default 3 for quick work; MLPerf-style olympic mean from 5)

OLYMPIC_MIN_RUNS = 5


def olympic_mean(values: Sequence[float]) -> float:
    """MLPerf's olympic mean: drop the best and the worst value, average the rest."""
    x = np.sort(np.asarray(values, dtype=float))
    if x.size < 3:
        raise ValueError(f"the olympic mean needs at least 3 values, got {x.size}")
    return float(x[1:-1].mean())


@dataclass(frozen=True)
class RepeatSummary:
    """One metric over R repeated runs, some of which may be INVALID (None: e.g. missed the target).

    headline: the olympic mean when R >= 5 (an INVALID run counts as the worst, so one is dropped),
    else the mean of all runs; None (INVALID) when an INVALID run is still among those averaged.
    mean / std / CI: over the valid runs only (Student-t 95%); median: invalid runs as the worst.
    outliers: positions (into the values) of valid runs the MAD rule flags; they stay in every figure.
    """
    n: int
    valid: int
    invalid: int
    headline: float | None
    headline_method: str
    mean: float | None
    median: float | None
    olympic_mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    outliers: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def summarize_repeats(values: Sequence[float | None], lower_is_better: bool = True) -> RepeatSummary:
    if len(values) == 0:
        raise ValueError("no runs to summarise")
    worst = np.inf if lower_is_better else -np.inf
    ranked = np.array([worst if v is None else float(v) for v in values])
    positions = [i for i, v in enumerate(values) if v is not None]
    valid = ranked[positions]
    n, n_valid = len(values), len(positions)
    olympic = _finite_or_none(olympic_mean(ranked)) if n >= OLYMPIC_MIN_RUNS else None
    if n >= OLYMPIC_MIN_RUNS:
        headline, method = olympic, f"olympic mean of {n} runs (best and worst dropped)"
    else:
        headline, method = _finite_or_none(ranked.mean()), f"mean of {n} run{'s' if n > 1 else ''}"
    if headline is None:
        method += ": INVALID (an invalid run remains among the averaged runs)"
    lo, hi = t_confidence_interval(valid) if n_valid >= 2 else (None, None)
    return RepeatSummary(
        n=n, valid=n_valid, invalid=n - n_valid, headline=headline, headline_method=method,
        mean=float(valid.mean()) if n_valid else None,
        median=_finite_or_none(float(np.median(ranked))),
        olympic_mean=olympic,
        std=float(valid.std(ddof=1)) if n_valid >= 2 else None,
        ci_low=lo, ci_high=hi,
        outliers=[positions[i] for i in mad_outliers(valid)],
    )
