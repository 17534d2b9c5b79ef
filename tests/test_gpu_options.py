"""The GPU path's options on a machine without a GPU: NCCL/CUDA refused with one line (exit 2), the
precision options validated, bf16 autocast and channels_last really applied on CPU, and a real CPU run
recording them (config, provenance) and saying "no GPU telemetry" in its summary, console and report."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainscale.scaling.runtime.precision import StepOptions
from trainscale.scaling.resolve import resolve
from trainscale.scaling.spec import SpecError
from trainscale.workloads.resnet import ResNet50

from .conftest import TINY_RESNET, read_json, run_cli

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA")


def _one_line_error(proc, out: Path, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_nccl_without_cuda_is_a_one_line_error(tmp_path: Path):
    out = tmp_path / "r"
    proc = run_cli("run", "--backend", "nccl", "--nproc", "1", "--steps", "3", "--warmup", "1", "--out", str(out), *TINY_RESNET,
                   timeout=120)
    _one_line_error(proc, out, "nccl", "CUDA")


def test_fp16_on_cpu_is_a_one_line_error(tmp_path: Path):
    out = tmp_path / "r"
    proc = run_cli("run", "--precision", "fp16", "--nproc", "1", "--steps", "3", "--warmup", "1", "--out", str(out), *TINY_RESNET,
                   timeout=120)
    _one_line_error(proc, out, "fp16", "nccl")


@pytest.mark.parametrize("sets, needle", [
    (["precision=fp8"], "'fp8'"),
    (["precision=tf32"], "'tf32'"),  # a tensor-core format: gloo runs on CPUs
    (["precision=bf16", "workload=gpt", "parallel=pp", "nproc=2"], "'pp'"),  # pp has no autocast step
    (["compile=true", "workload=gpt", "parallel=pp", "nproc=2"], "compile"),
    (["telemetry.interval_s=0.001"], "0.001"),
])
def test_options_that_do_not_fit_are_refused_naming_the_value(sets, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(")):
        resolve(sets=sets)


def test_options_are_typed_from_set():
    spec = resolve(sets=["precision=bf16", "compile=true", "model.channels_last=true"])
    assert spec.precision == "bf16" and spec.compile is True and spec.model["channels_last"] is True


def test_bf16_autocast_and_channels_last_really_apply_on_cpu():
    torch.manual_seed(0)
    model = ResNet50(num_classes=10, width=0.125)
    options = StepOptions(precision="bf16", channels_last=True, device_type="cpu")
    model = options.prepare_model(model)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = options.prepare_inputs(torch.randn(4, 3, 32, 32))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    with options.autocast():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert logits.dtype == torch.bfloat16
    loss.backward()
    # parameters and their gradients stay float32 (autocast casts only inside the ops)
    assert conv.weight.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    assert options.grad_scaler(sharded=False) is None
    with StepOptions(device_type="cpu").autocast():
        assert model(x).dtype == torch.float32


@pytest.mark.slow
def test_a_cpu_bf16_channels_last_run_records_its_options_and_no_gpu_telemetry(tmp_path: Path):
    out = tmp_path / "r"
    proc = run_cli("run", "--nproc", "1", "--steps", "4", "--warmup", "1", "--batch-size", "8",
                   "--precision", "bf16", "--channels-last", "--out", str(out), *TINY_RESNET, timeout=240)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "gpu: no GPU telemetry: backend gloo runs on CPUs" in " ".join(proc.stderr.split())  # the console
    run = next(out.iterdir())
    config = read_json(run / "config.json")
    assert config["precision"] == "bf16" and config["model"]["channels_last"] is True and config["compile"] is False
    options = read_json(run / "provenance.json")["step_options"]
    assert options["precision"] == "bf16" and options["autocast_dtype"] == "bfloat16"
    assert options["channels_last"] is True and options["grad_scaler"] is False and options["tf32_matmul"] is False
    assert read_json(run / "provenance.json")["step_timing"] == "host monotonic clock"
    summary = read_json(run / "summary.json")
    assert summary["status"] == "ok" and summary["precision"] == "bf16"
    assert summary["gpu"]["available"] is False and summary["gpu"]["reason"].startswith("no GPU telemetry")
    node = read_json(run / "telemetry" / "node00000.json")
    assert node["available"] is False and "backend gloo runs on CPUs" in node["reason"]
    assert not (run / "telemetry" / "node00000.csv").exists()
    rep = run_cli("report", str(run), timeout=180)
    assert rep.returncode == 0, rep.stderr
    md = (run / "report" / "report.md").read_text()
    assert "## GPU telemetry, energy and MFU" in md and "have no GPU telemetry" in md
    assert "| bf16 |" in md


def test_cpu_phase_clock_parts_tile_the_step():
    from trainscale.scaling.runtime.timing import PhaseClock

    clock = PhaseClock(torch.device("cpu"), edges=4)
    assert not clock.cuda
    for _ in range(2):  # it resets after each step
        clock.mark()
        sum(range(10_000))
        clock.mark()
        clock.mark()
        sum(range(10_000))
        clock.mark()
        parts, start, end = clock.finish()
        assert len(parts) == 3 and all(p >= 0 for p in parts) and parts[0] > 0 and parts[2] > 0
        assert sum(parts) == pytest.approx(end - start, abs=1e-9)


def test_cpu_device_batches_keep_order_and_apply_channels_last():
    from trainscale.scaling.runtime.device_data import DeviceBatches

    source = [(torch.full((2, 3, 4, 4), float(k)), torch.tensor([k, k])) for k in range(3)]
    out = list(DeviceBatches(iter(source), torch.device("cpu"), StepOptions(channels_last=True)))
    assert [int(t[0]) for _, t in out] == [0, 1, 2]
    assert all(x.is_contiguous(memory_format=torch.channels_last) and float(x[0, 0, 0, 0]) == k
               for k, (x, _) in enumerate(out))
