"""Model FLOPs utilisation: achieved model FLOP/s divided by the device's peak, from a table of known
devices (docs/method.md). A device not in the table, or a precision the table lacks for it, gives no MFU:
"unavailable" with the reason, never a guess. CPUs have no entry.

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


def mfu(model_flops_per_token: float | None, tokens_per_s: float, devices: int, device_name: str,
        precision: str = "fp32") -> dict:
    if not model_flops_per_token:
        return {"value": None, "reason": "unavailable: the workload declares no model FLOPs per sample"}
    achieved = model_flops_per_token * tokens_per_s
    peak, basis = peak_flops(device_name, precision)
    if peak is None:
        return {"value": None, "reason": f"unavailable: {basis}", "achieved_flops_per_s": achieved}
    return {"value": achieved / (devices * peak), "achieved_flops_per_s": achieved, "peak_flops_per_device": peak,
            "basis": basis, "devices": devices, "precision": precision,
            "definition": "model FLOPs per sample x global samples/s / (devices x dense peak FLOP/s)"}
