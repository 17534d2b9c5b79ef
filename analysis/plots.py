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
                     label: str = "measured", ci: tuple[Sequence[float], Sequence[float]] | None = None) -> Path:
    """ci: (low, high) of each efficiency; a side that is missing or unbounded is not drawn."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(world, [1.0] * len(world), "--", color="grey", label="ideal (E = 1)")
    if ci is not None:
        err = [[e - lo if lo is not None and math.isfinite(lo) else 0.0 for e, lo in zip(efficiency, ci[0])],
               [hi - e if hi is not None and math.isfinite(hi) else 0.0 for e, hi in zip(efficiency, ci[1])]]
        ax.errorbar(world, efficiency, yerr=err, fmt="o-", capsize=4, label=f"{label} (95% CI of the throughput)")
    else:
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


PART_LABELS = {"data_s": "waiting for data", "compute_s": "forward + backward", "optimizer_s": "optimizer step",
               "compute_only_s": "forward + backward (no gradient sync)",
               "exposed_comm_s": "exposed communication"}


def step_breakdown(world: Sequence[int], parts: dict[str, Sequence[float]], path: Path) -> Path:
    """Stacked bars of mean per-step time (ms) split into its parts (sample column names, labelled in
    words), per world size."""
    fig, ax = plt.subplots(figsize=(6, 4.8))
    labels = [str(w) for w in world]
    bottom = [0.0] * len(world)
    for name, values in parts.items():
        ms = [v * 1e3 for v in values]
        ax.bar(labels, ms, bottom=bottom, label=PART_LABELS.get(name, name),
               hatch="//" if name == "exposed_comm_s" else None)
        bottom = [b + v for b, v in zip(bottom, ms)]
    ax.set_xlabel("processes (world size)")
    ax.set_ylabel("mean time per step (ms)")
    ax.set_title("Step-time breakdown (mean over ranks)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small")  # below: bars stay visible
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


def _binned(matrix, max_rows: int, max_cols: int, rows_reduce, cols_reduce):
    """The matrix in at most max_rows x max_cols cells: rows grouped by rows_reduce (max: a slow rank
    stays visible), then columns by cols_reduce."""
    import numpy as np

    def fold(m, axis: int, limit: int, reduce):
        n = m.shape[axis]
        if n <= limit:
            return m
        edges = np.linspace(0, n, limit + 1).astype(int)
        parts = [reduce(np.take(m, range(a, b), axis=axis), axis=axis) for a, b in zip(edges[:-1], edges[1:])]
        return np.stack(parts, axis=axis)

    return fold(fold(matrix, 0, max_rows, rows_reduce), 1, max_cols, cols_reduce)


def rank_step_heatmap(reduction, path: Path, max_rows: int = 512, max_cols: int = 400) -> Path:
    """Rank x measured step heatmaps for one run: step time (ms), and each rank's own time (outside
    gradient collectives; reduction.own_time) against that step's median over ranks (a straggler is a
    bright row from the step it began). Above max_rows
    ranks a row is a block of adjacent ranks (their maximum); above max_cols steps a column is a block
    of steps (their mean)."""
    import numpy as np

    panels = [("step time (ms)", reduction.step_matrix, 1e3, "ms")]
    own = reduction.own_matrix
    median = np.median(own, axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        panels.append(("own time / the step's median over ranks", own / median, 1.0, "ratio"))
    ranks, steps = reduction.step_matrix.shape
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, m, scale, unit) in zip(axes[0], panels):
        cells = _binned(m, max_rows, max_cols, np.max, np.mean).astype(float) * scale
        lo, hi = np.nanpercentile(cells, [1, 99.9])
        img = ax.imshow(cells, aspect="auto", interpolation="nearest", cmap="viridis", vmin=lo,
                        vmax=max(hi, lo + 1e-9), extent=(0, steps, ranks, 0))
        fig.colorbar(img, ax=ax, label=unit)
        ax.set_title(title)
        ax.set_xlabel("measured step")
        ax.set_ylabel("rank" + (f" (blocks of {ranks / max_rows:.0f}, max)" if ranks > max_rows else ""))
    fig.suptitle(f"Per rank and step, world {ranks}")
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


def _bytes_label(n: float) -> str:
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n:g}"


def busbw_curve(series: dict[tuple[str, int], tuple[Sequence[int], Sequence[float]]], path: Path,
                fits: Sequence = ()) -> Path:
    """Bus bandwidth vs message size, one line per (op, world size) as measured; dashed, the
    alpha-beta fit's busbw over the same sizes, labelled as fitted."""
    from trainscale.analysis.collectives import bus_factor

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ticks: set[int] = set()
    for (op, world), (xs, ys) in series.items():
        label = f"{op} (world {world})"
        line, = ax.plot(xs, ys, "o-", ms=3, label=label)
        ticks.update(xs)
        fit = next((f for f in fits if f.op == op and f.world_size == world), None)
        if fit is not None:
            ax.plot(xs, [x / fit.time_s(x) / 1e9 * bus_factor(op, world) for x in xs], "--",
                    color=line.get_color(), alpha=0.6, lw=1, label=f"{label}, alpha-beta fit")
    ax.set_xscale("log", base=2)
    shown = sorted(ticks)[:: max(1, len(ticks) // 8)]
    ax.set_xticks(shown, [_bytes_label(t) for t in shown])
    ax.set_xlabel("message size (bytes, nccl-tests convention)")
    ax.set_ylabel("bus bandwidth (GB/s, 1e9 B/s)")
    ax.set_title("Collective bus bandwidth (measured; dashed: fitted)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def comm_overhead(world: Sequence[int], in_collectives: Sequence[float | None], exposed: Sequence[float | None],
                  step: Sequence[float], efficiency: Sequence[float | None], path: Path) -> Path:
    """Per world size: mean step time, time in gradient collectives and the exposed part of it (ms,
    bars), with scaling efficiency on the right axis, so the efficiency loss sits next to its cause."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    x = np.arange(len(world))
    ms = lambda vs: [float("nan") if v is None else v * 1e3 for v in vs]  # noqa: E731
    ax.bar(x - 0.27, ms(step), 0.27, label="step", color="#bbbbbb")
    ax.bar(x, ms(in_collectives), 0.27, label="in gradient collectives")
    ax.bar(x + 0.27, ms(exposed), 0.27, label="exposed comm (compute - no_sync compute)")
    ax.set_xticks(x, [str(w) for w in world])
    ax.set_xlabel("processes (world size)")
    ax.set_ylabel("ms per step")
    ax.grid(axis="y", alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, [float("nan") if e is None else e for e in efficiency], "ko-", label="efficiency")
    ax2.set_ylim(0, 1.1)
    ax2.set_ylabel("scaling efficiency")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    ax.set_title("All-reduce overhead inside training")
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
