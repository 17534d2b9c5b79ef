"""Metrics the field trusts: FLOPs counted (not declared), MFU against a measured matmul peak with its
guards, stragglers named from the step they began, and "-" for figures that mean nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainscale.analysis.mfu import mfu, mfu_text
from trainscale.analysis.report import build
from trainscale.scaling.results.sample_files import read_rank_infos
from trainscale.scaling.runtime.flops import count_training_flops, measure_matmul_peak
from trainscale.workloads.data import DataConfig
from trainscale.workloads.gpt import GPTConfig, model_flops_per_token
from trainscale.workloads.registry import WORKLOADS

from .conftest import read_json

H100 = "NVIDIA H100 80GB HBM3"


def _count(workload: str, **model) -> dict:
    w = WORKLOADS.get(workload)
    built = w.build(w.config_cls(**model), DataConfig(), 0, min_train_samples=4)
    return count_training_flops(built.model, built.loss_fn, built.train_set, built.samples_per_item)


def test_resnet50_counted_flops_match_the_published_figure():
    """ResNet-50 at 224x224: about 4.1 GMACs (8.2 GFLOPs) forward per image; training about 3x that."""
    c = _count("resnet50")
    assert c["forward_flops_per_sample"] == pytest.approx(8.2e9, rel=0.05)
    assert c["flops_per_sample"] == pytest.approx(3 * c["forward_flops_per_sample"], rel=0.05)


@pytest.mark.parametrize("preset", ["tiny", "small-cpu"])
def test_gpt_counted_flops_match_the_analytic_formula(preset):
    """6N + 12 L d T per token (N: weights in matmuls, embeddings' head included)."""
    counted = _count("gpt", preset=preset)["flops_per_sample"]
    assert counted == pytest.approx(model_flops_per_token(GPTConfig(preset=preset)), rel=0.05)


def test_a_model_the_counter_cannot_run_is_recorded_as_not_counted():
    class ItemModel(torch.nn.Module):
        def forward(self, x):
            return x * float(x.sum())  # .item() on the meta device

    out = count_training_flops(ItemModel(), lambda y, t: y.sum(), [(torch.ones(3), torch.zeros(1))] * 2, 1)
    assert out["flops_per_sample"] is None and out["reason"].startswith("not counted:")


def test_the_measured_matmul_peak_is_a_real_measurement():
    peak = measure_matmul_peak(torch.device("cpu"), "fp32", torch.get_num_threads())
    assert peak["flops_per_s"] == pytest.approx(2 * peak["n"] ** 3 * peak["repetitions"] / peak["seconds"])
    assert peak["repetitions"] >= 4 and peak["dtype"] == "float32"


def test_mfu_guards_flag_over_100_percent_mixed_precision_and_unknown_devices():
    over = mfu(1e15, 1000.0, 1, H100, "fp32")  # 1e18 FLOP/s on a 67 TFLOP/s device: 1,493,000%
    assert over["value"] > 1 and any("over 100%" in f for f in over["flags"])
    assert mfu_text(over).startswith("flagged:")
    over_measured = mfu(1e9, 1000.0, 1, "cpu: AMD EPYC", "fp32", measured_peak_flops_per_s=5e11)
    assert over_measured["value"] is None and over_measured["of_measured_peak"] == pytest.approx(2.0)
    assert mfu_text(over_measured).startswith("flagged:") and "measured matmul peak" in mfu_text(over_measured)
    mixed = mfu(1e9, 1000.0, 1, H100, "bf16", measured_peak_flops_per_s=1e13)
    assert any("mixed precision" in f for f in mixed["flags"]) and "[flagged: mixed precision" in mfu_text(mixed)
    plain = mfu(1e9, 1000.0, 1, "cpu: AMD EPYC", "fp32", measured_peak_flops_per_s=1e13)
    assert mfu_text(plain) == "10.00% of measured matmul peak" and plain["reason"].startswith("unavailable: device")
    assert mfu_text(mfu(1e9, 1000.0, 1, "Some Future GPU", "fp32")).startswith("unavailable: device")


@pytest.mark.slow
def test_a_cpu_sweep_reports_mfu_against_the_measured_peak_and_dashes_at_world_1(cli, tmp_path: Path, tiny_resnet):
    p = cli("sweep", "--workload", "resnet50", "--nproc", "1,2", "--steps", "12", "--warmup", "3", "--batch-size", "2",
            *tiny_resnet, "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    sweep = next((tmp_path / "out").iterdir())
    for run in sorted((sweep / "runs").iterdir()):
        infos = read_rank_infos(run)
        counted = infos[0]["workload_facts"]["flops"]["flops_per_sample"]
        assert counted == pytest.approx(_count("resnet50", width=0.125, resolution=32, num_classes=10)["flops_per_sample"])
        summary = read_json(run / "summary.json")
        m = summary["parallelism"]["mfu"]
        peaks = sum(i["matmul_peak"]["flops_per_s"] for i in infos.values())
        assert m["measured_peak_flops_per_s"] == pytest.approx(peaks)
        x = summary["metrics"]["throughput"]["global_samples_per_s"]
        assert m["of_measured_peak"] == pytest.approx(counted * x / peaks) and 0 < m["of_measured_peak"] < 1
    md = (sweep / "report" / "report.md").read_text()
    strategy_rows = [line for line in md.splitlines() if line.startswith(("| ddp | dp1 |", "| ddp | dp2 |"))]
    assert len(strategy_rows) == 2 and all(line.endswith("% of measured matmul peak |") for line in strategy_rows)
    world1 = next(line for line in md.splitlines() if line.startswith("| 1 | 1.000 |"))
    assert world1.split(" | ")[4:8] == ["-", "[-, -]", "-", "-"]  # exposed, its CI, % of step, overlap
    assert '"-": world 1: no communication between ranks' in md


def _slow_run(cli, out: Path, tiny_resnet, *fault: str) -> Path:
    p = cli("run", "--workload", "resnet50", "--nproc", "4", "--steps", "44", "--warmup", "4", "--batch-size", "2",
            *tiny_resnet, *fault, "--out", str(out))
    assert p.returncode == 0, p.stderr
    return next(out.iterdir())


@pytest.mark.slow
def test_a_slow_rank_of_4_is_named_from_the_step_it_began(cli, tmp_path: Path, tiny_resnet):
    run = _slow_run(cli, tmp_path / "slow", tiny_resnet, "--set", "fault.kind=slow", "--set", "fault.rank=2",
                    "--set", "fault.at_step=24", "--set", "fault.slow_factor=3")
    view = build(run).rank_views[4]
    assert [s.rank for s in view.stragglers] == [2]
    s = view.stragglers[0]
    assert s.from_step == 20 and s.score >= 1.5  # step 24 is measured step 20 (4 warmup steps)
    p = cli("report", str(run))
    assert p.returncode == 0, p.stderr
    md = (run / "report" / "report.md").read_text()
    assert f"rank 2 on {s.node}, score {s.score:.2f} from measured step 20" in md


@pytest.mark.slow
def test_a_run_with_no_fault_names_no_straggler(cli, tmp_path: Path, tiny_resnet):
    run = _slow_run(cli, tmp_path / "even", tiny_resnet)
    assert build(run).rank_views[4].stragglers == []
    assert cli("report", str(run)).returncode == 0
    assert "- world 4: none" in (run / "report" / "report.md").read_text()
