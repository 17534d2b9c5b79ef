"""Matplotlib figures for reports. Every figure is written to a PNG and its path returned."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def efficiency_curve(world: Sequence[int], efficiency: Sequence[float], mode: str, path: Path,
                     label: str = "measured") -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(world, [1.0] * len(world), "--", color="grey", label="ideal (E = 1)")
    ax.plot(world, efficiency, "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(world), [str(w) for w in world])
    ax.set_ylim(0, max(1.1, max(efficiency, default=1) * 1.1))
    ax.set_xlabel("processes (world size)")
    ax.set_ylabel(f"{mode} scaling efficiency")
    ax.set_title(f"{mode.capitalize()} scaling efficiency")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def throughput_curve(world: Sequence[int], throughput: Sequence[float], ci_low: Sequence[float],
                     ci_high: Sequence[float], unit: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    base_w, base_x = world[0], throughput[0]
    ax.plot(world, [base_x * w / base_w for w in world], "--", color="grey", label="ideal (linear)")
    err = [[x - lo for x, lo in zip(throughput, ci_low)], [hi - x for x, hi in zip(throughput, ci_high)]]
    ax.errorbar(world, throughput, yerr=err, fmt="o-", capsize=4, label="measured (95% CI)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(world), [str(w) for w in world])
    ax.set_xlabel("processes (world size)")
    ax.set_ylabel(f"global throughput ({unit}/s)")
    ax.set_title("Throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def step_breakdown(world: Sequence[int], parts: dict[str, Sequence[float]], path: Path) -> Path:
    """Stacked bars of mean per-step time (ms) split into its parts, per world size."""
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [str(w) for w in world]
    bottom = [0.0] * len(world)
    for name, values in parts.items():
        ms = [v * 1e3 for v in values]
        ax.bar(labels, ms, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, ms)]
    ax.set_xlabel("processes (world size)")
    ax.set_ylabel("mean time per step (ms)")
    ax.set_title("Step-time breakdown (mean over ranks)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def per_rank_step_times(groups: dict[str, dict[int, Sequence[float]]], path: Path) -> Path:
    """Box plot of measured step times per rank, one panel per world size: stragglers show as a tail."""
    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (title, by_rank) in zip(axes[0], groups.items()):
        ranks = sorted(by_rank)
        ax.boxplot([[v * 1e3 for v in by_rank[r]] for r in ranks], tick_labels=[str(r) for r in ranks])
        ax.set_title(title)
        ax.set_xlabel("rank")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("step time (ms)")
    return _save(fig, path)


def tta_curves(curves: dict[int, list[dict]], target: float | None, path: Path) -> Path:
    """Validation accuracy against seconds since run_start, one line per run, one colour per world
    size; the dashed line is the target, a star the evaluation that reached it."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours = plt.get_cmap("tab10")
    for i, (world, runs) in enumerate(sorted(curves.items())):
        for j, run in enumerate(runs):
            label = f"world {world}" if j == 0 else None
            ax.plot(run["t_s"], run["accuracy"], "o-", ms=3, lw=1.2, color=colours(i % 10), alpha=0.8, label=label)
            if target is not None:
                hit = next((k for k, a in enumerate(run["accuracy"]) if a >= target), None)
                if hit is not None:
                    ax.plot(run["t_s"][hit], run["accuracy"][hit], "*", ms=11, color=colours(i % 10))
    if target is not None:
        ax.axhline(target, ls="--", color="grey", label=f"target {target:g}")
    ax.set_xlabel("seconds since run_start (the TTA clock)")
    ax.set_ylabel("validation accuracy (top-1)")
    ax.set_title("Time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
