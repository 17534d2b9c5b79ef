"""Scaling models (analysis.models) on synthetic curves whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from trainscale.analysis.collectives import AlphaBetaFit, CollectiveModel
from trainscale.analysis.models import (EXTRAPOLATED, FITTED, ModelError, RunPoint, ScalingData, SizeData,
                                        amdahl_speedup, fit_law, fit_step_model, gustafson_speedup,
                                        karp_flatt_points, validate)
from trainscale.analysis.scaling import STRONG, WEAK, karp_flatt


def test_amdahl_fit_recovers_the_serial_fraction_of_an_exact_curve():
    worlds = [1, 2, 4, 8, 16]
    fit = fit_law("amdahl", worlds, [amdahl_speedup(n, 0.1) for n in worlds])
    assert fit.serial_fraction == pytest.approx(0.1, abs=1e-6)
    assert fit.rel_rms_error < 1e-6 and fit.matches_mode == STRONG


def test_amdahl_fit_on_noisy_repeats_has_a_ci_around_the_truth():
    rng = np.random.default_rng(7)
    worlds = [1, 2, 4, 8] * 3
    speedups = [amdahl_speedup(n, 0.05) * (1 + rng.normal(0, 0.01)) for n in worlds]
    fit = fit_law("amdahl", worlds, speedups)
    assert fit.ci_low < 0.05 < fit.ci_high
    assert abs(fit.serial_fraction - 0.05) < 0.01
    assert fit.dof == len(worlds) - 1 and fit.stderr > 0


def test_amdahl_relative_to_a_baseline_above_one():
    # worlds 2..16 with speedups relative to world 2 (n = N / 2)
    worlds = [2, 4, 8, 16]
    fit = fit_law("amdahl", worlds, [amdahl_speedup(w / 2, 0.2) for w in worlds])
    assert fit.base_world == 2 and fit.serial_fraction == pytest.approx(0.2, abs=1e-6)
    assert fit.speedup(32) == pytest.approx(1 / (0.2 + 0.8 / 16))
    assert fit.label_for(8) == FITTED and fit.label_for(32) == EXTRAPOLATED


def test_gustafson_fit_recovers_the_serial_fraction():
    worlds = [1, 2, 4, 8]
    fit = fit_law("gustafson", worlds, [gustafson_speedup(n, 0.3) for n in worlds])
    assert fit.serial_fraction == pytest.approx(0.3, abs=1e-6) and fit.matches_mode == WEAK
    assert gustafson_speedup(4, 0.3) == pytest.approx(4 - 0.3 * 3)


def test_karp_flatt_by_hand():
    assert karp_flatt(1.6, 2) == pytest.approx(0.25)  # (1/1.6 - 1/2) / (1 - 1/2) = 0.125 / 0.5
    assert karp_flatt(3.0, 4) == pytest.approx(1 / 9)  # (1/3 - 1/4) / (3/4)
    assert karp_flatt(2.0, 2) == pytest.approx(0.0)  # linear speedup: no serial part
    assert karp_flatt(1.0, 1) is None
    pts = karp_flatt_points([2, 4, 8], [1.0, 1.6, 3.0])  # relative to world 2: n = 1, 2, 4
    assert pts[0] == (2, None) and pts[1][1] == pytest.approx(0.25) and pts[2][1] == pytest.approx(1 / 9)
    # Amdahl's curve has the same Karp-Flatt value at every n: its serial fraction
    for n in (2, 4, 8, 64):
        assert karp_flatt(amdahl_speedup(n, 0.07), n) == pytest.approx(0.07)


def test_bad_law_input():
    with pytest.raises(ModelError):
        fit_law("amdahl", [1, 1], [1.0, 1.0])
    with pytest.raises(ModelError):
        fit_law("amdahl", [1, 2], [1.0, -2.0])
    with pytest.raises(ValueError, match="law"):
        fit_law("moore", [1, 2], [1.0, 2.0])


def _data(mode: str, step_of_world: dict[int, list[float]], batch: int = 8) -> ScalingData:
    sizes = []
    for w, steps in step_of_world.items():
        gb = batch * w if mode == WEAK else batch
        runs = [RunPoint(run=f"1x{w}-r{i}", world_size=w, time_per_step_s=t, se_s=0.001 * t, throughput=gb / t,
                         global_batch=gb) for i, t in enumerate(steps)]
        sizes.append(SizeData(world_size=w, nodes=1, nproc=w, runs=runs))
    return ScalingData(mode=mode, sample_unit="images", sizes=sizes)


def test_step_model_ring_basis_recovers_compute_and_exposure():
    # T(N) = 0.1 s + 0.02 s x 2(N-1)/N, weak scaling
    truth = {w: 0.1 + 0.02 * 2 * (w - 1) / w for w in (1, 2, 4, 8)}
    data = _data(WEAK, {w: [t, t] for w, t in truth.items()})
    model = fit_step_model(data, [1, 2])
    assert model.compute_s == pytest.approx(0.1) and model.k == pytest.approx(0.02, rel=1e-6)
    p = model.predict(8)
    assert p.step_s == pytest.approx(truth[8], rel=1e-6)
    assert p.throughput == pytest.approx(64 / truth[8], rel=1e-6)
    assert p.label == EXTRAPOLATED and model.predict(2).label == FITTED
    assert p.throughput_low <= p.throughput <= p.throughput_high
    v = validate(data, [1, 2])
    assert [pt.world_size for pt in v.points] == [4, 8]
    assert all(abs(pt.error_pct) < 1e-4 for pt in v.points)


def test_step_model_strong_scaling_divides_compute():
    # fixed global batch: T(N) = 0.4 / N + 0.01 x 2(N-1)/N
    truth = {w: 0.4 / w + 0.01 * 2 * (w - 1) / w for w in (1, 2, 4)}
    data = _data(STRONG, {w: [t] for w, t in truth.items()}, batch=32)
    model = fit_step_model(data, [1, 2])
    assert model.predict(4).step_s == pytest.approx(truth[4], rel=1e-6)
    assert model.predict(4).throughput == pytest.approx(32 / truth[4], rel=1e-6)


def test_step_model_with_a_collective_fit_recovers_the_exposed_share():
    # all_reduce of 4 MiB per step; alpha-beta fit at world 2: t = 1e-4 + bytes x 1e-9; ring-carried to
    # other world sizes by the collective model. Half of the collective time is exposed.
    fit = AlphaBetaFit(op="all_reduce", world_size=2, alpha_s=1e-4, beta_s_per_byte=1e-9, alpha_stderr_s=0.0,
                       beta_stderr_s_per_byte=0.0, r_squared=1.0, rel_rms_error=0.0, max_rel_error=0.0, points=8,
                       min_bytes=1024, max_bytes=2**24)
    comm = CollectiveModel([fit])
    ops = {"all_reduce": {"calls": 2, "payload_bytes": 4 * 2**20}}
    comm_s = {w: 2 * comm.predict_time("all_reduce", 2 * 2**20, w).seconds for w in (2, 4)}
    truth = {1: 0.05, 2: 0.05 + 0.5 * comm_s[2], 4: 0.05 + 0.5 * comm_s[4]}
    data = _data(WEAK, {w: [t] for w, t in truth.items()})
    for s in data.sizes:
        s.comm_ops = ops
    model = fit_step_model(data, [1, 2], comm_model=comm)
    assert model.k == pytest.approx(0.5, rel=1e-6) and model.overlap == pytest.approx(0.5, rel=1e-6)
    assert model.predict(4).step_s == pytest.approx(truth[4], rel=1e-6)


def test_step_model_needs_measured_compute():
    data = _data(WEAK, {2: [0.1], 4: [0.12]})
    with pytest.raises(ModelError, match="compute"):
        fit_step_model(data)
    with pytest.raises(ModelError, match="outside"):
        validate(_data(WEAK, {1: [0.1], 2: [0.11]}), [1, 2])


def test_link_model_is_a_ring_over_the_link_rate():
    from trainscale.analysis.models import link_model

    rate = 100e6 / 8  # 100 Mbit/s in bytes per second
    model = link_model(rate)
    nbytes = 6 * 2**20
    # ring all-reduce: every rank sends and receives 2(N-1)/N of the buffer over its link
    for world in (2, 4, 8):
        assert model.predict_time("all_reduce", nbytes, world).seconds == pytest.approx(2 * (world - 1) / world
                                                                                      * nbytes / rate)
        assert model.predict_time("all_gather", nbytes, world).seconds == pytest.approx((world - 1) / world
                                                                                      * nbytes / rate)
    with pytest.raises(ModelError):
        link_model(0.0)
