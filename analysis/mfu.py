"""Model FLOPs utilisation: achieved model FLOP/s divided by the device's peak, from a table of known
devices (METHOD.md). A device not in the table, or a precision the table lacks for it, gives no MFU:
"unavailable" with the reason, never a guess. CPUs have no entry.

Peaks are dense (no sparsity) tensor throughput from NVIDIA's datasheets, in TFLOP/s. trainscale's
runs train in float32 with torch's default of no TF32 for matmuls, so "fp32" is the peak that applies.
"""
from __future__ import annotations

import re

# (pattern matched against torch.cuda.get_device_name(), {precision: dense peak TFLOP/s})
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H100 80GB HBM3|H100 SXM", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),  # H100 SXM5
    (r"H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    (r"H200(?! NVL)", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),  # H200 SXM: H100 SXM's compute
    (r"A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),  # SXM4 and PCIe alike
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
            "basis": basis, "devices": devices}
