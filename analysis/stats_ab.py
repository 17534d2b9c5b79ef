"""Two-sample tests for A/B comparisons of repeated runs (docs/method.md "Comparing A and B").

Each side is a list of per-run values (seconds or samples/s), None for an INVALID run (it missed its
target and counts as the worst). Effects are multiplicative, so ratios are the natural answer:

- Welch's t-test on the logarithms of the values (unequal variances, Welch-Satterthwaite df). The
  ratio is that of the geometric means, exp(mean log B - mean log A), with the 95% CI that the same
  test gives for the difference of the log means: the p-value and the CI always agree.
  Effect size: Hedges' g of the log values.
- Mann-Whitney U (two-sided; exact for small samples without ties) where a rank test is needed: a
  side has INVALID runs (ranked as the worst, which no mean can represent) or a skewed sample
  (D'Agostino's skewness test, p < 0.05, which needs n >= 8). The ratio is the Hodges-Lehmann
  estimate (median of all pairwise log ratios) with its distribution-free CI from the exact null
  distribution of U (Moses); effect size: rank-biserial correlation.

``ratio`` and every effect size are oriented so that > 1 (or > 0) means B is better: for times
(lower is better) the ratio is A / B, a speedup; for throughput it is B / A.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import stats as sps

WELCH, MANN_WHITNEY, NO_TEST = "welch", "mann-whitney", "none"
TESTS = ("auto", WELCH, MANN_WHITNEY)
SKEW_MIN_N = 8  # scipy.stats.skewtest needs at least 8 values


@dataclass
class ABResult:
    n_a: int
    n_b: int
    invalid_a: int
    invalid_b: int
    test: str  # welch | mann-whitney | none
    test_reason: str
    statistic: float | None
    df: float | None
    p_value: float | None
    ratio: float | None  # > 1: B better
    ci_low: float | None
    ci_high: float | None
    ratio_method: str
    effect_size: float | None  # > 0: B better
    effect_size_name: str
    significant: bool
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def _oriented_logs(values: Sequence[float | None], higher_is_better: bool) -> np.ndarray:
    """log of each value, sign-flipped for lower-is-better metrics, so larger always means better;
    INVALID runs become -inf (the worst)."""
    out = []
    for v in values:
        if v is None:
            out.append(-np.inf)
        else:
            if v <= 0:
                raise ValueError(f"values must be positive for a ratio comparison, got {v}")
            out.append(math.log(v) if higher_is_better else -math.log(v))
    return np.array(out, dtype=float)


def is_skewed(log_values: np.ndarray, alpha: float = 0.05) -> tuple[bool, float | None]:
    x = log_values[np.isfinite(log_values)]
    if x.size < SKEW_MIN_N or np.all(x == x[0]):
        return False, None
    p = float(sps.skewtest(x).pvalue)
    return p < alpha, p


def welch_log(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict:
    """Welch's t-test of B against A on (oriented) log values, with the CI of the mean difference."""
    res = sps.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(confidence)
    return {"t": float(res.statistic), "df": float(res.df), "p": float(res.pvalue),
            "diff": float(b.mean() - a.mean()), "ci": (float(ci.low), float(ci.high))}


def hedges_g(a: np.ndarray, b: np.ndarray) -> float | None:
    na, nb = a.size, b.size
    pooled = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    if pooled <= 0:
        return None
    correction = 1 - 3 / (4 * (na + nb) - 9)
    return float((b.mean() - a.mean()) / math.sqrt(pooled) * correction)


EXACT_U_MAX_PAIRS = 2_500  # beyond m*n pairs, the normal approximation of U is used for the CI


@lru_cache(maxsize=64)
def u_null_cdf(m: int, n: int) -> tuple[float, ...]:
    """P(U <= u), u = 0 .. m*n, of the Mann-Whitney U statistic under the null (no ties), from the
    number of arrangements with each U: c(i, j, u) = c(i-1, j, u-j) + c(i, j-1, u) (the largest value
    comes from the first sample, beating all j of the second, or from the second)."""
    prev = [np.ones(1) for _ in range(n + 1)]  # row i-1 of the table, i = 0: one arrangement, U = 0
    for i in range(1, m + 1):
        row = [np.ones(1)]
        for j in range(1, n + 1):
            counts = np.zeros(i * j + 1)
            counts[j:j + prev[j].size] += prev[j]
            counts[:row[j - 1].size] += row[j - 1]
            row.append(counts)
        prev = row
    counts = prev[n]
    return tuple(np.cumsum(counts) / counts.sum())


def moses_k(m: int, n: int, confidence: float) -> int:
    """The largest k with P(U <= k-1) <= alpha/2 (0: no interval at this confidence and size)."""
    alpha = 1 - confidence
    if m * n > EXACT_U_MAX_PAIRS:
        z = sps.norm.ppf(1 - alpha / 2)
        return max(0, int(math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))))
    cdf = u_null_cdf(m, n)
    k = 0
    while k < len(cdf) and cdf[k] <= alpha / 2:
        k += 1
    return k


def hodges_lehmann_ci(a: np.ndarray, b: np.ndarray, confidence: float = 0.95
                      ) -> tuple[float, float | None, float | None]:
    """Hodges-Lehmann shift of B over A (median of all b_j - a_i) and Moses' distribution-free CI:
    [D_(k), D_(mn+1-k)] of the sorted differences, k the largest with P(U <= k-1) <= alpha/2.
    The CI is None when the sample sizes are too small for the confidence level."""
    with np.errstate(invalid="ignore"):
        d = (b[None, :] - a[:, None]).ravel()
    d = np.where(np.isnan(d), 0.0, d)  # two INVALID runs: a tie
    d.sort()
    shift = float(np.median(d))
    k = moses_k(a.size, b.size, confidence)
    if k < 1:
        return shift, None, None
    return shift, float(d[k - 1]), float(d[d.size - k])


def mann_whitney(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict:
    res = sps.mannwhitneyu(b, a, alternative="two-sided")
    superiority = float(res.statistic) / (a.size * b.size)  # P(B better) + half the ties
    shift, lo, hi = hodges_lehmann_ci(a, b, confidence)
    return {"u": float(res.statistic), "p": float(res.pvalue), "rank_biserial": 2 * superiority - 1,
            "shift": shift, "ci": (lo, hi)}


def format_p(p: float) -> str:
    for cut in (0.001, 0.01):
        if p < cut:
            return f"p < {cut:g}"
    return f"p = {p:.2f}" if p >= 0.1 else f"p = {p:.3f}"


def _exp(x: float | None) -> float | None:
    if x is None:
        return None
    return math.inf if x == math.inf else (0.0 if x == -math.inf else math.exp(x))


def _fmt_x(r: float | None) -> str:
    if r is None:
        return "-"
    return "inf" if math.isinf(r) else f"{r:.2f}x"


def compare_values(a: Sequence[float | None], b: Sequence[float | None], higher_is_better: bool,
                   test: str = "auto", alpha: float = 0.05, min_effect: float = 0.0,
                   confidence: float = 0.95) -> ABResult:
    """The A/B comparison of one metric. min_effect: a relative change below which a significant
    difference is not called a speedup or slowdown (as pyperf's --min-speed); 0 = any."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    la, lb = _oriented_logs(a, higher_is_better), _oriented_logs(b, higher_is_better)
    inv_a, inv_b = int(np.sum(~np.isfinite(la))), int(np.sum(~np.isfinite(lb)))
    base = dict(n_a=la.size, n_b=lb.size, invalid_a=inv_a, invalid_b=inv_b)
    if la.size < 2 or lb.size < 2:
        side = "A" if la.size < 2 else "B"
        ratio = None
        if np.isfinite(la).any() and np.isfinite(lb).any():
            ratio = math.exp(lb[np.isfinite(lb)].mean() - la[np.isfinite(la)].mean())
        return ABResult(**base, test=NO_TEST, test_reason=f"side {side} has {min(la.size, lb.size)} run(s): "
                        "no test possible (use --repeats 3 or more)", statistic=None, df=None, p_value=None,
                        ratio=ratio, ci_low=None, ci_high=None, ratio_method="ratio of the (geometric) means",
                        effect_size=None, effect_size_name="-", significant=False,
                        verdict=f"not tested ({_fmt_x(ratio)}; one run on a side)")

    if test == "auto":
        skew_a, pa = is_skewed(la)
        skew_b, pb = is_skewed(lb)
        if inv_a or inv_b:
            test, reason = MANN_WHITNEY, (f"{inv_a + inv_b} INVALID run(s) count as the slowest: only a rank "
                                          "test can use them")
        elif skew_a or skew_b:
            p = pa if skew_a else pb
            test, reason = MANN_WHITNEY, f"skewed sample (D'Agostino skewness test on the logs, p = {p:.3f})"
        elif min(la.size, lb.size) < SKEW_MIN_N:
            test, reason = WELCH, f"no INVALID runs; fewer than {SKEW_MIN_N} runs a side, too few to detect skew"
        else:
            test, reason = WELCH, "no INVALID runs and no significant skew (D'Agostino skewness test)"
    else:
        reason = "chosen by the user"
        if test == WELCH and (inv_a or inv_b):
            raise ValueError("Welch's t-test cannot use INVALID runs (they have no value); use mann-whitney")

    if test == WELCH:
        w = welch_log(la, lb, confidence)
        if not math.isfinite(w["p"]):
            return ABResult(**base, test=WELCH, test_reason=reason, statistic=None, df=None, p_value=None,
                            ratio=math.exp(w["diff"]), ci_low=None, ci_high=None,
                            ratio_method="ratio of geometric means", effect_size=None,
                            effect_size_name="Hedges' g (log values)", significant=False,
                            verdict=f"not tested ({math.exp(w['diff']):.2f}x; no variation within either side)")
        stat, df, p = w["t"], w["df"], w["p"]
        ratio, lo, hi = math.exp(w["diff"]), math.exp(w["ci"][0]), math.exp(w["ci"][1])
        method = f"ratio of geometric means; {confidence:.0%} CI from Welch's t on the log values"
        effect, effect_name = hedges_g(la, lb), "Hedges' g (log values)"
        test_name = "Welch's t-test on log values"
    else:
        mw = mann_whitney(la, lb, confidence)
        stat, df, p = mw["u"], None, mw["p"]
        ratio, lo, hi = _exp(mw["shift"]), _exp(mw["ci"][0]), _exp(mw["ci"][1])
        method = f"Hodges-Lehmann ratio (median pairwise ratio); {confidence:.0%} CI from the exact U distribution"
        effect, effect_name = mw["rank_biserial"], "rank-biserial correlation"
        test_name = "Mann-Whitney U"

    ci_text = (f"{confidence:.0%} CI [{_fmt_x(lo)}, {_fmt_x(hi)}]" if lo is not None
               else f"{confidence:.0%} CI not available at these sample sizes")
    meaningful = ratio is not None and (ratio == 0 or math.isinf(ratio)
                                        or abs(math.log(ratio)) >= math.log1p(min_effect))
    significant = p < alpha and meaningful
    if p >= alpha:
        verdict = f"no significant difference ({_fmt_x(ratio)}, {format_p(p)}, {ci_text}; {test_name})"
    elif not meaningful:
        verdict = (f"no meaningful difference ({_fmt_x(ratio)}, {format_p(p)}: below the {min_effect:.0%} "
                   f"minimum effect; {test_name})")
    elif ratio >= 1:
        verdict = f"{_fmt_x(ratio)} speedup, {format_p(p)}, {ci_text} ({test_name})"
    else:
        verdict = (f"{_fmt_x(1 / ratio if ratio else math.inf)} slowdown ({_fmt_x(ratio)}), {format_p(p)}, "
                   f"{ci_text} ({test_name})")
    return ABResult(**base, test=test, test_reason=reason, statistic=stat, df=df, p_value=p, ratio=ratio,
                    ci_low=lo, ci_high=hi, ratio_method=method, effect_size=effect, effect_size_name=effect_name,
                    significant=significant, verdict=verdict)
