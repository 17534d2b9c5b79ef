"""What a parallel strategy costs, per rank and per run, from the files the ranks wrote
(ranks/rankNNNNN.json and the samples): memory, communication per step, pipeline bubble and MFU.

- Communication: each rank records every collective of one probe step with its payload (nccl-tests'
  message size) and group size. Payload bytes are measured; the bytes a rank puts on the wire are a
  model on top of them, labelled as such: a ring algorithm sends 2(n-1)/n of the payload per rank for
  all_reduce, (n-1)/n for all_gather, reduce_scatter and all_to_all, the payload for broadcast, reduce
  and send (nccl-tests' bus-bandwidth factors), nothing for a receive.
- Pipeline bubble: a stage's measured idle fraction is 1 - (its compute time) / (the schedule's step
  time), over the measured steps; the theoretical bubble of GPipe and 1F1B with equal stages and free
  communication is (p-1)/(m+p-1). The measured one also contains communication and stage imbalance.
- MFU: analysis.mfu, with the workload's model FLOPs per sample and the global throughput.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainscale.scaling.results.collectives import COLLECTIVES

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json
from trainscale.analysis.mfu import mfu, mfu_text
from trainscale.analysis.runs import load_rank_samples, measured
from trainscale.scaling.results.sample_files import read_rank_infos

# Kinds the probe sees in training that are not benchmark ops; the others take the op's bus factor.
PROBE_ONLY_FACTORS = {"reduce": lambda n: 1.0, "send": lambda n: 1.0, "recv": lambda n: 0.0,
                      "gather": lambda n: (n - 1) / n, "scatter": lambda n: (n - 1) / n}
WIRE_MODEL = "ring-algorithm estimate from the measured payloads (nccl-tests bus-bandwidth factors)"


def theoretical_bubble(stages: int, microbatches: int) -> float:
    """Idle fraction of GPipe and 1F1B with equal stage times and free communication."""
    return (stages - 1) / (microbatches + stages - 1)


def wire_bytes(op: dict) -> float:
    n = op.get("group_size") or 1
    if n <= 1:
        return 0.0
    kind = op["kind"]
    factor = COLLECTIVES.get(kind).bus_factor(n) if kind in COLLECTIVES else PROBE_ONLY_FACTORS.get(kind, lambda n: 1.0)(n)
    return factor * op["payload_bytes"]


def global_losses(run_dir: Path) -> np.ndarray:
    """Per-step loss of the global batch: the mean of the loss of every data-parallel replica (each
    replica's loss is recorded by its loss-holding rank; replicas have equal batches). Training steps
    only: the compute-only no_sync steps after the window update nothing."""
    infos = read_rank_infos(run_dir)
    samples = load_rank_samples(run_dir)
    holders = [r for r, i in infos.items() if i.get("parallel", {}).get("holds_loss", True)]
    if not holders:
        raise ValueError(f"no rank of {run_dir} holds the loss")
    training = {r: np.isin(samples[r]["phase"], (schema.PHASE_WARMUP, schema.PHASE_MEASURED)) for r in holders}
    return np.mean(np.vstack([samples[r]["loss"][training[r]] for r in holders]), axis=0)


def _bubble(infos: dict[int, dict], run_dir: Path, config: dict) -> dict | None:
    pp = next(iter(infos.values())).get("parallel", {}).get("pp", 1)
    if pp < 2:
        return None
    samples = load_rank_samples(run_dir)
    if any("busy_s" not in samples[r] for r in samples):
        return None
    per_stage: dict[int, list[float]] = {}
    for r, cols in samples.items():
        m = measured(cols)
        per_stage.setdefault(infos[r]["parallel"]["pp_rank"], []).append(
            float(1.0 - m["busy_s"].sum() / m["compute_s"].sum()))
    stages = {str(s): float(np.mean(v)) for s, v in sorted(per_stage.items())}
    micro = int(config.get("pipeline", {}).get("microbatches", 1))
    return {"schedule": config.get("pipeline", {}).get("schedule"), "stages": pp, "microbatches": micro,
            "theoretical": theoretical_bubble(pp, micro), "measured_mean": float(np.mean(list(stages.values()))),
            "measured_per_stage": stages,
            "definition": "1 - stage compute time / schedule step time over measured steps; theory (p-1)/(m+p-1)"}


def parallel_summary(run_dir: Path, metrics: dict, precision: str | None = None) -> dict:
    """precision: the peak MFU is taken against; default the run's own (config "precision", fp32 when absent)."""
    run_dir = Path(run_dir)
    infos = read_rank_infos(run_dir)
    if not infos or "parallel" not in next(iter(infos.values())):
        return {}
    config = read_json(run_dir / schema.CONFIG)
    precision = precision or str(config.get("precision", "fp32"))
    first = next(iter(infos.values()))
    per_rank = {}
    for r, info in infos.items():
        comm = info.get("comm") or {}
        ops = comm.get("ops")
        per_rank[str(r)] = {
            **{k: info["parallel"][k] for k in ("dp_rank", "tp_rank", "pp_rank")},
            "peak_memory_bytes": (info.get("memory") or {}).get("peak_bytes"),
            "optimizer_state_bytes": info.get("optimizer_state_bytes"),
            "comm_payload_bytes_per_step": comm.get("payload_bytes") if ops is not None else None,
            "comm_wire_bytes_per_step": sum(wire_bytes(o) for o in ops) if ops is not None else None,
            "comm_by_kind": _by_kind(ops) if ops is not None else None,
        }

    def values(key: str) -> list:
        return [v[key] for v in per_rank.values() if v[key] is not None]

    def state_total(v: dict) -> int | None:
        s = v["optimizer_state_bytes"]
        return sum(s.values()) if s else None

    states = [state_total(v) for v in per_rank.values() if state_total(v) is not None]
    world = len(infos)
    tokens_per_s = metrics["throughput"]["global_samples_per_s"]
    flops, flops_basis = model_flops(first.get("workload_facts") or {})
    peaks = [(i.get("matmul_peak") or {}).get("flops_per_s") for i in infos.values()]
    measured_peak = float(sum(peaks)) if peaks and all(peaks) else None
    return {
        "layout": first["parallel"]["label"],
        "degrees": {k: first["parallel"][k] for k in ("dp", "tp", "pp")},
        "memory_measure": (first.get("memory") or {}).get("measure"),
        "peak_memory_bytes_max": max(values("peak_memory_bytes"), default=None),
        "peak_memory_bytes_mean": float(np.mean(values("peak_memory_bytes"))) if values("peak_memory_bytes") else None,
        "optimizer_state_bytes_max": max(states, default=None),
        "comm_probe_step": (first.get("comm") or {}).get("probe_step"),
        "comm_note": (first.get("comm") or {}).get("note"),
        "comm_payload_bytes_per_step_mean": float(np.mean(values("comm_payload_bytes_per_step")))
        if values("comm_payload_bytes_per_step") else None,
        "comm_wire_bytes_per_step_mean": float(np.mean(values("comm_wire_bytes_per_step")))
        if values("comm_wire_bytes_per_step") else None,
        "comm_wire_model": WIRE_MODEL,
        "pipeline_bubble": _bubble(infos, run_dir, config),
        "flops": {"per_sample": flops, "basis": flops_basis,
                  "declared_per_sample": (first.get("workload_facts") or {}).get("model_flops_per_token")},
        "mfu": mfu(flops, tokens_per_s, world, first.get("device_name", "unknown"), precision, measured_peak,
                   flops_basis),
        "per_rank": per_rank,
    }


def model_flops(facts: dict) -> tuple[float | None, str]:
    """The model FLOPs per sample MFU uses: counted in the run (FlopCounterMode), else the workload's
    declared analytic figure (older results); and which."""
    counted = (facts.get("flops") or {}).get("flops_per_sample")
    if counted:
        return float(counted), "counted (torch.utils.flop_counter.FlopCounterMode, forward + backward)"
    declared = facts.get("model_flops_per_token")
    if declared:
        return float(declared), "declared by the workload (analytic)"
    return None, (facts.get("flops") or {}).get("reason") or "none"


def _by_kind(ops: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for o in ops:
        e = out.setdefault(o["kind"], {"calls": 0, "payload_bytes": 0, "wire_bytes": 0.0})
        e["calls"] += o["calls"]
        e["payload_bytes"] += o["payload_bytes"]
        e["wire_bytes"] += wire_bytes(o)
    return out


# -- comparison of strategies (the report's table and chart) ------------------------------------


@dataclass
class StrategyRow:
    parallel: str
    layout: str
    world_size: int
    runs_ok: int
    global_batch: float
    throughput: float  # global samples (tokens) per second, mean over ok runs
    per_device: float
    step_p50_s: float
    peak_memory_bytes: float | None  # max over ranks, mean over runs
    memory_measure: str | None
    optimizer_state_bytes: float | None  # max over ranks, mean over runs
    comm_payload_bytes: float | None  # per step, mean over ranks (measured)
    comm_wire_bytes: float | None  # per step, mean over ranks (ring model)
    bubble_measured: float | None
    bubble_theoretical: float | None
    mfu: float | None  # against the datasheet peak (None: device or precision not in the table)
    mfu_note: str | None
    mfu_of_measured_peak: float | None = None  # against the ranks' measured matmul FLOP/s
    mfu_text: str = "unavailable"  # as printed: each figure with its basis, flagged ones marked


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _mean_mfu(mfus: list[dict]) -> dict:
    """The runs' MFU figures averaged (flags of the first run, which all runs of a row share)."""
    return {**mfus[0], "value": _mean([m.get("value") for m in mfus]),
            "of_measured_peak": _mean([m.get("of_measured_peak") for m in mfus])}


def strategy_rows(runs: list) -> list[StrategyRow]:
    """One row per (strategy, world size) over the ok runs, recomputed from their raw files."""
    groups: dict[tuple[str, int], list] = {}
    for r in runs:
        if r.ok:
            groups.setdefault((r.config["parallel"], r.world_size), []).append(r)
    order = list(dict.fromkeys(r.config["parallel"] for r in runs))
    rows = []
    for (parallel, world), members in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        metrics = [r.metrics() for r in members]
        par = [parallel_summary(r.path, m) for r, m in zip(members, metrics)]
        if not all(par):
            continue
        bubbles = [p["pipeline_bubble"] for p in par if p.get("pipeline_bubble")]
        mfus = [p["mfu"] for p in par]
        xs = [m["throughput"]["global_samples_per_s"] for m in metrics]
        rows.append(StrategyRow(
            parallel=parallel, layout=par[0]["layout"], world_size=world, runs_ok=len(members),
            global_batch=float(np.mean([m["global_batch"] for m in metrics])), throughput=float(np.mean(xs)),
            per_device=float(np.mean(xs)) / world,
            step_p50_s=float(np.mean([m["step_time_s"]["p50"] for m in metrics])),
            peak_memory_bytes=_mean([p["peak_memory_bytes_max"] for p in par]), memory_measure=par[0]["memory_measure"],
            optimizer_state_bytes=_mean([p["optimizer_state_bytes_max"] for p in par]),
            comm_payload_bytes=_mean([p["comm_payload_bytes_per_step_mean"] for p in par]),
            comm_wire_bytes=_mean([p["comm_wire_bytes_per_step_mean"] for p in par]),
            bubble_measured=_mean([b["measured_mean"] for b in bubbles]),
            bubble_theoretical=bubbles[0]["theoretical"] if bubbles else None,
            mfu=_mean([m.get("value") for m in mfus]),
            mfu_note=None if mfus[0].get("value") is not None else mfus[0].get("reason"),
            mfu_of_measured_peak=_mean([m.get("of_measured_peak") for m in mfus]),
            mfu_text=mfu_text(_mean_mfu(mfus)),
        ))
    return rows


def comparison_warnings(rows: list[StrategyRow]) -> list[str]:
    """docs/method.md's fair-comparison guard: strategies at one world size must share the global batch."""
    out = []
    for world in sorted({r.world_size for r in rows}):
        batches = {r.parallel: r.global_batch for r in rows if r.world_size == world}
        if len(set(batches.values())) > 1:
            listed = ", ".join(f"{k} {v:g}" for k, v in batches.items())
            out.append(f"World size {world}: the strategies ran different global batches ({listed}): their throughput "
                       "is not a like-for-like comparison (sweep with --scaling strong for one global batch).")
    return out
