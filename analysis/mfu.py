"""Model FLOPs utilisation: achieved model FLOP/s divided by the device's peak, from a table of known
devices (docs/method.md), and divided by the matmul FLOP/s the run's ranks measured at their start. A
device not in the table, or a precision the table lacks for it, gives no datasheet MFU: "unavailable"
with the reason, never a guess. CPUs have no entry: their MFU is against the measured matmul peak.

Peaks are dense (no 2:4 sparsity) throughput from NVIDIA's datasheets, in TFLOP/s, per precision of the
run (scaling/runtime/precision.py): "fp32" is the non-tensor-core FP32 peak (precision fp32 turns TF32 off),
"tf32", "bf16" and "fp16" the tensor-core peaks. Datasheets quote the tensor-core figures of Hopper, L4
and H200 "with sparsity": the dense value is half of it, written below as the quoted value / 2.
Devices are matched on torch.cuda.get_device_name(); the first matching pattern wins.
"""
from __future__ import annotations

import re

# (pattern matched against the device name, {precision: dense peak TFLOP/s})
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    # H100 datasheet, NVL column: FP32 60; TF32 835*, BF16 1,671*, FP16 1,671* (* with sparsity)
    (r"H100 NVL", {"fp32": 60.0, "tf32": 835 / 2, "bf16": 1671 / 2, "fp16": 1671 / 2}),
    # H100 datasheet, PCIe column: FP32 51; TF32 756*, BF16 1,513*, FP16 1,513*
    (r"H100 PCIe", {"fp32": 51.0, "tf32": 756 / 2, "bf16": 1513 / 2, "fp16": 1513 / 2}),
    # H100 datasheet, SXM column: FP32 67; TF32 989*, BF16 1,979*, FP16 1,979* (name: "H100 80GB HBM3")
    (r"H100 80GB HBM3|H100 SXM", {"fp32": 67.0, "tf32": 989 / 2, "bf16": 1979 / 2, "fp16": 1979 / 2}),
    # H200 datasheet, NVL column: FP32 60; TF32 835*, BF16 1,671*, FP16 1,671*
    (r"(?<![A-Z])H200 NVL", {"fp32": 60.0, "tf32": 835 / 2, "bf16": 1671 / 2, "fp16": 1671 / 2}),
    # H200 datasheet, SXM column: FP32 67; TF32 989*, BF16 1,979*, FP16 1,979* (GH200 is not matched)
    (r"(?<![A-Z])H200(?! NVL)", {"fp32": 67.0, "tf32": 989 / 2, "bf16": 1979 / 2, "fp16": 1979 / 2}),
    # A100 datasheet (SXM4 40/80 GB): FP32 19.5; TF32 156, BF16 312, FP16 312 (dense; sparse doubles)
    (r"A100[- ]SXM", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    # A100 datasheet (PCIe 40/80 GB): the same peaks as SXM4
    (r"A100(-PCIE| 80GB PCIe| PCIe)", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    # L4 datasheet: FP32 30.3; TF32 120*, BF16 242*, FP16 242*
    (r"\bL4\b", {"fp32": 30.3, "tf32": 120 / 2, "bf16": 242 / 2, "fp16": 242 / 2}),
    # L40S datasheet: FP32 91.6; TF32 183 (366*), BF16 362.05 (733*), FP16 362.05 (733*)
    (r"\bL40S\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    # V100 datasheet: SXM2 FP32 15.7, tensor FP16 125; PCIe FP32 14, tensor FP16 112 (no TF32/BF16)
    (r"V100-SXM2", {"fp32": 15.7, "fp16": 125.0}),
    (r"V100-PCIE", {"fp32": 14.0, "fp16": 112.0}),
)


def peak_flops(device_name: str, precision: str = "fp32") -> tuple[float | None, str]:
    """(peak FLOP/s, basis) or (None, why not)."""
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            if precision not in peaks:
                return None, f"no {precision} peak in the table for {device_name!r}"
            return peaks[precision] * 1e12, f"{peaks[precision]:g} TFLOP/s dense {precision} (datasheet, /{pattern}/)"
    return None, f"device {device_name!r} is not in the peak-FLOPs table"


MIXED = ("bf16", "fp16")  # autocast: matmuls in the low precision, the rest in fp32


def mfu(model_flops_per_sample: float | None, samples_per_s: float, devices: int, device_name: str,
        precision: str = "fp32", measured_peak_flops_per_s: float | None = None,
        flops_basis: str = "declared by the workload") -> dict:
    """MFU against the datasheet peak ("value", None with the reason when the device or precision is not
    in the table) and against the run's measured matmul peak ("of_measured_peak": the sum over ranks of
    what each measured, scaling/runtime/flops.py). "flags" lists what makes a figure untrustworthy: over
    100%, mixed precision; such a figure is shown with its flag (mfu_text), never as a plain number."""
    if not model_flops_per_sample:
        return {"value": None, "reason": "unavailable: the run has no model FLOPs per sample (not counted, "
                                         "none declared)", "flags": []}
    achieved = model_flops_per_sample * samples_per_s
    out: dict = {"achieved_flops_per_s": achieved, "model_flops_per_sample": model_flops_per_sample,
                 "flops_basis": flops_basis, "devices": devices, "precision": precision, "flags": [],
                 "definition": "model FLOPs per sample x global samples/s / (devices x dense peak FLOP/s); "
                               "of measured peak: / (the sum of the ranks' measured matmul FLOP/s)"}
    peak, basis = peak_flops(device_name, precision)
    if peak is None:
        out.update(value=None, reason=f"unavailable: {basis}")
    else:
        out.update(value=achieved / (devices * peak), peak_flops_per_device=peak, basis=basis)
    if measured_peak_flops_per_s:
        out.update(measured_peak_flops_per_s=measured_peak_flops_per_s,
                   of_measured_peak=achieved / measured_peak_flops_per_s)
    for key, against in (("value", "the datasheet peak"), ("of_measured_peak", "the measured matmul peak")):
        if out.get(key) is not None and out[key] > 1.0:
            out["flags"].append(f"{out[key]:.0%} of {against} is over 100%: the FLOP count or the peak is wrong")
    if precision in MIXED:
        out["flags"].append(f"mixed precision ({precision} autocast): matmuls in {precision}, the rest in fp32, "
                            f"measured against the {precision} peak")
    return out


def mfu_text(m: dict | None) -> str:
    """How reports print an MFU: each figure with its basis, a flagged one marked, none plain when flagged."""
    if not m:
        return "unavailable"
    parts = []
    if m.get("value") is not None:
        parts.append(f"{m['value']:.2%} of datasheet peak")
    if m.get("of_measured_peak") is not None:
        parts.append(f"{m['of_measured_peak']:.2%} of measured matmul peak")
    if not parts:
        return m.get("reason") or "unavailable"
    text = ", ".join(parts)
    if any("over 100%" in f for f in m.get("flags", [])):
        return f"flagged: {text} (over 100%: the FLOP count or the peak is wrong)"
    if m.get("flags"):
        return f"{text} [flagged: {'; '.join(m['flags'])}]"
    return text
