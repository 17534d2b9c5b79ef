"""One pass over a run's samples, rank by rank, down to what every analysis reads.

A 16,384-rank run has 16 million sample rows: they are never held at once. Each rank's rows are
read (scaling/results/sample_files.py), folded into the per-step maxima and sums, per-rank summaries
and two rank x step matrices, of step time and (float32) of each rank's own time (the heatmap and the
straggler view), and dropped. runs.run_metrics and comm_overhead.comm_overhead compute their figures from the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from trainscale.scaling.results import schema

BREAKDOWN = ("data_s", "compute_s", "optimizer_s")
COMM_S, COMM_OPS = schema.COMM_COLUMNS


def measured(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mask = cols["phase"] == schema.PHASE_MEASURED
    return {k: v[mask] for k, v in cols.items()}


def rank_step_tiles(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Per measured step, the wall time from its start to the next step's start, less any evaluation
    run in between; the last tile is the last step itself. The tiles sum to the rank's window, so
    gaps between steps (epoch starts, loader restarts) count against throughput."""
    m = measured(cols)
    if m["step"].size == 0:
        return np.zeros(0)
    tiles = np.append(np.diff(m["t_start"]), m["step_s"][-1])
    if "eval_s" in m:  # evaluations after measured steps, except the last one (it ends the window)
        tiles[:-1] -= np.nan_to_num(m["eval_s"][:-1])
    return tiles


def own_time(m: dict[str, np.ndarray]) -> np.ndarray:
    """Per step, the time a rank spent on its own work: the step outside gradient collectives and
    buffer broadcasts (step_s - comm_s - buffer_sync_s) where the strategy times them, else its compute
    time. In a synchronous step the others wait for the slowest rank inside a collective (with DDP
    inside backward, so inside compute_s too): their own time shrinks by the wait, and the rank they
    waited for stands out."""
    if COMM_S in m:
        return m["step_s"] - m[COMM_S] - np.nan_to_num(m.get(schema.BUFFER_SYNC_COLUMN, 0.0))
    return m["compute_s"]


@dataclass
class RunReduction:
    """A run's samples reduced; per-rank arrays follow ``ranks`` (ascending)."""
    ranks: list[int]
    warmup_steps: int
    measured_steps: int
    step_numbers: np.ndarray | None  # the measured steps' numbers; None when the ranks disagree on them
    global_step_s: np.ndarray  # per measured step, the slowest rank's step time
    loss_mean: np.ndarray  # per measured step, the mean loss of the ranks that recorded one (NaN: none)
    samples_per_step: np.ndarray  # per measured step, summed over ranks
    window_s: np.ndarray  # per rank: its measured window (sum of its tiles)
    window_rank: int  # the rank with the longest window
    window_tiles: np.ndarray  # that rank's tiles
    window_rank_step_s: np.ndarray  # that rank's measured step times
    step_stats: np.ndarray  # per rank: mean, p50, p95, p99, max of its measured step times
    column_means: dict[str, np.ndarray]  # per rank: the mean of each breakdown and comm column
    step_matrix: np.ndarray  # ranks x measured steps: step_s
    own_matrix: np.ndarray  # float32, ranks x measured steps: the rank's own time (own_time)
    timed_comm: bool  # the strategy timed its gradient collectives (comm_s, comm_ops)
    comm_p95_s: np.ndarray | None  # per rank, p95 of comm_s
    compute_step_sum: np.ndarray | None  # per measured step, compute_s summed over ranks
    no_sync_compute: list[np.ndarray] = field(default_factory=list)  # per rank, compute_s of its no_sync steps

    @property
    def world_size(self) -> int:
        return len(self.ranks)


def reduce_ranks(items: Iterable[tuple[int, dict[str, np.ndarray]]]) -> RunReduction:
    """Fold (rank, columns) pairs, in any order, into a RunReduction. ValueError when there are no
    ranks, or the ranks disagree on their measured steps or have none."""
    rows: dict[int, dict] = {}
    steps = global_step = samples_sum = compute_sum = warmup = step_numbers = loss_sum = loss_n = None
    numbers_agree = True
    step_rows: list[tuple[int, np.ndarray]] = []
    own_rows: list[tuple[int, np.ndarray]] = []
    best: tuple[float, int] | None = None
    best_tiles = best_steps = None
    lowest = 0
    counts: dict[int, int] = {}
    for rank, cols in items:
        m = measured(cols)
        n = int(m["step"].size)
        counts[rank] = n
        if steps is None:
            steps = n
        if n != steps or n == 0:
            continue  # reported below, with every rank's count
        if global_step is None:
            global_step, samples_sum = m["step_s"].copy(), m["samples"].copy()
            compute_sum = np.zeros(n) if "compute_s" in m else None
            step_numbers, loss_sum, loss_n = m["step"].astype(np.int64), np.zeros(n), np.zeros(n)
        else:
            np.maximum(global_step, m["step_s"], out=global_step)
            samples_sum += m["samples"]
            numbers_agree = numbers_agree and np.array_equal(m["step"], step_numbers)
        has_loss = np.isfinite(m["loss"])
        loss_sum += np.where(has_loss, m["loss"], 0.0)
        loss_n += has_loss
        if warmup is None or rank < lowest:  # the lowest rank's warmup count, as the ranks agree on steps
            warmup, lowest = int(np.sum(cols["phase"] == schema.PHASE_WARMUP)), rank
        step_rows.append((rank, m["step_s"]))
        own_rows.append((rank, own_time(m).astype(np.float32)))
        if compute_sum is not None:
            compute_sum += m["compute_s"]
        tiles = rank_step_tiles(cols)
        window = float(tiles.sum())
        if best is None or (window, -rank) > best:
            best, best_tiles, best_steps = (window, -rank), tiles, m["step_s"].copy()
        no_sync = cols["phase"] == schema.PHASE_NO_SYNC
        rows[rank] = {
            "window": window,
            "means": {c: float(m[c].mean()) for c in (*BREAKDOWN, *schema.COMM_COLUMNS) if c in m},
            "comm_p95": float(np.percentile(m[COMM_S], 95)) if COMM_S in m else None,
            "no_sync": cols["compute_s"][no_sync].copy() if "compute_s" in cols else np.zeros(0),
        }
    if not counts:
        raise ValueError("run has no samples")
    if len(set(counts.values())) != 1 or steps == 0:
        raise ValueError(f"ranks disagree on measured steps or have none: {dict(sorted(counts.items()))}")
    ranks = sorted(rows)
    order = {r: i for i, r in enumerate(ranks)}
    step_matrix = np.vstack([v for _, v in sorted(step_rows, key=lambda rv: order[rv[0]])])
    step_rows.clear()
    stats = np.column_stack([step_matrix.mean(axis=1), *np.percentile(step_matrix, [50, 95, 99], axis=1),
                             step_matrix.max(axis=1)])
    own_matrix = np.vstack([v for _, v in sorted(own_rows, key=lambda rv: order[rv[0]])])
    with np.errstate(invalid="ignore", divide="ignore"):
        loss_mean = loss_sum / loss_n
    mean_names = rows[ranks[0]]["means"].keys()
    timed = COMM_S in rows[ranks[0]]["means"]
    return RunReduction(
        ranks=ranks, warmup_steps=int(warmup), measured_steps=int(steps),
        step_numbers=step_numbers if numbers_agree else None, global_step_s=global_step, loss_mean=loss_mean,
        samples_per_step=samples_sum, window_s=np.array([rows[r]["window"] for r in ranks]),
        window_rank=-best[1], window_tiles=best_tiles, window_rank_step_s=best_steps,
        step_stats=stats,
        column_means={c: np.array([rows[r]["means"][c] for r in ranks]) for c in mean_names},
        step_matrix=step_matrix, own_matrix=own_matrix, timed_comm=timed,
        comm_p95_s=np.array([rows[r]["comm_p95"] for r in ranks]) if timed else None,
        compute_step_sum=compute_sum, no_sync_compute=[rows[r]["no_sync"] for r in ranks])
