"""Parallel layouts before launch: degrees, model shapes and microbatches are checked against the
world size; bad values give exit code 2 with one line naming them, and nothing is written."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from trainscale.analysis.mfu import mfu, peak_flops
from trainscale.analysis.strategies import theoretical_bubble, wire_bytes
from trainscale.scaling.strategies.mesh import Degrees, Layout, MeshConfig, resolve_degrees
from trainscale.scaling.strategies.registry import STRATEGIES
from trainscale.scaling.resolve import resolve
from trainscale.scaling.spec import SpecError
from trainscale.scaling.orchestration.sweep import plan

GPT = {"workload": "gpt"}
TINY = ["model.preset=tiny", "model.tie_embeddings=false"]


@pytest.mark.parametrize("parallel, world, mesh, expected", [
    ("ddp", 4, MeshConfig(), Degrees(4, 1, 1)),
    ("fsdp", 2, MeshConfig(dp=2), Degrees(2, 1, 1)),
    ("tp", 4, MeshConfig(), Degrees(1, 4, 1)),
    ("tp", 4, MeshConfig(tp=2), Degrees(2, 2, 1)),
    ("tp", 4, MeshConfig(dp=2), Degrees(2, 2, 1)),
    ("pp", 8, MeshConfig(pp=4), Degrees(2, 1, 4)),
    ("pp", 4, MeshConfig(dp=2, pp=2), Degrees(2, 1, 2)),
])
def test_degrees_follow_from_world_size(parallel, world, mesh, expected):
    assert resolve_degrees(STRATEGIES.get(parallel).dims, parallel, world, mesh) == expected


def test_rank_layout_matches_device_mesh_order():
    # init_device_mesh("cpu", (pp, dp)) puts rank r at pp = r // dp, dp = r % dp; (dp, tp) at dp = r // tp.
    d = Degrees(dp=2, tp=1, pp=2)
    assert [(Layout(d, r).dp_rank, Layout(d, r).pp_rank) for r in range(4)] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [Layout(d, r).holds_loss for r in range(4)] == [False, False, True, True]  # last stage
    t = Degrees(dp=2, tp=2, pp=1)
    assert [(Layout(t, r).dp_rank, Layout(t, r).tp_rank) for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [Layout(t, r).holds_loss for r in range(4)] == [True, False, True, False]  # tp rank 0


def test_global_batch_is_per_data_parallel_rank_times_dp():
    spec = resolve(flags={**GPT, "parallel": "tp", "nproc": 4, "batch_size": 3, "mesh": {"tp": 2}}, sets=TINY)
    assert spec.degrees == Degrees(2, 2, 1) and spec.global_batch == 6
    assert resolve(flags={**GPT, "parallel": "pp", "nproc": 2, "batch_size": 8}, sets=TINY).global_batch == 8


def _write_tokens(path: Path, n_bytes: int) -> str:
    path.write_bytes(np.zeros(n_bytes, dtype=np.uint8).tobytes())
    return str(path)


@pytest.mark.parametrize("flags, sets, needle", [
    ({"parallel": "ddp", "nproc": 4, "mesh": {"tp": 2}}, [], "mesh.tp (--tp) is 2 but parallel 'ddp' has no tp dimension"),
    ({"parallel": "tp", "nproc": 4, "mesh": {"tp": 3}}, [], "mesh.tp (--tp) 3 does not divide the world size 4"),
    ({"parallel": "fsdp", "nproc": 4, "mesh": {"dp": 2}}, [], "degrees dp 2 x tp 1 x pp 1 = 2 do not match the world size 4"),
    ({"parallel": "tp", "nproc": 4, "mesh": {"dp": 2, "tp": 4}}, [], "degrees dp 2 x tp 4 x pp 1 = 8 do not match the world size 4"),
    ({"parallel": "tp", "nproc": 4, "mesh": {"dp": -1}}, [], "mesh.dp (--dp) must be 0 (derived) or more, got -1"),
    ({"parallel": "tp", "nproc": 2}, ["model.n_head=3", "model.d_model=48"],
     "model.n_head (3) is not divisible by the tensor-parallel degree tp (2)"),
    ({"parallel": "tp", "nproc": 4}, ["model.vocab_size=250"], "model.vocab_size (250) is not divisible by the tensor-parallel degree tp (4)"),
    ({"parallel": "tp", "nproc": 1}, [], "parallel 'tp' needs a tensor-parallel degree of at least 2, got tp 1"),
    ({"parallel": "pp", "nproc": 2}, ["model.n_layer=3"], "model.n_layer (3) is not divisible by the pipeline degree pp (2)"),
    ({"parallel": "pp", "nproc": 2, "batch_size": 8, "pipeline": {"microbatches": 3}}, [],
     "pipeline.microbatches (3) does not divide the per-rank batch size (8)"),
    ({"parallel": "pp", "nproc": 4, "batch_size": 8, "pipeline": {"microbatches": 2}}, [],
     "pipeline.microbatches (2) must be at least the number of stages pp (4) for the 1F1B schedule"),
    ({"parallel": "pp", "nproc": 2, "pipeline": {"microbatches": 0}}, [], "pipeline.microbatches must be at least 1, got 0"),
    ({"parallel": "pp", "nproc": 2, "pipeline": {"schedule": "zigzag"}}, [], "unknown pipeline.schedule 'zigzag'"),
    ({"parallel": "pp", "nproc": 2}, ["model.tie_embeddings=true"], "model.tie_embeddings is true but pipelining"),
    ({"parallel": "ddp"}, ["model.preset=huge"], "unknown model.preset 'huge'"),
    ({"parallel": "ddp"}, ["model.d_model=30"], "model.d_model (30) is not divisible by model.n_head (4)"),
    ({"parallel": "ddp"}, ["data.token_dtype=float16"], "unknown data.token_dtype 'float16'"),
])
def test_bad_layouts_name_the_value(flags, sets, needle):
    with pytest.raises(SpecError) as e:
        resolve(flags={**GPT, **flags}, sets=TINY + sets)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("parallel, needle", [("tp", "parallel 'tp' does not support workload 'resnet50' (it has no tensor-parallel plan)"),
                                              ("pp", "parallel 'pp' does not support workload 'resnet50' (it has no pipeline split)")])
def test_strategies_that_do_not_support_the_workload(parallel, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        resolve(flags={"workload": "resnet50", "parallel": parallel, "nproc": 2})


def test_zero_without_deepspeed_is_refused_before_launch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(SpecError, match="parallel 'zero2' needs DeepSpeed, which is not installed"):
        resolve(flags={**GPT, "parallel": "zero2", "nproc": 2}, sets=TINY)


@pytest.mark.parametrize("n_bytes, needle", [(101, "has 101 bytes, not a whole number of uint16 tokens"),
                                             (40, "has 20 tokens, fewer than one sequence (model.seq_len + 1 = 33)")])
def test_bad_token_files(tmp_path: Path, n_bytes, needle):
    path = _write_tokens(tmp_path / "train.bin", n_bytes)
    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        resolve(flags=GPT, sets=TINY + ["data.kind=real", f"data.path={path}"])


def test_strategy_sweep_plan_gives_every_strategy_the_global_batch():
    bases = [resolve(flags={**GPT, "parallel": p, "nproc": 4, "batch_size": 4}, sets=TINY) for p in ("ddp", "tp")]
    points = plan(bases, [2, 4], [1], "strong", 1)
    assert [(pt.name, pt.spec.batch_size, pt.spec.global_batch) for pt in points] == [
        ("ddp-1x2-r0", 4, 8), ("tp-1x2-r0", 8, 8), ("ddp-1x4-r0", 2, 8), ("tp-1x4-r0", 8, 8)]


def test_bubble_wire_bytes_and_mfu_definitions():
    assert theoretical_bubble(2, 4) == pytest.approx(1 / 5)
    assert theoretical_bubble(4, 4) == pytest.approx(3 / 7)
    assert wire_bytes({"kind": "all_reduce", "payload_bytes": 1000, "group_size": 4}) == pytest.approx(1500)
    assert wire_bytes({"kind": "all_gather", "payload_bytes": 1000, "group_size": 4}) == pytest.approx(750)
    assert wire_bytes({"kind": "recv", "payload_bytes": 1000, "group_size": 2}) == 0
    assert peak_flops("NVIDIA H100 80GB HBM3")[0] == pytest.approx(67e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16")[0] == pytest.approx(312e12)
    m = mfu(1e9, 1000.0, 2, "NVIDIA H100 80GB HBM3")
    assert m["value"] == pytest.approx(1e12 / (2 * 67e12))
    for name in ("cpu: AMD EPYC", "NVIDIA GH200 480GB", "Some Future GPU"):
        out = mfu(1e9, 1000.0, 2, name)
        assert out["value"] is None and out["reason"].startswith("unavailable: device")


@pytest.mark.parametrize("args, needle", [
    (["run", "--workload", "gpt", "--parallel", "tp", "--nproc", "4", "--tp", "3"],
     "mesh.tp (--tp) 3 does not divide the world size 4"),
    (["run", "--workload", "resnet50", "--parallel", "pp", "--nproc", "2"], "does not support workload 'resnet50'"),
    (["run", "--workload", "gpt", "--parallel", "pp", "--nproc", "2", "--batch-size", "6", "--microbatches", "4",
      "--set", "model.tie_embeddings=false"], "pipeline.microbatches (4) does not divide the per-rank batch size (6)"),
    (["sweep", "--workload", "gpt", "--parallel", "ddp,tp", "--nproc", "2,4", "--set", "model.n_head=3",
      "--set", "model.d_model=48"], "model.n_head (3) is not divisible by the tensor-parallel degree tp (4)"),
])
def test_cli_bad_layouts_exit_2_with_one_line(cli, tmp_path: Path, args, needle):
    out = tmp_path / "results"
    proc = cli(*args, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not out.exists()


def test_collective_names_and_payload_conventions():
    import torch

    from trainscale.scaling.runtime.measure import classify, payload_bytes

    names = {"_reduce_scatter_base": "reduce_scatter", "allreduce": "all_reduce", "_allgather_base": "all_gather",
             "all_gather_into_tensor": "all_gather", "reduce": "reduce", "recv": "recv", "send": "send",
             "alltoall_base": "all_to_all", "broadcast": "broadcast", "barrier": None}
    assert {n: classify(n) for n in names} == names
    x, out = torch.zeros(10), torch.zeros(40)
    assert payload_bytes("_c10d_functional", "all_gather", (x, 4, "g"), 4) == 160  # gathered output
    assert payload_bytes("c10d", "all_gather", (out, x), 4) == 160
    assert payload_bytes("c10d", "reduce_scatter", (x, out), 4) == 160  # input before scattering
    assert payload_bytes("c10d", "all_reduce", ([x, x],), 4) == 80
