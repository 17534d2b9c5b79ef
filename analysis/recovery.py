"""A drill's figures from a run folder's raw files (docs/method.md "Recovery time", "Goodput / ETTR",
"Checkpoint interval"): the recovery timeline of every injected fault, the checkpoint save figures,
and goodput with its badput breakdown.

Clocks: every time is a ``mono_s`` reading of CLOCK_MONOTONIC (events.log, agent_events.jsonl) or a
rank's duration; the faulty rank, the agent and rank 0 run on one machine (local launcher, emulated
nodes), which share that clock. Rank 0's samples time the steps.

Recovery timeline of a fault at step S (failure = the faulty rank's ts_fault event):
  detection_s    failure -> the agent sees the worker group failed (agent_events.jsonl)
  restart_s      -> the new rank 0's main() starts (process spawn, interpreter, imports)
  rendezvous_s   -> its process group is ready (rendezvous, init_process_group)
  restore_s      the checkpoint restore (ts_checkpoint_restore), fallbacks included
  lost_work_s    recomputing the steps from the restored step to S (first attempt's work lost)
  total_s        failure -> the end of step S in the new attempt (docs/method.md: the first step past
                 the step where it failed); other_s = total minus the phases (model and data set-up)
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from statistics import mean, median

from trainscale.scaling.results import schema
from trainscale.analysis.eventlog import all_of, mono_s, read_events


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("phase") in (schema.PHASE_WARMUP, schema.PHASE_MEASURED)]


def rank_attempt_rows(run_dir: Path, rank: int = 0) -> list[list[dict]]:
    """The rank's sample rows per attempt, oldest first (earlier attempts from samples/attempts/)."""
    final = schema.samples_path(run_dir, rank)
    earlier = sorted((final.parent / schema.ATTEMPTS_DIR).glob(f"{final.stem}-attempt*.csv"),
                     key=lambda p: int(p.stem.rsplit("attempt", 1)[1]))
    attempts = [_rows(p) for p in earlier]
    for last in (final, final.with_suffix(".csv.partial")):
        if last.exists():
            attempts.append(_rows(last))
            break
    return attempts


def read_agent_events(run_dir: Path) -> list[dict]:
    """Every agent's reactions (one file per node on multi-node launches), in time order."""
    out = []
    for path in sorted(Path(run_dir).glob(schema.AGENT_EVENTS.replace(".jsonl", "*.jsonl"))):
        out += [{**json.loads(line), "file": path.name} for line in path.read_text().splitlines() if line.strip()]
    return sorted(out, key=lambda e: e["mono_s"])


def _attempts(events: list[dict]) -> list[dict]:
    """Per attempt (in log order): its ts_attempt event and the events up to the next attempt."""
    out: list[dict] = []
    for e in events:
        if e["key"] == schema.EVENT_ATTEMPT:
            out.append({"attempt": e, "events": []})
        elif out:
            out[-1]["events"].append(e)
    return out


def _first(events: list[dict], key: str, event_type: str | None = None) -> dict | None:
    return next((e for e in events if e["key"] == key and (event_type is None or e["event_type"] == event_type)),
                None)


def crash_faults(events: list[dict]) -> list[dict]:
    """The first crash fault of each attempt (kill-node fires on every rank of the node)."""
    out = []
    for att in _attempts(events):
        first = next((e for e in att["events"] if e["key"] == schema.EVENT_FAULT and e["value"] != "slow"), None)
        if first is not None:
            out.append(first)
    return out


def recovery_timelines(run_dir: Path) -> list[dict]:
    run_dir = Path(run_dir)
    events = read_events(run_dir / schema.EVENTS)
    agent = read_agent_events(run_dir)
    attempts = _attempts(events)
    rows_by_attempt = rank_attempt_rows(run_dir, 0)
    out = []
    for fault in crash_faults(events):
        t_fail, failed_step = mono_s(fault), int(fault["metadata"]["step"])
        entry: dict = {"fault": fault["value"], "rank": fault["metadata"]["rank"], "step": failed_step,
                       "detection_s": None, "restart_s": None, "rendezvous_s": None, "restore_s": None,
                       "lost_work_s": None, "total_s": None, "recovered": False}
        seen = next((a for a in agent if a["mono_s"] >= t_fail), None)
        if seen is not None:
            entry["detection_s"] = seen["mono_s"] - t_fail
        nxt = next(((i, a) for i, a in enumerate(attempts) if mono_s(a["attempt"]) > t_fail), None)
        if nxt is None:
            out.append(entry)
            continue
        i, att = nxt
        meta = att["attempt"]["metadata"]
        if seen is not None:
            entry["restart_s"] = meta["main_mono_s"] - seen["mono_s"]
        entry["rendezvous_s"] = meta["pg_ready_mono_s"] - meta["main_mono_s"]
        restore = _first(att["events"], schema.EVENT_CKPT_RESTORE, "INTERVAL_END")
        run_start = _first(att["events"], "run_start")
        resumed = int(restore["value"]) if restore else 0
        entry["resumed_step"] = resumed
        entry["fallbacks"] = [{"step": e["value"], **{k: e["metadata"][k] for k in ("path", "reason")}}
                              for e in att["events"] if e["key"] == schema.EVENT_CKPT_FALLBACK]
        if restore:
            entry["restore_s"] = float(restore["metadata"]["restore_s"])
        if run_start is not None and i < len(rows_by_attempt):
            steps = {int(r["step"]): r for r in rows_by_attempt[i]}
            t0 = mono_s(run_start)
            if resumed in steps and failed_step in steps:
                entry["lost_work_s"] = float(steps[failed_step]["t_start"]) - float(steps[resumed]["t_start"])
            if failed_step in steps:
                r = steps[failed_step]
                entry["total_s"] = t0 + float(r["t_start"]) + float(r["step_s"]) - t_fail
                entry["recovered"] = True
        if entry["total_s"] is not None:
            parts = [entry[k] or 0.0 for k in ("detection_s", "restart_s", "rendezvous_s", "restore_s", "lost_work_s")]
            entry["other_s"] = entry["total_s"] - sum(parts)
        out.append(entry)
    return out


def checkpoint_figures(run_dir: Path, every_steps: int, async_save: bool) -> dict:
    events = read_events(Path(run_dir) / schema.EVENTS)
    saves = all_of(events, schema.EVENT_CKPT_SAVE)
    done = all_of(events, schema.EVENT_CKPT_COMPLETE)
    blocking = [float(e["metadata"]["blocking_s"]) for e in saves]
    total = [float(e["metadata"]["total_s"]) for e in done if e["metadata"].get("total_s") is not None]
    sizes = [int(e["metadata"]["bytes"]) for e in done if e["metadata"].get("bytes")]
    out = {"save_s_mean": mean(blocking) if blocking else None, "save_s_samples": blocking,
           "complete_s_samples": total, "bytes": sizes[-1] if sizes else None,
           "every_steps": every_steps, "async": async_save, "saves": len(blocking)}
    rows_by_attempt = rank_attempt_rows(Path(run_dir), 0)
    step_s = [float(r["step_s"]) for rows in rows_by_attempt for r in rows]
    if blocking and step_s and every_steps:
        # The loop pays one save per every_steps steps: its share of the time per step.
        out["step_overhead_frac"] = out["save_s_mean"] / (every_steps * mean(step_s) + out["save_s_mean"])
    if sizes and total:
        out["save_bytes_per_s"] = sizes[-1] / mean(total)
    staging = [int(e["metadata"]["staging_bytes"]) for e in done if e["metadata"].get("staging_bytes")]
    out["staging_bytes"] = max(staging, default=None)
    if async_save:
        out.update(steps_under_background_writes(events, rows_by_attempt))
    return out


def steps_under_background_writes(events: list[dict], rows_by_attempt: list[list[dict]]) -> dict:
    """Rank 0's step times while an asynchronous save was being written (from the save's return to the
    loop to its completion, seen at the next step boundary after the write ended) against the other
    steps of the window. Warmup steps are left out."""
    during, other = [], []
    for attempt, rows in zip(_attempts(events), rows_by_attempt):
        run_start = _first(attempt["events"], "run_start")
        if run_start is None:
            continue
        t0 = mono_s(run_start)
        saves = {int(e["value"]): mono_s(e) for e in attempt["events"] if e["key"] == schema.EVENT_CKPT_SAVE}
        writes = [(saves[int(e["value"])], mono_s(e)) for e in attempt["events"]
                  if e["key"] == schema.EVENT_CKPT_COMPLETE and int(e["value"]) in saves]
        for r in rows:
            if r.get("phase") == schema.PHASE_WARMUP:
                continue
            start = t0 + float(r["t_start"])
            end = start + float(r["step_s"])
            overlaps = any(start < w_end and end > w_start for w_start, w_end in writes)
            (during if overlaps else other).append(float(r["step_s"]))
    out = {"steps_during_writes": len(during), "step_s_during_writes": median(during) if during else None,
           "step_s_otherwise": median(other) if other else None}
    out["write_step_slowdown"] = (out["step_s_during_writes"] / out["step_s_otherwise"]
                                  if during and other and out["step_s_otherwise"] > 0 else None)
    return out


def goodput(run_dir: Path) -> dict:
    """ETTR = productive time / job wall-clock time (first worker start to the last run_stop, rank 0's
    clock). Productive: compute and optimizer time of the steps that count (each step index once: its
    last run). Badput: startup, checkpoint_save, checkpoint_restore, recovery (failure to the start
    of the restore), lost_work (work after the restored checkpoint that the failure threw away),
    data_loading (data time of counted steps), other (the rest: loop overhead, set-up after restarts)."""
    run_dir = Path(run_dir)
    events = read_events(run_dir / schema.EVENTS)
    attempts = _attempts(events)
    if not attempts:
        raise ValueError(f"{run_dir}: no {schema.EVENT_ATTEMPT} event in the event log")
    first = attempts[0]["attempt"]["metadata"]
    start = first.get("process_start_mono_s") or first["main_mono_s"]
    stops = [e for e in events if e["key"] == "run_stop"]
    if not stops:
        raise ValueError(f"{run_dir}: the run never reached run_stop")
    end = mono_s(stops[-1])
    rows_by_attempt = rank_attempt_rows(run_dir, 0)
    restored = [int((_first(a["events"], schema.EVENT_CKPT_RESTORE, "INTERVAL_END") or {"value": 0})["value"])
                for a in attempts]
    productive = data = 0.0
    for i, rows in enumerate(rows_by_attempt):
        redo_from = restored[i + 1] if i + 1 < len(restored) else None
        for r in rows:
            if redo_from is not None and int(r["step"]) >= redo_from:
                continue
            productive += float(r["compute_s"]) + float(r["optimizer_s"])
            data += float(r["data_s"])
    run_starts = [_first(a["events"], "run_start") for a in attempts]
    badput = {"startup": (mono_s(run_starts[0]) - start) if run_starts[0] else 0.0,
              "checkpoint_save": sum(float(e["metadata"]["blocking_s"]) for e in events
                                     if e["key"] == schema.EVENT_CKPT_SAVE and mono_s(e) <= end),
              "checkpoint_restore": 0.0, "recovery": 0.0, "lost_work": 0.0, "data_loading": data}
    for fault in crash_faults(events):
        t_fail = mono_s(fault)
        idx = next((i for i, a in enumerate(attempts) if mono_s(a["attempt"]) > t_fail), None)
        if idx is None:
            continue
        restore_start = _first(attempts[idx]["events"], schema.EVENT_CKPT_RESTORE, "INTERVAL_START")
        restore_end = _first(attempts[idx]["events"], schema.EVENT_CKPT_RESTORE, "INTERVAL_END")
        if restore_start and restore_end:
            badput["recovery"] += mono_s(restore_start) - t_fail
            badput["checkpoint_restore"] += mono_s(restore_end) - mono_s(restore_start)
        # Lost: from the end of the save the restart resumed from (else the failed attempt's run_start).
        prev = attempts[idx - 1]["events"]
        resumed = restored[idx]
        anchor = next((e for e in prev if e["key"] == schema.EVENT_CKPT_SAVE and int(e["value"]) == resumed), None)
        anchor = anchor or _first(prev, "run_start")
        if anchor is not None:
            saves_between = sum(float(e["metadata"]["blocking_s"]) for e in prev
                                if e["key"] == schema.EVENT_CKPT_SAVE and mono_s(anchor) < mono_s(e) <= t_fail)
            badput["lost_work"] += max(0.0, t_fail - mono_s(anchor) - saves_between)
    wall = end - start
    badput["other"] = wall - productive - sum(badput.values())
    return {"ettr": productive / wall if wall > 0 else None, "wall_s": wall, "productive_s": productive,
            "badput_s": badput}


def straggler(run_dir: Path, rank: int, from_step: int) -> dict:
    """Step times before and after a straggler started: its own compute and the global step."""
    per_rank = {}
    for p in sorted((Path(run_dir) / schema.SAMPLES_DIR).glob("rank*.csv")):
        per_rank[int(p.stem[4:])] = _rows(p)

    def avg(rows, col, before):
        vals = [float(r[col]) for r in rows if (int(r["step"]) < from_step) == before]
        return mean(vals) if vals else None

    global_steps: dict[int, float] = {}
    for rows in per_rank.values():
        for r in rows:
            global_steps[int(r["step"])] = max(global_steps.get(int(r["step"]), 0.0), float(r["step_s"]))
    before = [v for s, v in global_steps.items() if s < from_step]
    after = [v for s, v in global_steps.items() if s >= from_step]
    rows = per_rank.get(rank, [])
    return {"rank": rank, "from_step": from_step, "compute_s_before": avg(rows, "compute_s", True),
            "compute_s_after": avg(rows, "compute_s", False),
            "global_step_s_before": mean(before) if before else None, "global_step_s_after": mean(after) if after else None}
