"""Time-to-accuracy definitions, repeat summaries and A/B statistics against hand-computed answers
and scipy."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from trainscale.analysis.eventlog import read_events
from trainscale.analysis.stats import olympic_mean, summarize_repeats
from trainscale.analysis.stats_ab import compare_values, format_p, hodges_lehmann_ci, moses_k, u_null_cdf
from trainscale.analysis.tta import tta_from_events, tta_rows
from trainscale.scaling.runtime.events import EventLog, mlc


def ev(key: str, mono: float, value=None, **meta) -> dict:
    return {"key": key, "value": value, "metadata": {"mono_s": mono, **meta}}


def events_with(accuracies: list[float], status: str, target: float = 0.9) -> list[dict]:
    out = [ev("init_start", 1.0), ev("init_stop", 4.0), ev("ts_target_accuracy", 4.1, target), ev("run_start", 10.0)]
    t = 10.0
    for epoch, acc in enumerate(accuracies, start=1):
        out += [ev("epoch_start", t, epoch_num=epoch), ev("epoch_stop", t + 2.0, epoch_num=epoch),
                ev("eval_start", t + 2.0, epoch_num=epoch), ev("eval_accuracy", t + 2.25, acc, epoch_num=epoch),
                ev("eval_stop", t + 2.5, epoch_num=epoch)]
        t += 2.5
    return out + [ev("run_stop", t + 0.01, status=status)]


def test_tta_is_run_start_to_the_first_eval_reaching_the_target():
    r = tta_from_events(events_with([0.5, 0.85, 0.91, 0.95], "success"))
    assert r.valid and r.target == 0.9
    assert r.tta_s == 17.25 - 10.0  # the third eval_accuracy is at mono 10 + 2 x 2.5 + 2.25
    assert r.reached["epoch_num"] == 3 and r.reached["accuracy"] == 0.91
    assert [p.t_s for p in r.evals] == [2.25, 4.75, 7.25, 9.75]
    assert r.eval_s_total == pytest.approx(4 * 0.5) and r.epochs_run == 4
    assert tta_from_events(events_with([0.5, 0.9], "success")).tta_s == 4.75  # reaching means >=


def test_a_run_that_misses_the_target_is_invalid():
    r = tta_from_events(events_with([0.5, 0.6], "aborted"))
    assert not r.valid and r.tta_s is None and r.run_status == "aborted"
    with pytest.raises(ValueError, match="inconsistent"):
        tta_from_events(events_with([0.95], "aborted"))
    with pytest.raises(ValueError, match="no run_start"):
        tta_from_events([ev("eval_accuracy", 1.0, 0.9)], 0.5)


def test_a_resumed_run_adds_the_clock_its_checkpoint_carried():
    base = events_with([0.5, 0.95], "success")
    carried = ev("ts_tta_carried_clock", 10.0, 30.5, path="/ckpt/step00000060", step=60)
    r = tta_from_events(base[:4] + [carried] + base[4:])
    assert r.tta_s == 30.5 + 4.75 and r.carried_s == 30.5 and r.evals[0].t_s == 30.5 + 2.25
    assert r.resumed_from == {"path": "/ckpt/step00000060", "step": 60} and r.attempts == 1
    for bad in (float("nan"), float("inf"), -1.0, "30", None, True):
        with pytest.raises(ValueError, match="ts_tta_carried_clock must be a finite number"):
            tta_from_events(base[:4] + [ev("ts_tta_carried_clock", 10.0, bad)] + base[4:])


def test_tta_from_a_real_mllog_file_is_the_difference_of_its_lines(tmp_path: Path):
    log = EventLog(tmp_path / "events.log")
    t0 = log.start(mlc.RUN_START)
    log.event(mlc.EVAL_ACCURACY, 0.5, metadata={"epoch_num": 1})
    t2 = log.event(mlc.EVAL_ACCURACY, 0.97, metadata={"epoch_num": 2})
    log.end(mlc.RUN_STOP, metadata={"status": "success"})
    log.close()
    r = tta_from_events(read_events(tmp_path / "events.log"), 0.97)
    assert r.tta_s == t2 - t0  # exactly: the same clock readings


def test_olympic_mean_and_repeat_summary_by_hand():
    assert olympic_mean([1.0, 5.0, 6.0, 7.0, 100.0]) == 6.0
    s = summarize_repeats([10, 12, 14, 16, 18])
    # mean 14, s = sqrt(10), t(0.975, 4) = 2.776445: half width 3.926486
    assert s.headline == 14.0 and s.headline_method.startswith("olympic mean of 5")
    assert (s.ci_low, s.ci_high) == pytest.approx((10.073514, 17.926486), abs=1e-5)
    three = summarize_repeats([3.0, 4.0, 8.0])
    assert three.headline == 5.0 and three.olympic_mean is None and three.median == 4.0


def test_invalid_runs_count_as_the_slowest():
    s = summarize_repeats([10.0, None, 14.0, 16.0, 18.0])  # the invalid run is the one dropped as worst
    assert s.invalid == 1 and s.valid == 4
    assert s.headline == pytest.approx((14 + 16 + 18) / 3) and s.median == 16.0
    assert s.mean == pytest.approx(14.5)  # the mean and CI are of the valid runs
    two_bad = summarize_repeats([10.0, None, None, 16.0, 18.0])
    assert two_bad.headline is None and "INVALID" in two_bad.headline_method
    assert summarize_repeats([1.0, 2.0, None]).headline is None


def test_mad_outlier_runs_are_flagged_not_dropped():
    s = summarize_repeats([10.0, 10.2, 9.9, 10.1, 30.0])
    assert s.outliers == [4] and s.n == 5 and s.mean == pytest.approx(np.mean([10.0, 10.2, 9.9, 10.1, 30.0]))


def test_tta_rows_efficiency_uses_the_strong_formula_on_tta():
    def result(t):
        r = tta_from_events(events_with([0.95], "success"))
        r.tta_s = t
        return r
    rows = tta_rows({1: [("a", result(10.0))], 2: [("b", result(6.0))], 4: [("c", result(4.0))]})
    assert [r.speedup for r in rows] == pytest.approx([1.0, 10 / 6, 2.5])
    assert [r.efficiency for r in rows] == pytest.approx([1.0, 10 / 12, 10 / 16])


# ---------------------------------------------------------------------------------------------
# A/B statistics


def test_welch_on_log_values_by_hand_and_against_scipy():
    # log values x = [1, 2, 3] (A) and y = [2, 4, 6, 8] (B): means 2 and 5, variances 1 and 20/3.
    # se^2 = 1/3 + 5/3 = 2, t = 3 / sqrt(2); df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4.0754717
    a, b = np.exp([1.0, 2.0, 3.0]), np.exp([2.0, 4.0, 6.0, 8.0])
    r = compare_values(a, b, higher_is_better=True, test="welch")
    assert r.statistic == pytest.approx(3 / math.sqrt(2)) and r.df == pytest.approx(4.0754717, abs=1e-6)
    assert r.p_value == pytest.approx(sps.ttest_ind([2, 4, 6, 8], [1, 2, 3], equal_var=False).pvalue)
    assert r.p_value == pytest.approx(2 * sps.t.sf(3 / math.sqrt(2), 4.0754717), rel=1e-6)
    half = sps.t.ppf(0.975, 4.0754717) * math.sqrt(2)
    assert r.ratio == pytest.approx(math.exp(3.0))
    assert (r.ci_low, r.ci_high) == pytest.approx((math.exp(3 - half), math.exp(3 + half)), rel=1e-6)
    assert r.verdict.startswith("no significant difference") and not r.significant  # p = 0.0999


def test_lower_is_better_ratio_is_a_speedup_of_b():
    a = [10.0, 11.0, 12.0, 10.5, 11.5]  # seconds
    b = [5.0, 5.5, 6.0, 5.2, 5.8]
    r = compare_values(a, b, higher_is_better=False)
    assert r.test == "welch" and "too few to detect skew" in r.test_reason
    ref = sps.ttest_ind(np.log(b), np.log(a), equal_var=False)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.ratio == pytest.approx(math.exp(np.log(a).mean() - np.log(b).mean()))  # ~1.98x
    assert r.ci_low < r.ratio < r.ci_high and r.ci_low > 1
    assert r.significant and r.verdict.startswith(f"{r.ratio:.2f}x speedup, p < 0.001, 95% CI [")
    assert r.effect_size > 0
    back = compare_values(b, a, higher_is_better=False)
    assert back.verdict.startswith(f"{1 / back.ratio:.2f}x slowdown") and back.effect_size < 0


def test_identical_samples_are_no_significant_difference():
    r = compare_values([1.0, 1.1, 1.2], [1.0, 1.1, 1.2], higher_is_better=False)
    assert r.p_value == pytest.approx(1.0) and r.ratio == pytest.approx(1.0)
    assert r.verdict.startswith("no significant difference (1.00x, p = 1.00")


def test_min_effect_keeps_small_significant_differences_from_being_called():
    a, b = [100.0, 100.1, 99.9, 100.05], [101.0, 101.1, 100.9, 101.05]
    assert compare_values(a, b, higher_is_better=True).significant
    r = compare_values(a, b, higher_is_better=True, min_effect=0.05)
    assert not r.significant and r.verdict.startswith("no meaningful difference (1.01x")


def test_mann_whitney_exact_p_and_hodges_lehmann_ci():
    assert u_null_cdf(5, 5)[:4] == pytest.approx([1 / 252, 2 / 252, 4 / 252, 7 / 252])
    assert moses_k(5, 5, 0.95) == 3 and moses_k(10, 10, 0.95) == 24 and moses_k(3, 3, 0.95) == 0
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.array([6.0, 7.0, 8.0, 9.0, 10.0])
    shift, lo, hi = hodges_lehmann_ci(a, b)
    d = np.sort((b[None, :] - a[:, None]).ravel())
    assert shift == np.median(d) == 5.0 and (lo, hi) == (d[2], d[22])
    r = compare_values(np.exp(a), np.exp(b), higher_is_better=True, test="mann-whitney")
    assert r.p_value == pytest.approx(2 / 252) == pytest.approx(sps.mannwhitneyu(b, a).pvalue)
    assert r.effect_size == 1.0 and r.ratio == pytest.approx(math.exp(5.0))


def test_invalid_runs_switch_to_the_rank_test_and_count_as_slowest():
    a = [10.0, 11.0, 10.5, 10.8, 10.2]
    b = [20.0, None, 21.0, None, 19.0]  # B slower, and two runs never reached the target
    r = compare_values(a, b, higher_is_better=False)
    assert r.test == "mann-whitney" and "INVALID" in r.test_reason and r.invalid_b == 2
    assert r.p_value == pytest.approx(sps.mannwhitneyu([20, np.inf, 21, np.inf, 19], a).pvalue)
    assert r.effect_size == -1.0 and r.ratio < 1 and "slowdown" in r.verdict
    with pytest.raises(ValueError, match="cannot use INVALID"):
        compare_values(a, b, higher_is_better=False, test="welch")


def test_skewed_samples_switch_to_mann_whitney():
    rng = np.random.default_rng(3)
    a = np.exp(rng.exponential(1.0, 40))  # logs exponential: strongly skewed
    r = compare_values(a, a * 1.01, higher_is_better=True)
    assert r.test == "mann-whitney" and "skewed" in r.test_reason


def test_one_run_a_side_is_not_tested():
    r = compare_values([1.0], [2.0], higher_is_better=False)
    assert r.test == "none" and r.p_value is None and r.verdict.startswith("not tested (0.50x")


def test_p_value_wording():
    assert [format_p(p) for p in (0.0004, 0.004, 0.04, 0.4)] == ["p < 0.001", "p < 0.01", "p = 0.040", "p = 0.40"]
