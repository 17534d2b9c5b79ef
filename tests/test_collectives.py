"""Collective metrics by hand: bus factors, algbw/busbw, aggregation of raw timings, the alpha-beta
fit on synthetic timings with known parameters, predictions, and the correctness check's logic."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainscale.analysis.collectives import (AlphaBetaFit, CollectiveModel, algbw, bus_factor, busbw,
                                             fit_alpha_beta, size_result)
from trainscale.scaling.comm.bench import (collective, corrupt_one_element, count_wrong, fill_check_inputs,
                                           make_buffers)
from trainscale.scaling.comm.spec import CommSpec, parse_ops, parse_size, pattern_modulus, validate
from trainscale.scaling.runtime.comm_timing import union_length
from trainscale.scaling.spec import SpecError


@pytest.mark.parametrize("op, n, factor", [
    ("all_reduce", 2, 1.0), ("all_reduce", 4, 1.5), ("all_reduce", 8, 1.75), ("all_reduce", 1, 0.0),
    ("all_gather", 4, 0.75), ("reduce_scatter", 8, 0.875), ("all_to_all", 2, 0.5),
    ("broadcast", 8, 1.0), ("scatter", 4, 0.75), ("send_recv", 2, 1.0),
])
def test_bus_factors_are_method_md(op, n, factor):
    assert bus_factor(op, n) == pytest.approx(factor)


def test_algbw_and_busbw_by_hand():
    # 64 MiB all_reduce in 0.1 s over 4 ranks: algbw = 67108864 / 0.1 / 1e9, busbw = that x 2*3/4
    assert algbw(64 * 2**20, 0.1) == pytest.approx(0.67108864)
    assert busbw("all_reduce", 64 * 2**20, 0.1, 4) == pytest.approx(1.00663296)
    # 1 GB all_gather in 2 s over 8 ranks: 0.5 GB/s algbw, 0.4375 GB/s busbw
    assert busbw("all_gather", 1e9, 2.0, 8) == pytest.approx(0.4375)
    assert busbw("broadcast", 3e9, 1.5, 16) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown collective 'gather'"):
        bus_factor("gather", 2)


def test_size_result_takes_the_slowest_rank_and_sums_wrong_elements():
    ms = 1e-3
    r = size_result("all_reduce", 2, 4000, 1000, "float32", 0,
                    {0: [1 * ms, 2 * ms, 3 * ms], 1: [3 * ms, 3 * ms, 3 * ms]}, {0: 0, 1: 2})
    assert r.time_s == pytest.approx(3 * ms) and r.slowest_rank == 1
    assert r.per_rank_mean_s == pytest.approx([2 * ms, 3 * ms])
    assert r.p50_s == pytest.approx(3 * ms) and r.max_s == pytest.approx(3 * ms)  # per-iteration max over ranks
    assert r.algbw_gbps == pytest.approx(4000 / 3e-3 / 1e9)
    assert r.busbw_gbps == pytest.approx(r.algbw_gbps)  # 2(n-1)/n = 1 at n = 2
    assert r.wrong == 2 and r.redop == "sum" and r.root == -1
    with pytest.raises(ValueError, match="disagree"):
        size_result("all_reduce", 2, 4000, 1000, "float32", 0, {0: [ms], 1: [ms, ms]}, {0: 0, 1: 0})


SIZES = [2**k for k in range(10, 27)]  # 1K .. 64M


def test_alpha_beta_fit_recovers_known_parameters_exactly():
    alpha, beta = 50e-6, 1 / 1.2e9
    fit = fit_alpha_beta("all_reduce", 2, SIZES, [alpha + beta * m for m in SIZES])
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=1e-6)
    assert fit.asymptotic_algbw_gbps == pytest.approx(1.2, rel=1e-6)
    assert fit.r_squared == pytest.approx(1.0) and fit.max_rel_error < 1e-6
    assert fit.points == len(SIZES) and (fit.min_bytes, fit.max_bytes) == (2**10, 2**26)


def test_alpha_beta_fit_recovers_parameters_under_noise_and_reports_the_fit_quality():
    rng = np.random.default_rng(7)
    alpha, beta = 500e-6, 1 / 0.9e9
    noisy = [(alpha + beta * m) * (1 + rng.normal(0, 0.03)) for m in SIZES for _ in range(3)]
    fit = fit_alpha_beta("all_gather", 4, [m for m in SIZES for _ in range(3)], noisy)
    assert fit.alpha_s == pytest.approx(alpha, rel=0.1)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=0.05)
    assert 0 < fit.rel_rms_error < 0.1 and fit.r_squared > 0.99
    assert fit.alpha_stderr_s > 0 and fit.beta_stderr_s_per_byte > 0
    # A fit of pure noise around a constant is recognisably bad.
    flat = fit_alpha_beta("all_gather", 4, SIZES, [1e-3 * (1 + rng.normal(0, 0.5) ** 2) for _ in SIZES])
    assert flat.r_squared < 0.9


def test_predictions_are_labelled_and_carry_to_other_world_sizes_with_the_ring_model():
    alpha, beta = 100e-6, 1e-9
    fit = fit_alpha_beta("all_reduce", 4, SIZES, [alpha + beta * m for m in SIZES])
    model = CollectiveModel.from_results({"fits": [fit.to_dict()]})
    inside = model.predict_time("all_reduce", 2**20, 4)
    assert inside.label == "fitted" and inside.seconds == pytest.approx(alpha + beta * 2**20, rel=1e-6)
    beyond = model.predict_time("all_reduce", 2**30, 4)
    assert beyond.label == "extrapolated" and "outside" in beyond.basis
    # world 8: alpha x 14/6 ring steps, beta x (2*7/8) / (2*3/4) bus factor
    other = model.predict_time("all_reduce", 2**20, 8)
    assert other.label == "extrapolated"
    assert other.seconds == pytest.approx(alpha * 14 / 6 + beta * (1.75 / 1.5) * 2**20, rel=1e-6)
    with pytest.raises(KeyError, match="no fit for 'broadcast'"):
        model.predict_time("broadcast", 1024, 4)
    assert AlphaBetaFit.from_dict(fit.to_dict()) == fit


def test_union_of_collective_intervals():
    assert union_length([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == pytest.approx(4.0)
    assert union_length([(1.0, 2.0), (0.0, 5.0)]) == pytest.approx(5.0)
    assert union_length([]) == 0.0


def test_sizes_ops_and_validation():
    assert [parse_size(s, "-b") for s in ("512", "1K", "8KB", "64M", "1g")] == [512, 1024, 8192, 64 * 2**20, 2**30]
    with pytest.raises(SpecError, match="-b must be a size like 1K, 64M or 1G, got '1X'"):
        parse_size("1X", "-b")
    assert parse_ops("all")[0] == "all_reduce" and len(parse_ops("all")) == 7
    assert parse_ops("send-recv,all_reduce") == ["send_recv", "all_reduce"]
    assert parse_ops("alltoall,sendrecv,allreduce") == ["all_to_all", "send_recv", "all_reduce"]  # nccl-tests names
    assert CommSpec(min_bytes=1024, max_bytes=8192, step_factor=2).sizes() == [1024, 2048, 4096, 8192]
    assert pattern_modulus("all_reduce", "bfloat16", 128) == 3  # sums up to 2 x 128 = 256: exact in bf16
    with pytest.raises(SpecError, match="cannot hold an exact sum over 256 ranks"):
        validate(CommSpec(dtype="int8", nproc=[256]))


def _reference(op: str, inputs: list[torch.Tensor], rank: int, world: int, root: int) -> torch.Tensor:
    """What each op must return on `rank`, written from its definition (independent of the checker)."""
    if op == "all_reduce":
        return torch.stack(inputs).sum(0).to(inputs[0].dtype)
    if op == "all_gather":
        return torch.cat(inputs)
    if op == "reduce_scatter":
        return torch.stack(inputs).sum(0).to(inputs[0].dtype).chunk(world)[rank]
    if op == "broadcast":
        return inputs[root].clone()
    if op == "scatter":
        return inputs[root].chunk(world)[rank].clone()
    if op == "all_to_all":
        return torch.cat([inp.chunk(world)[rank] for inp in inputs])
    if op == "send_recv":
        return inputs[(rank - 1) % world].clone()
    raise AssertionError(op)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "scatter", "all_to_all",
                                "send_recv"])
def test_the_check_passes_correct_results_and_counts_each_wrong_element(op, dtype):
    world, root = 3, 1
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.uint8: "uint8"}[dtype]
    modulus = pattern_modulus(op, name, world)
    bufs = [make_buffers(op, 1200, world, dtype, torch.tensor([], dtype=dtype).element_size(), torch.device("cpu"))
            for _ in range(world)]
    for r, b in enumerate(bufs):
        fill_check_inputs(b, r, world, root, modulus)
    inputs = [b.inp.clone() for b in bufs]
    for r, b in enumerate(bufs):
        b.out.copy_(_reference(op, inputs, r, world, root))
        assert count_wrong(b, r, world, root, modulus) == 0
    corrupt_one_element(bufs[2])
    assert count_wrong(bufs[2], 2, world, root, modulus) == 1
    bufs[0].out.view(-1)[-3:] = modulus  # an untouched output keeps the sentinel
    assert count_wrong(bufs[0], 0, world, root, modulus) == 3


def test_an_op_that_did_nothing_fails_the_check():
    b = make_buffers("broadcast", 400, 2, torch.float32, 4, torch.device("cpu"))
    fill_check_inputs(b, 1, 2, 0, 101)  # rank 1 is not the root: its buffer must be overwritten
    assert count_wrong(b, 1, 2, 0, 101) == b.out.numel()
    assert callable(collective(b, 1, 2, 0))
