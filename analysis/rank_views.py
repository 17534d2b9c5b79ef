"""Per-rank views that scale to thousands of ranks: quantiles across ranks, the slowest ranks and
nodes named, straggler scores, and every rank's figures as CSV rows (docs/method.md "Stragglers").

Straggler scores, per rank and per window of WINDOW_STEPS measured steps, on the rank's own time
(reduction.own_time: the step outside gradient collectives, else compute time). In a synchronous step
every rank's step time is the slowest rank's, and the others wait for it inside a collective, so
neither step time nor (with DDP, whose all-reduce runs inside backward) compute time tells ranks apart;
own time does:
- relative score = the rank's median own time in the window / the median over ranks of those
  medians (1.0: a typical rank). Against the median rank, not the fastest: the fastest of thousands
  of ranks is an extreme of the noise, and would make every slightly slow rank look like a straggler;
- individual score = the rank's median own time in the window / its own lowest window median
  (1.0: as fast as the rank ever was).
A rank straggles when its relative score reaches the threshold (STRAGGLER_THRESHOLD by default) in
MIN_WINDOWS consecutive windows (a lasting slowdown, not one noisy window); it is named with its worst
score and the first measured step of the first such run of windows. The default is set so that 4 ranks
sharing 2 CPU cores, which see single windows at 1.6 with no fault, name none.
The slowest ranks and nodes tables rank by mean own time over the measured steps, relative to the
median rank (node).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainscale.analysis.reduction import RunReduction
from trainscale.scaling.results.files import write_text_atomic

WINDOW_STEPS = 10
STRAGGLER_THRESHOLD = 1.5  # a rank 50% slower than the median rank ...
MIN_WINDOWS = 2  # ... in this many consecutive windows
TOP = 5  # ranks and nodes named in the report
QUANTILES = (0, 50, 90, 99, 100)
FULL_TABLE_MAX_RANKS = 16  # above this the report shows quantiles and the slowest ranks, the CSV every rank
BOX_PLOT_MAX_RANKS = 32  # above this a world size gets the rank x step heatmap instead of a box per rank


@dataclass
class Straggler:
    rank: int
    node: str
    score: float  # worst relative score over the windows
    from_step: int  # first measured step (0-based, within the measured window) of the first window at threshold
    individual: float  # the rank's worst individual score


@dataclass
class RankView:
    world_size: int
    run: str
    quantiles: dict[str, list[float]]  # "step_s", "own_s" -> per-rank means at QUANTILES
    slowest_ranks: list[dict]  # rank, node, own_s, step_s, relative
    slowest_nodes: list[dict]  # node, ranks, own_s, relative
    stragglers: list[Straggler]
    threshold: float
    window_steps: int
    csv_rows: list[dict] = field(repr=False, default_factory=list)


def window_scores(red: RunReduction, window: int = WINDOW_STEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(relative, individual, window start steps): ranks x windows scores on own time."""
    matrix = red.own_matrix
    steps = matrix.shape[1]
    window = max(1, min(window, steps))
    starts = np.arange(0, steps, window)
    medians = np.stack([np.median(matrix[:, s:s + window], axis=1) for s in starts], axis=1).astype(float)
    typical = np.median(medians, axis=0, keepdims=True)
    own_best = medians.min(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(typical > 0, medians / typical, np.nan)
        individual = np.where(own_best > 0, medians / own_best, np.nan)
    return relative, individual, starts


def _first_lasting(over: np.ndarray, length: int) -> int | None:
    """The first index of `length` consecutive True values (all of them when there are fewer windows)."""
    length = min(length, over.size)
    for i in range(over.size - length + 1):
        if over[i:i + length].all():
            return i
    return None


def rank_view(red: RunReduction, run: str, nodes: dict[int, str], threshold: float = STRAGGLER_THRESHOLD,
              window: int = WINDOW_STEPS) -> RankView:
    """nodes: rank -> the node (host) it ran on, where known."""
    ranks = red.ranks
    step_mean = red.step_stats[:, 0]
    own = red.own_matrix.mean(axis=1, dtype=np.float64)
    relative, individual, starts = window_scores(red, window)
    worst = np.nanmax(relative, axis=1) if relative.size else np.ones(len(ranks))
    worst_own = np.nanmax(individual, axis=1) if individual.size else np.ones(len(ranks))
    node_of = [nodes.get(r, "-") for r in ranks]
    typical = float(np.median(own))
    rel_mean = own / typical if typical > 0 else np.full(len(ranks), np.nan)

    order = np.argsort(-own, kind="stable")
    slowest = [{"rank": ranks[i], "node": node_of[i], "own_s": float(own[i]), "step_s": float(step_mean[i]),
                "relative": float(rel_mean[i])} for i in order[:TOP]] if len(ranks) > 1 else []
    by_node: dict[str, list[int]] = {}
    for i, n in enumerate(node_of):
        by_node.setdefault(n, []).append(i)
    node_own = {n: float(np.mean(own[idx])) for n, idx in by_node.items()}
    typical_node = float(np.median(list(node_own.values())))
    slow_nodes = [{"node": n, "ranks": len(by_node[n]), "own_s": c, "relative": c / typical_node if typical_node > 0
                   else float("nan")} for n, c in sorted(node_own.items(), key=lambda kv: -kv[1])[:TOP]] \
        if len(by_node) > 1 else []

    stragglers = []
    if len(ranks) > 1:
        for i in np.flatnonzero(worst >= threshold):
            first = _first_lasting(relative[i] >= threshold, MIN_WINDOWS)
            if first is not None:
                stragglers.append(Straggler(rank=ranks[i], node=node_of[i], score=float(worst[i]),
                                            from_step=int(starts[first]), individual=float(worst_own[i])))
        stragglers.sort(key=lambda s: -s.score)

    straggling = {s.rank: s for s in stragglers}
    n_no_sync = min((c.size for c in red.no_sync_compute), default=0)
    csv_rows = []
    for i, r in enumerate(ranks):
        row = {"world_size": red.world_size, "run": run, "rank": r, "node": node_of[i],
               **{f"step_{k}_ms": round(float(v) * 1e3, 4) for k, v in
                  zip(("mean", "p50", "p95", "p99", "max"), red.step_stats[i])},
               "window_s": round(float(red.window_s[i]), 6)}
        for col, values in red.column_means.items():
            row[f"{col.removesuffix('_s')}_mean_ms" if col.endswith("_s") else f"{col}_mean"] = \
                round(float(values[i]) * (1e3 if col.endswith("_s") else 1), 4)
        if red.comm_p95_s is not None:
            row["comm_p95_ms"] = round(float(red.comm_p95_s[i]) * 1e3, 4)
        if n_no_sync:
            row["compute_only_mean_ms"] = round(float(red.no_sync_compute[i][:n_no_sync].mean()) * 1e3, 4)
        row.update(own_mean_ms=round(float(own[i]) * 1e3, 4), relative_own=round(float(rel_mean[i]), 4),
                   worst_window_relative=round(float(worst[i]), 4),
                   worst_window_individual=round(float(worst_own[i]), 4), straggler=r in straggling,
                   straggling_from_step=straggling[r].from_step if r in straggling else "")
        csv_rows.append(row)
    return RankView(world_size=red.world_size, run=run,
                    quantiles={"step_s": [float(v) for v in np.percentile(step_mean, QUANTILES)],
                               "own_s": [float(v) for v in np.percentile(own, QUANTILES)]},
                    slowest_ranks=slowest, slowest_nodes=slow_nodes, stragglers=stragglers, threshold=threshold,
                    window_steps=window, csv_rows=csv_rows)


def nodes_of(provenance: dict, infos: dict[int, dict] | None = None) -> dict[int, str]:
    """rank -> host, from the run's provenance (its "ranks" list), else from the rank records."""
    out = {}
    for r in provenance.get("ranks") or []:
        if isinstance(r, dict) and isinstance(r.get("rank"), int):
            out[r["rank"]] = str(r.get("node_name") or r.get("hostname") or r.get("node_rank", "-"))
    if not out and infos:
        out = {rank: str(i.get("node_name") or i.get("hostname") or i.get("node_rank", "-")) for rank, i in infos.items()}
    return out


def write_rank_csv(views: dict[int, RankView], path: Path) -> Path:
    """Every rank of every world size's view, one row each."""
    rows = [row for _, v in sorted(views.items()) for row in v.csv_rows]
    names = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path


def _ms(v: float) -> str:
    return f"{v * 1e3:.1f}"


def rank_views_markdown(views: dict[int, RankView], csv_name: str | None) -> list[str]:
    """The report's per-rank section: a row per rank up to FULL_TABLE_MAX_RANKS ranks; above, the
    quantiles across ranks and the slowest ranks and nodes. Stragglers at every size."""
    if not views:
        return []
    lines = ["", "## Step time per rank (measured steps)", ""]
    small = {w: v for w, v in views.items() if w <= FULL_TABLE_MAX_RANKS}
    large = {w: v for w, v in views.items() if w > FULL_TABLE_MAX_RANKS}
    if small:
        lines += ["| world | rank | node | mean ms | p50 ms | p95 ms | p99 ms | max ms | own ms | relative own |",
                  "|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|"]
        for w, v in small.items():
            slowest = v.slowest_ranks[0]["rank"] if v.slowest_ranks else None
            for row in v.csv_rows:
                mark = " (slowest)" if row["rank"] == slowest else ""
                lines.append(f"| {w} | {row['rank']}{mark} | {row['node']} | {row['step_mean_ms']:.1f} | "
                             f"{row['step_p50_ms']:.1f} | {row['step_p95_ms']:.1f} | {row['step_p99_ms']:.1f} | "
                             f"{row['step_max_ms']:.1f} | {row['own_mean_ms']:.1f} | {row['relative_own']:.2f} |")
        lines.append("")
    if large:
        q = " | ".join("min" if p == 0 else "max" if p == 100 else f"p{p}" for p in QUANTILES)
        lines += ["Across ranks: each rank's mean over the measured steps, ms (own: see below).", "",
                  f"| world | time | {q} |", "|---:|:---|" + "---:|" * len(QUANTILES)]
        for w, v in large.items():
            for key, label in (("step_s", "step"), ("own_s", "own")):
                lines.append(f"| {w} | {label} | " + " | ".join(_ms(x) for x in v.quantiles[key]) + " |")
        lines += ["", "Slowest ranks (by mean own time; relative = against the median rank):", "",
                  "| world | rank | node | own ms | step ms | relative |", "|---:|---:|:---|---:|---:|---:|"]
        for w, v in large.items():
            lines += [f"| {w} | {r['rank']} | {r['node']} | {_ms(r['own_s'])} | {_ms(r['step_s'])} | "
                      f"{r['relative']:.2f} |" for r in v.slowest_ranks]
        if any(v.slowest_nodes for v in large.values()):
            lines += ["", "Slowest nodes (mean own time of their ranks; relative = against the median node):", "",
                      "| world | node | ranks | own ms | relative |", "|---:|:---|---:|---:|---:|"]
            for w, v in large.items():
                lines += [f"| {w} | {n['node']} | {n['ranks']} | {_ms(n['own_s'])} | {n['relative']:.2f} |"
                          for n in v.slowest_nodes]
        lines.append("")
    lines += _straggler_lines(views)
    if csv_name:
        lines += ["", f"Every rank's figures: `{csv_name}`."]
    return lines


def _straggler_lines(views: dict[int, RankView]) -> list[str]:
    v0 = next(iter(views.values()))
    lines = [f"Own time: the step outside collectives where the strategy times them, else compute time (the "
             f"others wait for a slow rank inside a collective). Stragglers: relative score (a rank's median own time "
             f"in a window of {v0.window_steps} measured steps against the median rank's) of {v0.threshold:g} or more "
             f"in {MIN_WINDOWS} consecutive windows (report --straggler-threshold)."]
    for w, v in views.items():
        if w < 2:
            continue
        if not v.stragglers:
            lines.append(f"- world {w}: none")
            continue
        shown = v.stragglers[:TOP]
        more = f" and {len(v.stragglers) - TOP} more (see the CSV)" if len(v.stragglers) > TOP else ""
        lines.append(f"- world {w}: " + "; ".join(
            f"rank {s.rank} on {s.node}, score {s.score:.2f} from measured step {s.from_step} "
            f"(individual {s.individual:.2f})" for s in shown) + more)
    return lines
