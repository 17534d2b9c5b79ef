"""Fleet-scale run folders made from a real small one: its records, rank record and sample rows
replicated to thousands of ranks in the real schema (per-node Parquet files, or per-rank CSVs as older
runs wrote them), with synchronous step times, per-rank compute noise and chosen straggling ranks.
Used by the large-folder tests and benchmarks/analysis_scale.py."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from trainscale.analysis.runs import reduce_run, run_metrics
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json, write_json_atomic
from trainscale.scaling.results.sample_files import (_write_node_samples, node_ranks_path, node_samples_path,
                                                     read_rank_csv, read_rank_infos)


def synthesize(template: Path, out: Path, ranks: int, steps: int, ranks_per_node: int = 8, packed: bool = True,
               stragglers: dict[int, tuple[float, int]] | None = None, seed: int = 0) -> Path:
    """A run folder of `ranks` ranks x `steps` measured steps at out, from the real run folder template.
    Measured step k of rank r computes for the template's compute time (cycled) x a per-rank factor x
    noise; every rank's step ends with the slowest rank's compute (synchronous data parallelism), the
    difference spent waiting in the gradient collective. stragglers: rank -> (slowdown, first measured
    step): that rank computes `slowdown` times longer from that step on."""
    template, out = Path(template), Path(out)
    if ranks % ranks_per_node:
        raise ValueError(f"ranks ({ranks}) must be a multiple of ranks_per_node ({ranks_per_node})")
    nodes = ranks // ranks_per_node
    base = read_rank_csv(schema.samples_path(template, 0))
    info0 = read_rank_infos(template)[0]
    config = read_json(template / schema.CONFIG)
    warm = base["phase"] == schema.PHASE_WARMUP
    meas = base["phase"] == schema.PHASE_MEASURED
    tail = ~(warm | meas)  # the no_sync rows after the window
    n_warm, n_tail = int(warm.sum()), int(tail.sum())
    n = n_warm + steps + n_tail
    cycle = np.flatnonzero(meas)[np.arange(steps) % int(meas.sum())]
    rows = np.r_[np.flatnonzero(warm), cycle, np.flatnonzero(tail)]
    rng = np.random.default_rng(seed)
    factor = rng.lognormal(0.0, 0.02, size=(ranks, 1))
    compute = base["compute_s"][rows][None, :] * factor * rng.lognormal(0.0, 0.03, size=(ranks, n))
    for rank, (slowdown, first) in (stragglers or {}).items():
        compute[rank, n_warm + first:n_warm + steps] *= slowdown
    synced = np.r_[np.ones(n_warm + steps, bool), np.zeros(n_tail, bool)]  # no_sync steps do not wait
    slowest = compute.max(axis=0)
    collective = base["comm_s"][rows] if "comm_s" in base else np.zeros(n)
    comm = np.where(synced, slowest - compute + collective, 0.0)
    step_s = base["data_s"][rows] + np.where(synced, slowest + collective, compute) + base["optimizer_s"][rows]
    t_start = base["t_start"][0] + np.cumsum(np.hstack([np.zeros((ranks, 1)), step_s[:, :-1]]), axis=1)

    if out.exists():
        shutil.rmtree(out)
    (out / schema.SAMPLES_DIR).mkdir(parents=True)
    (out / schema.RANKS_DIR).mkdir()
    (out / schema.TELEMETRY_DIR).mkdir()
    for name in (schema.EVENTS,):
        if (template / name).exists():
            shutil.copy(template / name, out / name)
    write_json_atomic(out / schema.CONFIG, {**config, "nodes": nodes, "nproc": ranks_per_node,
                                            "launch": {**config.get("launch", {}), "run_id": out.name}})
    columns = [c for c in base if c in ("step", "phase", "t_start", "data_s", "compute_s", "optimizer_s", "step_s",
                                        "samples", "loss", *schema.COMM_COLUMNS)]
    telemetry = read_json(schema.telemetry_paths(template, 0)[1]) if schema.telemetry_paths(template, 0)[1].exists() \
        else None
    prov_ranks = []
    for node in range(nodes):
        host = f"host{node:05d}"
        infos, samples = [], []
        for local in range(ranks_per_node):
            rank = node * ranks_per_node + local
            cols = {"step": base["step"][rows], "phase": base["phase"][rows], "t_start": t_start[rank],
                    "data_s": base["data_s"][rows], "compute_s": compute[rank], "optimizer_s": base["optimizer_s"][rows],
                    "step_s": step_s[rank], "samples": base["samples"][rows], "loss": base["loss"][rows]}
            if schema.COMM_COLUMNS[0] in columns:
                cols.update(comm_s=comm[rank], comm_ops=base["comm_ops"][rows])
            samples.append((rank, cols))
            info = {**info0, "rank": rank, "local_rank": local, "node_rank": node, "world_size": ranks,
                    "hostname": host, "node_name": host, "pid": 100000 + rank,
                    "parallel": {**info0.get("parallel", {}), "dp": ranks, "dp_rank": rank}}
            infos.append(info)
            prov_ranks.append({k: info.get(k) for k in ("rank", "node_rank", "local_rank", "hostname", "node_name")})
        if packed:
            _write_node_samples(node_samples_path(out, node), samples)
            write_json_atomic(node_ranks_path(out, node), infos)
        else:
            for (rank, cols), info in zip(samples, infos):
                _write_csv(schema.samples_path(out, rank), cols)
                (schema.rank_info_path(out, rank)).write_text(json.dumps(info))
        if telemetry is not None:
            (schema.telemetry_paths(out, node)[1]).write_text(json.dumps({**telemetry, "node_rank": node,
                                                                          "hostname": host}))
    prov = read_json(template / schema.PROVENANCE)
    write_json_atomic(out / schema.PROVENANCE, {**prov, "world_size": ranks, "ranks": prov_ranks,
                                                "hostnames": [f"host{n:05d}" for n in range(nodes)]})
    summary = read_json(template / schema.SUMMARY)
    summary.update(run_id=out.name, nodes=nodes, nproc=ranks_per_node, world_size=ranks,
                   global_batch=summary["batch_size_per_rank"] * ranks, metrics=run_metrics(reduce_run(out)),
                   parallelism=None, gpu=None)
    write_json_atomic(out / schema.SUMMARY, summary)
    return out


def _write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    names = list(cols)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for i in range(len(cols["step"])):
            w.writerow([cols[c][i] if c == "phase" else f"{cols[c][i]:.9g}" for c in names])
