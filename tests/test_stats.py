"""Statistics and scaling formulas against hand-computed answers and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from trainscale.analysis.scaling import STRONG, WEAK, efficiency, karp_flatt, scaling_points
from trainscale.analysis.stats import bootstrap_confidence_interval, mad_outliers, summarize, t_confidence_interval


def test_student_t_ci_by_hand():
    # mean 14, s = sqrt(10), t(0.975, 4) = 2.776445, half = 2.776445 * sqrt(10) / sqrt(5) = 3.926486
    lo, hi = t_confidence_interval([10, 12, 14, 16, 18])
    assert lo == pytest.approx(10.073514, abs=1e-5) and hi == pytest.approx(17.926486, abs=1e-5)


def test_t_ci_is_wider_than_normal_for_small_n():
    x = [1.0, 2.0, 4.0]
    lo, hi = t_confidence_interval(x)
    normal_half = 1.96 * np.std(x, ddof=1) / math.sqrt(3)
    assert (hi - lo) / 2 > normal_half * 2  # t(0.975, 2) = 4.30


def test_single_sample_has_no_interval():
    assert all(math.isnan(v) for v in t_confidence_interval([3.0]))


def test_summary_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=200)
    s = summarize(x)
    assert s.n == 200 and s.mean == pytest.approx(x.mean()) and s.std == pytest.approx(x.std(ddof=1))
    for q, v in ((5, s.p5), (50, s.p50), (95, s.p95), (99, s.p99)):
        assert v == pytest.approx(np.percentile(x, q))
    sem = sps.sem(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))


def test_bootstrap_ci_brackets_the_mean_of_a_skewed_sample():
    rng = np.random.default_rng(1)
    x = rng.lognormal(0, 1, size=100)
    lo, hi = bootstrap_confidence_interval(x)
    assert lo < x.mean() < hi
    assert summarize(x, skewed=True).ci_method.startswith("bootstrap")


def test_mad_flags_outliers_without_dropping_them():
    x = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 30.0]
    assert mad_outliers(x) == [6]
    s = summarize(x)
    assert s.outliers == [6] and s.n == 7 and s.max == 30.0


def test_scaling_formulas_by_hand():
    assert efficiency(3.0, 4) == pytest.approx(0.75)
    assert karp_flatt(1.5, 2) == pytest.approx(1 / 3)
    assert karp_flatt(3.0, 4) == pytest.approx(1 / 9)
    assert karp_flatt(1.0, 1) is None
    strong = scaling_points(STRONG, [1, 2, 4], [10.0, 6.0, 3.0], [0, 0, 0])
    assert [p.speedup for p in strong] == pytest.approx([1.0, 10 / 6, 10 / 3])
    assert [p.efficiency for p in strong] == pytest.approx([1.0, 10 / 12, 10 / 12])  # T1 / (N TN)
    weak = scaling_points(WEAK, [1, 2, 4], [0, 0, 0], [100.0, 190.0, 360.0])
    assert [p.efficiency for p in weak] == pytest.approx([1.0, 0.95, 0.9])  # XN / (N X1)


def test_scaling_relative_to_smallest_world_size():
    pts = scaling_points(WEAK, [2, 4, 8], [0, 0, 0], [200.0, 360.0, 640.0])
    assert [p.efficiency for p in pts] == pytest.approx([1.0, 0.9, 0.8])
