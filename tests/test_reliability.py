"""Checkpoint intervals and expected goodput (analysis.reliability) against hand-computed values."""
from __future__ import annotations

import math

import pytest

from trainscale.analysis.reliability import (checkpoint_interval, daly_interval_s, expected_goodput, expected_wall_s,
                                             job_mtbf_s, young_interval_s)


def test_young_interval_by_hand():
    # sqrt(2 * 60 s * 86400 s) = sqrt(10 368 000)
    assert young_interval_s(60.0, 86400.0) == pytest.approx(3219.9379, abs=1e-3)
    assert young_interval_s(save_s=8.0, mtbf_s=100.0) == pytest.approx(40.0)  # sqrt(1600)
    assert young_interval_s(0.0, 100.0) == 0.0


def test_daly_interval_by_hand():
    # x = 60 / (2 * 86400); tau = 3219.9379 * (1 + sqrt(x)/3 + x/9) - 60
    assert daly_interval_s(60.0, 86400.0) == pytest.approx(3180.0621, abs=1e-3)
    # save 8, MTBF 100: x = 0.04, sqrt(x) = 0.2: 40 * (1 + 0.2/3 + 0.04/9) - 8 = 34.8444...
    assert daly_interval_s(8.0, 100.0) == pytest.approx(40 * (1 + 0.2 / 3 + 0.04 / 9) - 8)
    # save time at or above 2 MTBF: the interval is the MTBF itself
    assert daly_interval_s(250.0, 100.0) == 100.0
    assert daly_interval_s(200.0, 100.0) == 100.0


def test_daly_is_close_to_young_when_saves_are_cheap():
    y, d = young_interval_s(1.0, 1e6), daly_interval_s(1.0, 1e6)
    assert d < y and abs(d - y) / y < 1e-3


def test_method_names_and_bad_values():
    assert checkpoint_interval(86400.0, 60.0, "young") == young_interval_s(60.0, 86400.0)
    assert checkpoint_interval(86400.0, 60.0, "daly") == daly_interval_s(60.0, 86400.0)
    with pytest.raises(ValueError, match="method"):
        checkpoint_interval(86400.0, 60.0, "bogus")
    with pytest.raises(ValueError, match="MTBF"):
        young_interval_s(60.0, 0.0)
    with pytest.raises(ValueError, match="save time"):
        daly_interval_s(-1.0, 100.0)


def test_expected_goodput_by_hand():
    # M = 1000, delta = 10, R = 50, tau = 100: T_w / T_s = 1000 e^0.05 (e^0.11 - 1) / 100
    wall = expected_wall_s(1.0, 1000.0, 10.0, 50.0, 100.0)
    assert wall == pytest.approx(10 * math.exp(0.05) * math.expm1(0.11))
    g = expected_goodput(1000.0, 10.0, 50.0, interval_s=100.0)
    assert g.goodput == pytest.approx(0.818064, abs=1e-6)
    assert g.interval_method == "given"
    assert g.save_share == pytest.approx(10 / 110) and g.restart_share == pytest.approx(0.05)
    assert g.expected_failures_per_hour == pytest.approx(3.6)


def test_optimum_interval_beats_neighbours():
    g = expected_goodput(3600.0, 30.0, 120.0)  # Daly's optimum
    for factor in (0.5, 2.0):
        assert expected_goodput(3600.0, 30.0, 120.0, interval_s=g.interval_s * factor).goodput < g.goodput


def test_job_mtbf():
    assert job_mtbf_s(3600.0 * 1000, 10) == pytest.approx(3600.0 * 100)
    with pytest.raises(ValueError):
        job_mtbf_s(100.0, 0)
