"""Numerical parity: the tiny gpt trained by each parallel strategy on 2 or 4 gloo processes gives the
same per-step losses as one process training the same global batch from the same seed; and the
strategy-comparison sweep (ddp, fsdp, tp, pp at 2 and 4 processes) with its report.

Real runs through the CLI (torchrun, gloo, CPU), all on a token file the test writes (flat uint16
ids, nanoGPT's layout), so the real-data path is the one under test. ddp, fsdp, tp and pp with 1F1B
are checked inside the sweep (at 2 and 4 processes, strong scaling keeps the global batch at 8);
GPipe, the 2D layouts and the ZeRO stages in runs of their own. The loss of a step is the mean over data-parallel
replicas of the loss their loss-holding rank recorded (analysis.parallel.global_losses). Tolerance:
ATOL = 1e-5 on losses near 5.5, i.e. about 20 float32 ulps (the ulp there is 4.8e-7): what changing
the order of float32 reductions can do over a few steps. Differences measured here are <= 1e-6. A
real bug is far outside it: the updates move these losses by 1e-3 to 4e-2 per step, and doubling the
gradients (e.g. summing instead of averaging over ranks) moves them by 2e-3 to 3e-2.

Each run also has its communication checked against what the strategy must move, from the model's
own sizes: DDP all-reduces every gradient once, FSDP reduce-scatters them, pipeline stages send
activations and gradients of exactly B x T x d floats, Megatron TP all-reduces 6 L + 2 times.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainscale.scaling.results import schema
from trainscale.analysis.strategies import global_losses
from trainscale.scaling.results.sample_files import read_rank_infos
from trainscale.analysis.runs import load_rank_samples
from trainscale.workloads.gpt import GPTConfig
from trainscale.workloads.gpt_model import GPT
from trainscale.workloads.tokens import SyntheticTokens

from .conftest import read_json

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed compiles its CPU communication op on first use (30-130 s here): kept in the workspace.
ENV = {"TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
ATOL = 1e-5
GLOBAL_BATCH, STEPS, WARMUP = 8, 5, 2  # the probe (collectives, state) is step 1, after a first update
COMMON = ["--workload", "gpt", "--steps", str(STEPS), "--warmup", str(WARMUP), "--set", "model.preset=tiny",
          "--set", "model.tie_embeddings=false", "--set", "optim.name=sgd", "--set", "optim.lr=0.1",
          "--set", "optim.momentum=0.9"]
CFG = GPTConfig(preset="tiny", tie_embeddings=False)
PARAM_BYTES = 4 * sum(p.numel() for p in GPT(CFG.vocab_size, CFG.seq_len, CFG.n_layer, CFG.n_head, CFG.d_model,
                                             tie_embeddings=False).parameters())
ACTIVATION_BYTES = 4 * CFG.seq_len * CFG.d_model  # one sequence's hidden states, float32

CASES = {  # name: (processes, arguments, layout); ddp, fsdp, tp and pp-1f1b run in the sweep test
    "pp-gpipe": (2, ["--parallel", "pp", "--batch-size", "8", "--pp-schedule", "gpipe", "--microbatches", "4"], "dp1xpp2"),
    "dp2xtp2": (4, ["--parallel", "tp", "--tp", "2", "--batch-size", "4"], "dp2xtp2"),
    "dp2xpp2": (4, ["--parallel", "pp", "--pp", "2", "--batch-size", "4", "--pp-schedule", "1f1b",
                    "--microbatches", "2"], "dp2xpp2"),
    "zero1": (2, ["--parallel", "zero1", "--batch-size", "4"], "dp2"),
    "zero2": (2, ["--parallel", "zero2", "--batch-size", "4"], "dp2"),
    "zero3": (2, ["--parallel", "zero3", "--batch-size", "4"], "dp2"),
}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    """64 sequences of the synthetic progressions (learnable, so updates move the loss), written as
    one flat uint16 array: item i of the file is sequence i."""
    seqs = SyntheticTokens(64, CFG.seq_len, CFG.vocab_size, seed=5)
    flat = np.concatenate([seqs[i][0].numpy() for i in range(64)] + [seqs[63][1][-1:].numpy()]).astype(np.uint16)
    path = tmp_path_factory.mktemp("tokens") / "train.bin"
    flat.tofile(path)
    return path


def data_args(token_file: Path) -> list[str]:
    return ["--set", "data.kind=real", "--set", f"data.path={token_file}"]


def launch(cli, out: Path, nproc: int, args: list[str], timeout: float = 300) -> Path:
    proc = cli("run", *COMMON, "--nproc", str(nproc), *args, "--out", str(out), "--timeout", str(timeout - 20),
               timeout=timeout, env=ENV)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    run_dir = Path(lines[-1])
    summary = read_json(run_dir / schema.SUMMARY)
    assert proc.returncode == 0 and summary["status"] == "ok", summary.get("reason") or proc.stderr
    return run_dir


@pytest.fixture(scope="module")
def baseline(cli_module, tmp_path_factory, token_file) -> np.ndarray:
    run_dir = launch(cli_module, tmp_path_factory.mktemp("baseline"), 1,
                     ["--parallel", "ddp", "--batch-size", str(GLOBAL_BATCH), *data_args(token_file)])
    losses = global_losses(run_dir)
    assert np.ptp(losses) > 1e-3  # different batches, moving weights: a comparison with teeth
    return losses


@pytest.fixture(scope="module")
def cli_module():
    from .conftest import run_cli

    return run_cli


def ops_of(info: dict, kind: str) -> list[dict]:
    return [o for o in info["comm"]["ops"] if o["kind"] == kind]


def payload(info: dict, kind: str) -> int:
    return sum(o["payload_bytes"] for o in ops_of(info, kind))


@pytest.mark.parametrize("name", list(CASES))
def test_losses_equal_one_process(cli_module, baseline, token_file, tmp_path: Path, name: str):
    nproc, args, layout = CASES[name]
    run_dir = launch(cli_module, tmp_path, nproc, [*args, *data_args(token_file)],
                     timeout=600 if name.startswith("zero") else 300)
    check_run(run_dir, name, nproc, args, layout, baseline)


def check_run(run_dir: Path, name: str, nproc: int, args: list[str], layout: str, baseline: np.ndarray) -> None:
    losses = global_losses(run_dir)
    assert losses.shape == baseline.shape == (STEPS,)
    np.testing.assert_allclose(losses, baseline, rtol=0, atol=ATOL, err_msg=f"{name} vs 1 process")

    summary = read_json(run_dir / schema.SUMMARY)
    par = summary["parallelism"]
    assert summary["global_batch"] == GLOBAL_BATCH and par["layout"] == layout and summary["data_kind"] == "real"
    samples = load_rank_samples(run_dir)
    tokens_per_step = np.sum([s["samples"] for s in samples.values()], axis=0)
    assert (tokens_per_step == GLOBAL_BATCH * CFG.seq_len).all()  # each replica's tokens counted once

    infos = read_rank_infos(run_dir)
    assert len(infos) == nproc
    for rank, info in infos.items():
        assert info["comm"]["probe_step"] == WARMUP - 1 and info["comm"]["payload_bytes"] > 0, (rank, info["comm"])
        state = info["optimizer_state_bytes"]
        assert state["grads"] == state["params"] and state["optimizer_state"] == state["params"]  # SGD momentum
        assert info["memory"]["peak_bytes"] > 0
    check_communication(name, infos)
    bubble = par["pipeline_bubble"]
    if name.startswith("pp") or name == "dp2xpp2":
        micro, stages = int(args[args.index("--microbatches") + 1]), par["degrees"]["pp"]
        assert bubble["theoretical"] == pytest.approx((stages - 1) / (micro + stages - 1))
        assert all(0 <= b < 1 for b in bubble["measured_per_stage"].values())
    else:
        assert bubble is None
    assert par["mfu"]["value"] is None and par["mfu"]["reason"].startswith("unavailable: device 'cpu:")


def check_communication(name: str, infos: dict[int, dict]) -> None:
    state = {r: i["optimizer_state_bytes"]["params"] for r, i in infos.items()}
    for rank, info in infos.items():
        if name == "ddp":
            assert payload(info, "all_reduce") == PARAM_BYTES and state[rank] == PARAM_BYTES
        elif name == "fsdp":
            dp = info["parallel"]["dp"]
            assert payload(info, "reduce_scatter") == PARAM_BYTES and state[rank] == PARAM_BYTES // dp
            assert payload(info, "all_gather") >= PARAM_BYTES  # forward, and again in backward after resharding
        elif name == "tp":
            calls = sum(o["calls"] for o in ops_of(info, "all_reduce"))
            # forward: attn.proj and mlp.proj per block + embedding; backward: q, k, v and mlp.fc input
            # gradients per block + the head's input gradient.
            assert calls == 6 * CFG.n_layer + 2
            assert payload(info, "all_gather") == GLOBAL_BATCH * CFG.seq_len * CFG.vocab_size * 4  # the logits
        elif name.startswith("pp"):
            # Activations go forward, their gradients back: inner stages do both.
            stage, stages = info["parallel"]["pp_rank"], info["parallel"]["pp"]
            ends = (stage > 0) + (stage < stages - 1)
            assert payload(info, "send") == payload(info, "recv") == ends * GLOBAL_BATCH * ACTIVATION_BYTES
        elif name == "dp2xpp2":
            assert payload(info, "send") == 4 * ACTIVATION_BYTES  # this replica's 4 sequences
            assert payload(info, "reduce_scatter") > 0  # FSDP over the data-parallel pair
        elif name == "dp2xtp2":
            assert payload(info, "reduce_scatter") > 0 and payload(info, "all_reduce") > 0
        elif name.startswith("zero"):
            assert state[rank] == PARAM_BYTES // 2  # the optimizer steps this rank's fp32 partition
            assert payload(info, "all_gather") >= PARAM_BYTES  # updated (or, ZeRO-3, needed) parameters gathered
    if name in ("tp", "dp2xtp2", "dp2xpp2"):
        assert sum(state.values()) < len(state) * PARAM_BYTES  # split model: no rank holds all of it


SWEEP = ("ddp", "fsdp", "tp", "pp")


def test_strategy_sweep_at_2_and_4_processes(cli_module, baseline, token_file, tmp_path: Path):
    proc = cli_module("sweep", *COMMON, "--parallel", ",".join(SWEEP), "--nproc", "2,4", "--scaling", "strong",
                      "--batch-size", "4", "--microbatches", "4", *data_args(token_file), "--out", str(tmp_path),
                      timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = Path(proc.stdout.strip().splitlines()[-1])
    index = read_json(sweep_dir / schema.SWEEP_INDEX)
    assert [(r["name"], r["status"]) for r in index["runs"]] == [
        (f"{s}-1x{n}-r0", "ok") for n in (2, 4) for s in SWEEP]  # interleaved: every strategy at a size in turn
    layouts = {"ddp": "dp{n}", "fsdp": "dp{n}", "tp": "dp1xtp{n}", "pp": "dp1xpp{n}"}
    for r in index["runs"]:
        n, s = r["world_size"], r["parallel"]
        args = ["--microbatches", "4"] if s == "pp" else []
        check_run(sweep_dir / r["path"], s, n, args, layouts[s].format(n=n), baseline)

    report_dir = sweep_dir / "report"
    rep = read_json(report_dir / "report.json")
    rows = {(r["parallel"], r["world_size"]): r for r in rep["strategies"]}
    assert sorted(rows) == sorted((s, n) for s in SWEEP for n in (2, 4))
    for row in rows.values():
        assert row["global_batch"] == GLOBAL_BATCH * CFG.seq_len  # tokens: the same for every strategy
        assert row["throughput"] > 0 and row["peak_memory_bytes"] > 0 and row["comm_payload_bytes"] > 0
        assert row["mfu"] is None and "not in the peak-FLOPs table" in row["mfu_note"]
    for n in (2, 4):
        assert rows[("fsdp", n)]["optimizer_state_bytes"] == rows[("ddp", n)]["optimizer_state_bytes"] / n
        assert rows[("pp", n)]["bubble_theoretical"] == pytest.approx((n - 1) / (4 + n - 1))
        assert rows[("ddp", n)]["bubble_measured"] is None
    assert not any("different global batches" in w for w in rep["warnings"])
    markdown = (report_dir / "report.md").read_text()
    assert "## Parallel strategies: throughput, memory, communication" in markdown
    assert markdown.count("| dp1xpp") == 2 and "![strategies](strategies.png)" in markdown
    assert (report_dir / "strategies.png").stat().st_size > 20000
    for s in SWEEP:  # one scaling report per strategy, linked from the comparison
        assert f"]({s}/report.md)" in markdown and (report_dir / s / "report.md").exists()
        assert [r["world_size"] for r in read_json(report_dir / s / "report.json")["rows"]] == [2, 4]
