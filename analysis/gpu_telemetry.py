"""A run's GPU telemetry, from the files each node wrote (telemetry/nodeNNNNN.json and .csv):
energy per window and per sample (analysis/energy.py, "GPU board only"), throttling and other GPU
processes as threats to the measurement. Everything here is recomputed from the raw samples and marks.

- Energy: per GPU the NVML energy counter's difference between two marks (else the power samples
  integrated, labelled estimated); windows: the measured window (window_start..run_stop) and the whole
  training run (run_start..run_stop). Energy per sample = the measured window's energy of all GPUs of
  all nodes / the samples (images, tokens) the window processed.
- Throttling: for each slowdown reason, the share of samples (over the node's GPUs, inside the run)
  in which NVML reported it active (clock-event reasons bit mask; NVML's documented bit values).
- Other GPU processes: processes NVML listed on the run's GPUs at the marks whose PID is none of the
  run's ranks (PIDs as NVML reports them; in a container without the host's PID namespace these may
  not match the ranks' own, which then also show here).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from trainscale.scaling.results import schema
from trainscale.analysis.energy import BOUNDARY, window_energy
from trainscale.analysis.mfu import mfu_text
from trainscale.scaling.results.files import read_json
from trainscale.scaling.results.records import GPU_SAMPLE_FIELDS
from trainscale.scaling.results.sample_files import read_rank_infos

# NVML clock-event (throttle) reasons that mean the GPU ran slower than it could (nvml.h bit values).
THROTTLE_REASONS = {
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
}
SAMPLE_FIELDS = GPU_SAMPLE_FIELDS


def write_samples(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.partial")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SAMPLE_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in SAMPLE_FIELDS})
    tmp.replace(path)


def columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Sample rows as float columns (NaN where NVML gave nothing)."""
    return {k: np.array([np.nan if r.get(k) in (None, "") else float(r[k]) for r in rows], dtype=float)
            for k in SAMPLE_FIELDS}


def read_samples(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        return columns(list(csv.DictReader(f)))


def _mark(record: dict, label: str) -> dict | None:
    return next((m for m in record.get("marks", []) if m["label"] == label), None)


def _energy(record: dict, cols: dict[str, np.ndarray], start: str, end: str) -> dict | None:
    a, b = _mark(record, start), _mark(record, end)
    if a is None or b is None:
        return None
    power = {}
    for g in {int(k) for k in a["energy_mj"]}:
        sel = (cols["gpu"] == g) & ~np.isnan(cols["power_w"])
        if sel.sum() >= 2:
            power[g] = (cols["t"][sel], cols["power_w"][sel])
    as_int = lambda d: {int(k): v for k, v in d.items()}  # JSON keys are strings
    e = window_energy(as_int(a["energy_mj"]), as_int(b["energy_mj"]), a["t"], b["t"], power)
    return {"joules": e.total_j, "per_gpu_j": {str(k): v for k, v in e.joules.items()},
            "methods": sorted(set(e.method.values())), "estimated": e.estimated, "seconds": b["t"] - a["t"],
            "gpus_without_energy": len(a["energy_mj"]) - len(e.joules)}


def throttling(cols: dict[str, np.ndarray], t0: float | None = None, t1: float | None = None) -> dict[str, float]:
    """Share of samples (in [t0, t1] when given) in which each slowdown reason was active."""
    masks = cols["clock_event_mask"]
    keep = ~np.isnan(masks)
    if t0 is not None:
        keep &= cols["t"] >= t0
    if t1 is not None:
        keep &= cols["t"] <= t1
    values = masks[keep].astype(np.int64)
    if values.size == 0:
        return {}
    shares = {label: float(np.mean((values & bit) != 0)) for bit, label in THROTTLE_REASONS.items()}
    return {label: share for label, share in shares.items() if share > 0}


def node_figures(record: dict, cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a node's record holds beside its raw marks: energy per window and throttling in the run."""
    start, stop = _mark(record, schema.MARK_RUN_START), _mark(record, schema.MARK_RUN_STOP)
    return {
        "energy": {"boundary": BOUNDARY,
                   "window": _energy(record, cols, schema.MARK_WINDOW_START, schema.MARK_RUN_STOP),
                   "run": _energy(record, cols, schema.MARK_RUN_START, schema.MARK_RUN_STOP)},
        "throttling": throttling(cols, start["t"] if start else None, stop["t"] if stop else None),
        "samples": int(cols["t"].size),
    }


def other_processes(record: dict, our_pids: set[int]) -> list[dict]:
    seen: dict[tuple[int, int], dict] = {}
    for label, procs in (record.get("processes") or {}).items():
        for p in procs:
            if p["pid"] not in our_pids:
                seen.setdefault((p["gpu"], p["pid"]), {**p, "seen_at": []})["seen_at"].append(label)
    return list(seen.values())


def load_nodes(run_dir: Path) -> list[tuple[dict, dict[str, np.ndarray] | None]]:
    out = []
    for path in sorted((Path(run_dir) / schema.TELEMETRY_DIR).glob("node*.json")):
        record = read_json(path)
        cols = None
        if record.get("available") and (path.parent / record.get("samples_file", "")).is_file():
            cols = read_samples(path.parent / record["samples_file"])
        out.append((record, cols))
    return out


def run_gpu_summary(run_dir: Path, window_samples: float | None, sample_unit: str, our_pids: set[int]) -> dict:
    """The run's GPU figures for summary.json, recomputed from the nodes' files."""
    nodes = load_nodes(run_dir)
    if not nodes:
        return {"available": False, "reason": "no GPU telemetry: the run wrote no telemetry files", "nodes": []}
    per_node, threats = [], []
    window_j = run_j = 0.0
    estimated, complete = False, True
    for record, cols in nodes:
        host = record.get("hostname", f"node {record.get('node_rank')}")
        if not record.get("available") or cols is None:
            per_node.append({"node_rank": record.get("node_rank"), "hostname": host, "available": False,
                             "reason": record.get("reason") or "no GPU telemetry: samples file missing"})
            complete = False
            continue
        figures = node_figures(record, cols)
        others = other_processes(record, our_pids)
        per_node.append({"node_rank": record.get("node_rank"), "hostname": host, "available": True,
                         "gpus": [g.get("name") for g in record.get("gpus", [])], **figures,
                         "other_processes": others})
        for label, share in figures["throttling"].items():
            threats.append(f"{host}: {label} in {share:.0%} of GPU samples")
        if others:
            threats.append(f"{host}: {len(others)} other GPU process(es) on the run's GPUs "
                           f"(PIDs {', '.join(str(o['pid']) for o in others)})")
        win, run = figures["energy"]["window"], figures["energy"]["run"]
        if win is None or run is None or win["gpus_without_energy"] or run["gpus_without_energy"]:
            complete = False
        else:
            window_j += win["joules"]
            run_j += run["joules"]
            estimated |= win["estimated"] or run["estimated"]
    available = [n for n in per_node if n["available"]]
    summary: dict[str, Any] = {"available": bool(available), "nodes": per_node, "threats": threats}
    if not available:
        summary["reason"] = per_node[0]["reason"]
        return summary
    if complete:
        summary["energy"] = {
            "boundary": BOUNDARY, "estimated": estimated,
            "method": "integrated power samples (estimated)" if estimated else "NVML total energy counter",
            "window_j": window_j, "run_j": run_j, "unit": sample_unit,
            "per_sample_j": window_j / window_samples if window_samples else None,
        }
    else:
        summary["energy"] = None
        summary["energy_note"] = "energy unavailable: a node or GPU has neither an energy counter nor power samples"
    return summary


# -- the report's section ------------------------------------------------------------------------


def _pids(run_dir: Path) -> set[int]:
    return {int(i["pid"]) for i in read_rank_infos(run_dir).values() if i.get("pid") is not None}


def report_rows(runs: list) -> list[dict]:
    """Per ok run (analysis.runs.Run): GPU telemetry, energy, threats and MFU, from its raw files."""
    from trainscale.analysis.strategies import parallel_summary

    rows = []
    for r in runs:
        if not r.ok:
            continue
        try:
            metrics = r.metrics()
        except ValueError:
            continue
        unit = r.summary.get("sample_unit", "samples")
        gpu = run_gpu_summary(r.path, metrics["global_batch"] * metrics["measured_steps"], unit, _pids(r.path))
        par = parallel_summary(r.path, metrics) or {}
        rows.append({"run": r.path.name, "world_size": r.world_size, "precision": r.config.get("precision", "fp32"),
                     "unit": unit, "gpu": gpu, "mfu": par.get("mfu")})
    return rows


def _j(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def section_markdown(rows: list[dict]) -> list[str]:
    """'GPU telemetry, energy and MFU': threats to the measurement (throttling with its share of samples,
    other GPU processes, runs without telemetry), energy per sample and per run, MFU."""
    if not rows:
        return []
    lines = ["", "## GPU telemetry, energy and MFU", ""]
    without = [r for r in rows if not r["gpu"].get("available")]
    if without:
        reasons = sorted({r["gpu"].get("reason", "no GPU telemetry") for r in without})
        lines.append(f"- Threat: {len(without)} of {len(rows)} run(s) have no GPU telemetry ({'; '.join(reasons)}): "
                     "throttling, other GPU processes and energy were not measured for them.")
    for r in rows:
        for t in r["gpu"].get("threats", []):
            lines.append(f"- Threat ({r['run']}, world {r['world_size']}): {t}.")
    if not without and not any(r["gpu"].get("threats") for r in rows):
        lines.append("- No throttling and no other GPU processes were seen on the runs' GPUs.")
    measured = [r for r in rows if r["gpu"].get("energy")]
    if measured:
        e0 = measured[0]["gpu"]["energy"]
        lines += ["", f"Energy: {e0['boundary']} (host CPUs, memory, network and cooling are not in it); per sample = "
                      "energy of all the run's GPUs over the measured window / samples in the window.", "",
                  "| run | world | precision | energy per sample (J) | window energy (J) | run energy (J) | method |",
                  "|---|---:|---|---:|---:|---:|---|"]
        for r in measured:
            e = r["gpu"]["energy"]
            lines.append(f"| {r['run']} | {r['world_size']} | {r['precision']} | {_j(e['per_sample_j'])} per "
                         f"{e['unit'].rstrip('s')} | {_j(e['window_j'], '.1f')} | {_j(e['run_j'], '.1f')} | "
                         f"{e['method']} |")
    with_mfu = [r for r in rows if r["mfu"]]
    if with_mfu:
        lines += ["", "| run | world | precision | MFU | basis |", "|---|---:|---|---:|---|"]
        for r in with_mfu:
            m = r["mfu"]
            lines.append(f"| {r['run']} | {r['world_size']} | {r['precision']} | {mfu_text(m)} | "
                         f"{m.get('basis') or m.get('reason')} |")
    return lines


def summary_line(gpu: dict | None) -> str:
    """One line for the console: the run's GPU energy and threats, or why there is no GPU telemetry."""
    if not gpu or not gpu.get("available"):
        return (gpu or {}).get("reason") or "no GPU telemetry"
    e = gpu.get("energy")
    parts = [f"energy {e['per_sample_j']:.4g} J per {e['unit'].rstrip('s')} in the measured window "
             f"({e['boundary']}, {e['method']})" if e and e.get("per_sample_j") is not None
             else gpu.get("energy_note", "energy unavailable")]
    parts += [f"threat: {t}" for t in gpu.get("threats", [])]
    return "; ".join(parts)
