"""Scaling metrics, exactly as docs/method.md defines them.

strong scaling (fixed global batch / fixed work):  E(N) = T(1) / (N * T(N)),  S(N) = T(1) / T(N)
weak scaling (fixed per-device batch):            E(N) = X(N) / (N * X(1)),  S(N) = X(N) / X(1)
Karp-Flatt serial fraction:                        e = (1/S - 1/N) / (1 - 1/N)

T is time per unit of work (here: mean time of one global step), X is throughput. When the smallest
measured world size N0 is not 1, everything is relative to N0 (N is replaced by N/N0) and says so.
"""
from __future__ import annotations

from dataclasses import dataclass

STRONG = "strong"
WEAK = "weak"
SCALING_MODES = (STRONG, WEAK)


@dataclass(frozen=True)
class ScalingPoint:
    world_size: int
    speedup: float
    efficiency: float
    karp_flatt: float | None  # undefined at the baseline itself


def speedup_strong(t_base: float, t_n: float) -> float:
    return t_base / t_n


def speedup_weak(x_base: float, x_n: float) -> float:
    return x_n / x_base


def efficiency(speedup: float, n: float) -> float:
    """E = S / N; equal to T(1)/(N T(N)) for strong and X(N)/(N X(1)) for weak scaling."""
    return speedup / n


def karp_flatt(speedup: float, n: float) -> float | None:
    if n <= 1:
        return None
    return (1.0 / speedup - 1.0 / n) / (1.0 - 1.0 / n)


def scaling_points(
    mode: str, world_sizes: list[int], step_times: list[float], throughputs: list[float]
) -> list[ScalingPoint]:
    """Speedup, efficiency and Karp-Flatt for each world size against the smallest one.

    step_times are mean seconds per global step (used for strong scaling), throughputs are
    global samples/s (used for weak scaling).
    """
    if mode not in SCALING_MODES:
        raise ValueError(f"scaling mode must be one of {SCALING_MODES}, got {mode!r}")
    if not world_sizes:
        return []
    base = min(range(len(world_sizes)), key=lambda i: world_sizes[i])
    n0 = world_sizes[base]
    points = []
    for n, t, x in zip(world_sizes, step_times, throughputs):
        rel = n / n0
        s = speedup_strong(step_times[base], t) if mode == STRONG else speedup_weak(throughputs[base], x)
        points.append(ScalingPoint(world_size=n, speedup=s, efficiency=efficiency(s, rel), karp_flatt=karp_flatt(s, rel)))
    return points
