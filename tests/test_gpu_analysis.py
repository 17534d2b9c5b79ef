"""GPU telemetry analysis and MFU with known answers: energy per window and per sample, throttling shares
and other GPU processes from hand-made node telemetry files; "no GPU telemetry" written by a CPU node;
the peak-FLOPs table; MFU of a real (CPU) gpt run against a hand computation from its raw samples."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from trainscale.analysis import gpu_telemetry

from trainscale.scaling.results import schema
from trainscale.analysis.mfu import mfu, peak_flops
from trainscale.analysis.strategies import parallel_summary
from trainscale.analysis.runs import load_rank_samples, run_metrics
from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.spec import RunSpec
from trainscale.scaling.runtime.telemetry import NodeTelemetry
from trainscale.workloads.gpt import GPTConfig, model_flops_per_token

from .conftest import read_json, run_cli

H100 = "NVIDIA H100 80GB HBM3"
SW_POWER_CAP, HW_THERMAL, GPU_IDLE = 0x4, 0x40, 0x1


def _sample(t: float, gpu: int, power: float, mask: int, energy_mj: int | None) -> dict:
    return {"t": t, "gpu": gpu, "util_pct": 99, "mem_util_pct": 40, "mem_used_bytes": 2**30, "power_w": power,
            "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "temp_c": 60, "clock_event_mask": mask,
            "energy_mj": energy_mj}


def _write_node(run_dir: Path, node_rank: int = 0) -> None:
    """Two GPUs over a run 100..103 s (window 101..103 s): GPU 0 has an energy counter and runs at 400 W,
    power-capped in the samples at 101 and 101.5 s; GPU 1 has no counter and draws 300 W."""
    csv_path, json_path = schema.telemetry_paths(run_dir, node_rank)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    rows = [_sample(99.0, 0, 400.0, HW_THERMAL, 0), _sample(99.0, 1, 300.0, HW_THERMAL, None)]  # before the run
    for k in range(7):
        t = 100.0 + 0.5 * k
        rows.append(_sample(t, 0, 400.0, SW_POWER_CAP if t in (101.0, 101.5) else GPU_IDLE, int(400_000 * (t - 99))))
        rows.append(_sample(t, 1, 300.0, 0, None))
    gpu_telemetry.write_samples(csv_path, rows)
    json_path.write_text(json.dumps({
        "node_rank": node_rank, "hostname": f"node{node_rank}", "available": True, "reason": "",
        "interval_s": 0.5, "gpus": [{"gpu": 0, "name": H100}, {"gpu": 1, "name": H100}],
        "marks": [{"label": "run_start", "t": 100.0, "energy_mj": {"0": 1_000_000, "1": None}},
                  {"label": "window_start", "t": 101.0, "energy_mj": {"0": 1_200_000, "1": None}},
                  {"label": "run_stop", "t": 103.0, "energy_mj": {"0": 1_800_000, "1": None}}],
        "processes": {"run_start": [{"gpu": 0, "pid": 111, "used_memory_bytes": 2**30},
                                    {"gpu": 1, "pid": 999, "used_memory_bytes": 2**20}],
                      "run_stop": [{"gpu": 0, "pid": 111, "used_memory_bytes": 2**30},
                                   {"gpu": 1, "pid": 999, "used_memory_bytes": 2**20}]},
        "samples_file": csv_path.name}))


def test_energy_throttling_and_other_processes_from_hand_made_telemetry(tmp_path: Path):
    _write_node(tmp_path)
    gpu = gpu_telemetry.run_gpu_summary(tmp_path, window_samples=600, sample_unit="images", our_pids={111})
    assert gpu["available"] is True
    e = gpu["energy"]
    # window: GPU 0 counter 1.8e6 - 1.2e6 mJ = 600 J; GPU 1 300 W x 2 s = 600 J (integrated, estimated)
    assert e["window_j"] == pytest.approx(1200.0) and e["per_sample_j"] == pytest.approx(2.0)
    # run: GPU 0 800 J (counter) + GPU 1 300 W x 3 s = 900 J
    assert e["run_j"] == pytest.approx(1700.0)
    assert e["boundary"] == "GPU board only" and e["estimated"] is True
    node = gpu["nodes"][0]
    # 14 samples inside the run (the two at 99 s, hardware thermal, are outside it); 2 power-capped
    assert node["throttling"] == {"software power cap": pytest.approx(2 / 14)}
    assert [(p["pid"], p["seen_at"]) for p in node["other_processes"]] == [(999, ["run_start", "run_stop"])]
    assert gpu["threats"] == ["node0: software power cap in 14% of GPU samples",
                              "node0: 1 other GPU process(es) on the run's GPUs (PIDs 999)"]
    line = gpu_telemetry.summary_line(gpu)
    assert line.startswith("energy 2 J per image in the measured window (GPU board only") and "power cap" in line

    md = "\n".join(gpu_telemetry.section_markdown(
        [{"run": "r1", "world_size": 2, "precision": "bf16", "unit": "images", "gpu": gpu, "mfu": None}]))
    assert "- Threat (r1, world 2): node0: software power cap in 14% of GPU samples." in md
    assert "PIDs 999" in md and "GPU board only" in md
    assert "| r1 | 2 | bf16 | 2 per image | 1200.0 | 1700.0 | integrated power samples (estimated) |" in md


def test_a_node_without_telemetry_leaves_the_run_energy_unavailable(tmp_path: Path):
    _write_node(tmp_path, 0)
    (tmp_path / schema.TELEMETRY_DIR / "node00001.json").write_text(json.dumps(
        {"node_rank": 1, "hostname": "node1", "available": False, "reason": "no GPU telemetry: NVML unavailable"}))
    gpu = gpu_telemetry.run_gpu_summary(tmp_path, 600, "images", {111})
    assert gpu["available"] is True and gpu["energy"] is None and "energy unavailable" in gpu["energy_note"]
    assert gpu["nodes"][1] == {"node_rank": 1, "hostname": "node1", "available": False,
                               "reason": "no GPU telemetry: NVML unavailable"}


def test_no_telemetry_files_and_cpu_nodes_say_no_gpu_telemetry(tmp_path: Path):
    assert gpu_telemetry.run_gpu_summary(tmp_path, 10, "images", set())["reason"] == \
        "no GPU telemetry: the run wrote no telemetry files"
    cpu = torch.device("cpu")
    spec = RunSpec()
    NodeTelemetry.start(spec, DistContext(0, 2, 0, 2, 0, "gloo", cpu)).finish(tmp_path)
    NodeTelemetry.start(spec, DistContext(1, 2, 1, 2, 0, "gloo", cpu)).finish(tmp_path)  # not local rank 0
    spec.telemetry.enabled = False
    NodeTelemetry.start(spec, DistContext(2, 4, 0, 2, 1, "gloo", cpu)).finish(tmp_path)
    files = sorted(p.name for p in (tmp_path / schema.TELEMETRY_DIR).iterdir())
    assert files == ["node00000.json", "node00001.json"]
    assert read_json(tmp_path / schema.TELEMETRY_DIR / "node00000.json")["reason"] == \
        "no GPU telemetry: backend gloo runs on CPUs"
    assert read_json(tmp_path / schema.TELEMETRY_DIR / "node00001.json")["reason"] == \
        "no GPU telemetry: telemetry.enabled is false"
    gpu = gpu_telemetry.run_gpu_summary(tmp_path, 10, "images", set())
    assert gpu["available"] is False and gpu["reason"] == "no GPU telemetry: backend gloo runs on CPUs"
    assert gpu_telemetry.summary_line(gpu) == "no GPU telemetry: backend gloo runs on CPUs"


@pytest.mark.parametrize("name, precision, tflops", [
    (H100, "bf16", 1979 / 2), (H100, "fp32", 67.0), ("NVIDIA H100 PCIe", "bf16", 1513 / 2),
    ("NVIDIA H100 NVL", "fp16", 1671 / 2), ("NVIDIA H200", "bf16", 1979 / 2), ("NVIDIA H200 NVL", "tf32", 835 / 2),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0), ("NVIDIA A100-SXM4-40GB", "tf32", 156.0),
    ("NVIDIA A100-PCIE-40GB", "fp32", 19.5), ("NVIDIA A100 80GB PCIe", "bf16", 312.0),
    ("NVIDIA L4", "bf16", 242 / 2), ("NVIDIA L40S", "fp16", 362.05), ("Tesla V100-SXM2-16GB", "fp16", 125.0),
])
def test_peak_table(name, precision, tflops):
    assert peak_flops(name, precision)[0] == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name, precision, why", [
    ("NVIDIA GH200 480GB", "bf16", "not in the peak-FLOPs table"),
    ("cpu: AMD EPYC 7B13", "fp32", "not in the peak-FLOPs table"),
    ("Tesla V100-SXM2-16GB", "bf16", "no bf16 peak"),
])
def test_unknown_devices_and_precisions_give_no_mfu(name, precision, why):
    result = mfu(1e9, 1000.0, 1, name, precision)
    assert result["value"] is None and why in result["reason"] and result["reason"].startswith("unavailable")


def test_mfu_by_hand():
    cfg = GPTConfig(preset="tiny")  # 4 layers, d 64, seq 32, vocab 256
    n_matmul = 12 * 4 * 64**2 + 64 * 256  # 212,992 weights in matmuls
    assert model_flops_per_token(cfg) == 6 * n_matmul + 12 * 4 * 64 * 32 == 1_376_256
    result = mfu(1_376_256, 50_000.0, 8, H100, "bf16")
    assert result["value"] == pytest.approx(1_376_256 * 50_000.0 / (8 * 989.5e12))


@pytest.mark.slow
def test_gpt_mfu_of_a_real_run_matches_a_hand_computation(tmp_path: Path):
    out = tmp_path / "r"
    proc = run_cli("run", "--workload", "gpt", "--nproc", "1", "--steps", "5", "--warmup", "2", "--batch-size", "4",
                   "--precision", "bf16", "--set", "model.preset=tiny", "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = next(out.iterdir())
    on_cpu = read_json(run / "summary.json")["parallelism"]["mfu"]
    assert on_cpu["value"] is None and "cpu:" in on_cpu["reason"]  # CPUs are not in the table
    # The same run's analysis, had its rank reported an H100: tokens/s by hand from the raw samples.
    info_path = schema.rank_info_path(run, 0)
    info = read_json(info_path)
    info_path.write_text(json.dumps({**info, "device_name": H100}))
    with open(schema.samples_path(run, 0), newline="") as f:
        measured = [r for r in csv.DictReader(f) if r["phase"] == schema.PHASE_MEASURED]
    window = float(measured[-1]["t_start"]) + float(measured[-1]["step_s"]) - float(measured[0]["t_start"])
    tokens_per_s = sum(float(r["samples"]) for r in measured) / window
    assert sum(float(r["samples"]) for r in measured) == 3 * 4 * 32  # 3 measured steps x 4 sequences x 32 tokens
    result = parallel_summary(run, run_metrics(load_rank_samples(run)))["mfu"]
    assert result["precision"] == "bf16"
    assert result["value"] == pytest.approx(1_376_256 * tokens_per_s / 989.5e12, rel=1e-6)
