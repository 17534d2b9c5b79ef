"""Matplotlib figures for reports. Every figure is written to a PNG and its path returned."""
from __future__ import annotations

import math
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
    # An unbounded (inf) or missing (nan) side of a CI is not drawn.
    err = [[x - lo if math.isfinite(lo) else 0.0 for x, lo in zip(throughput, ci_low)],
           [hi - x if math.isfinite(hi) else 0.0 for x, hi in zip(throughput, ci_high)]]
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


def strategy_comparison(rows: Sequence[dict], unit: str, path: Path) -> Path:
    """Grouped bars per strategy, one bar per world size: throughput, peak memory, optimizer-visible
    state and communication per step. Missing values are left out, never drawn as zero."""
    strategies = list(dict.fromkeys(r["parallel"] for r in rows))
    worlds = sorted({r["world_size"] for r in rows})
    panels = (("throughput", f"global throughput ({unit}/s)", 1.0),
              ("peak_memory_bytes", "peak memory, max rank (MiB)", 2**-20),
              ("optimizer_state_bytes", "params+grads+optimizer state, max rank (MiB)", 2**-20),
              ("comm_payload_bytes", "collective payload per step per rank (MiB)", 2**-20))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    width = 0.8 / max(1, len(worlds))
    for ax, (key, label, scale) in zip(axes.flat, panels):
        for j, world in enumerate(worlds):
            xs, ys = [], []
            for i, s in enumerate(strategies):
                row = next((r for r in rows if r["parallel"] == s and r["world_size"] == world), None)
                if row is not None and row.get(key) is not None:
                    xs.append(i + (j - (len(worlds) - 1) / 2) * width)
                    ys.append(row[key] * scale)
            ax.bar(xs, ys, width=width, label=f"world {world}")
        ax.set_xticks(range(len(strategies)), strategies)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle("Parallel strategies compared")
    return _save(fig, path)
