"""Recovery engines head to head: the same workload and the same failure trace under each engine,
and one comparison of them (``trainscale drill --engine torchrun,torchft --trace FILE ...``).

Per engine, from its drill record (faults/drill.py) and its rows:
- time_to_target_s: the job's first run_start -> the end of the target step (restart engines: rank
  0's last run_stop; torchft: the first replica group to reach the target);
- ETTR and badput by category (the drill's goodput);
- lost_steps: steps run again (restart engines: each fault's failed step back to the restored
  checkpoint; torchft: the healthy groups' uncommitted steps), and lost_samples: the samples of those
  steps plus, under torchft, the batches of the groups missing from steps run with fewer replicas;
- per fault: the healthy ranks' stall (restart engines: every rank stops, the whole recovery;
  torchft: the healthy groups' stall) and the victim's recovery (back training);
- under torchft, the loss curve's distance from a restart engine's run, which is bitwise equal to an
  uninterrupted run (tests/test_drill.py holds the restart engines to that).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from trainscale.analysis.eventlog import all_of, mono_s, read_events
from trainscale.analysis.recovery import rank_attempt_rows
from trainscale.faults.kinds import TORCHFT
from trainscale.faults.torchft_drill import GroupFiles, loss_by_step, read_groups
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json, write_json_atomic, write_text_atomic

COMPARISON = "comparison.json"
COMPARISON_MD = "comparison.md"
PROGRESS_PNG = "progress.png"
ENGINE_LAUNCHERS = {"torchrun": "local", "ray": "ray", "slurm": "slurm", TORCHFT: TORCHFT}


def _restart_progress(run_dir: Path) -> tuple[list[tuple[float, int]], float | None, float | None]:
    """Rank 0's (time, steps done) at each step's end across attempts; first run_start; last run_stop."""
    events = read_events(run_dir / schema.EVENTS) if (run_dir / schema.EVENTS).exists() else []
    starts = [mono_s(e) for e in all_of(events, "run_start")]
    stops = [mono_s(e) for e in all_of(events, "run_stop")]
    points = []
    for start, rows in zip(starts, rank_attempt_rows(run_dir, 0)):
        points += [(start + float(r["t_start"]) + float(r["step_s"]), int(float(r["step"])) + 1) for r in rows]
    return points, (starts[0] if starts else None), (stops[-1] if stops else None)


def engine_figures(engine: str, run_dir: Path, groups: list[GroupFiles] | None = None) -> dict:
    """One engine's row of the comparison (module docstring); groups: torchft's replica groups."""
    run_dir = Path(run_dir)
    s = read_json(run_dir / schema.SUMMARY)
    out = {"engine": engine, "run_dir": str(run_dir), "status": s["status"], "reason": s.get("reason"),
           "ettr": (s.get("goodput") or {}).get("ettr"), "badput_s": (s.get("goodput") or {}).get("badput_s", {}),
           "faults_fired": sum(1 for f in (s.get("drill") or {}).get("faults", []) if f.get("fired"))}
    recs = s.get("recovery") or []
    if engine == TORCHFT:
        starts = [g.run_starts[0] for g in groups if g.run_starts]
        stops = [mono_s(e) for g in groups for e in all_of(g.events, "run_stop")]
        t = s.get("torchft") or {}
        lost_steps = sum(r.get("lost_steps") or 0 for r in recs)
        step_samples = _step_samples(run_dir, 0) * len(groups)
        out.update(time_to_target_s=(min(stops) - min(starts)) if starts and stops else None,
                   lost_steps=lost_steps,
                   lost_samples=lost_steps * step_samples + t.get("replicas", {}).get("samples_lost", 0),
                   steps_with_fewer_replicas=t.get("replicas", {}).get("steps_with_fewer_replicas"),
                   final_params_bitwise_equal=t.get("final_state", {}).get("bitwise_equal"),
                   faults=[{"fault": r["fault"], "step": r["step"], "healthy_stall_s": r.get("stall_s"),
                            "victim_back_s": r.get("rejoin_s")} for r in recs])
    else:
        _points, start, stop = _restart_progress(run_dir)
        lost_steps = sum(r["step"] - r["resumed_step"] + 1 for r in recs if r.get("resumed_step") is not None)
        out.update(time_to_target_s=(stop - start) if start is not None and stop is not None else None,
                   lost_steps=lost_steps, lost_samples=lost_steps * _step_samples(run_dir, 0) * int(s["world_size"]),
                   steps_with_fewer_replicas=0, final_params_bitwise_equal=None,
                   faults=[{"fault": r["fault"], "step": r["step"], "healthy_stall_s": r.get("total_s"),
                            "victim_back_s": r.get("total_s"), "cut_short": bool(r.get("cut_short"))}
                           for r in recs])
    return out


def _step_samples(run_dir: Path, rank: int) -> float:
    rows = [r for rows in rank_attempt_rows(run_dir, rank) for r in rows if float(r["samples"]) > 0]
    return float(rows[0]["samples"]) if rows else 0.0


def loss_distance(groups: list[GroupFiles], reference_dir: Path, reference: str) -> dict | None:
    """Mean and max |loss difference| per step: torchft (the mean over the groups that committed the
    step) against the reference run (the mean over its ranks; rank r reads group r's batches)."""
    ft = loss_by_step(groups)
    world = int(read_json(reference_dir / schema.SUMMARY)["world_size"])
    per_rank = [_rank_losses(reference_dir, r) for r in range(world)]
    ref = {s: statistics.fmean(p[s] for p in per_rank if s in p) for s in per_rank[0]}
    common = sorted(set(ft) & set(ref))
    if not common:
        return None
    diffs = [abs(ft[s] - ref[s]) for s in common]
    return {"reference": reference, "steps": len(common), "mean_abs": statistics.fmean(diffs), "max_abs": max(diffs)}


def _rank_losses(run_dir: Path, rank: int) -> dict[int, float]:
    """The rank's loss per step (the last run of each step: what the model kept)."""
    out: dict[int, float] = {}
    for rows in rank_attempt_rows(run_dir, rank):
        for r in rows:
            out[int(float(r["step"]))] = float(r["loss"])
    return out


def compare(campaign_dir: Path, runs: dict[str, Path], trace_file: Path) -> dict:
    """Write the comparison (JSON, markdown, progress plot) of the engines' drills; the comparison."""
    ft_groups = (read_groups(runs[TORCHFT], int(read_json(runs[TORCHFT] / schema.SUMMARY)["world_size"]))
                 if TORCHFT in runs else None)
    rows = [engine_figures(engine, run_dir, ft_groups) for engine, run_dir in runs.items()]
    restart_ok = next((r["engine"] for r in rows if r["engine"] != TORCHFT and r["status"] == "ok"), None)
    if restart_ok is not None:
        for row in rows:
            if row["engine"] == TORCHFT and row["status"] == "ok":
                row["loss_distance"] = loss_distance(ft_groups, runs[restart_ok], restart_ok)
    out = {"trace": str(trace_file), "engines": rows}
    write_json_atomic(campaign_dir / COMPARISON, out)
    progress_plot(runs, campaign_dir / PROGRESS_PNG, ft_groups)
    write_text_atomic(campaign_dir / COMPARISON_MD, markdown(out))
    return out


def _f(v, fmt: str = ".2f", unit: str = " s") -> str:
    return "n/a" if v is None else f"{v:{fmt}}{unit}"


def _stall(f: dict) -> str:
    """A fault's stall; a restart the next fault cut short (before the failed step ran again) has none."""
    return "cut short by the next fault" if f.get("cut_short") else _f(f["healthy_stall_s"])


def table_rows(c: dict) -> list[list[str]]:
    """The comparison's main table: one row per engine."""
    rows = []
    for e in c["engines"]:
        stalls = [_stall(f) for f in e["faults"]]
        rows.append([e["engine"], e["status"], _f(e["time_to_target_s"]), _f(e["ettr"], ".3f", ""),
                     ", ".join(stalls) or "none", str(e["lost_steps"]), f"{e['lost_samples']:,.0f}",
                     str(e["steps_with_fewer_replicas"])])
    return rows


TABLE_HEAD = ["engine", "status", "time to target steps", "ETTR", "healthy ranks' stall per fault",
              "steps lost", "samples lost", "steps with fewer replicas"]


def markdown(c: dict) -> str:
    lines = ["# Recovery engines head to head", "", f"Same workload, same failure trace (`{c['trace']}`) under each "
             "engine. Stall: the time the ranks that did not fail could not train (a restart engine stops them "
             "all for the whole recovery; torchft's healthy groups wait for the new quorum).", "",
             "| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(c)]
    lines += ["", "## Badput by category (seconds)", ""]
    cats = sorted({k for e in c["engines"] for k in e["badput_s"]})
    lines += ["| engine | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for e in c["engines"]:
        lines.append(f"| {e['engine']} | " + " | ".join(_f(e["badput_s"].get(k), ".3f", "") for k in cats) + " |")
    lines += ["", "## Per fault", "", "| engine | fault | step | healthy ranks' stall | victim back training after |",
              "|---|---|---|---|---|"]
    for e in c["engines"]:
        lines += [f"| {e['engine']} | {f['fault']} | {f['step']} | {_stall(f)} | "
                  f"{_f(f['victim_back_s'])} |" for f in e["faults"]]
    for e in c["engines"]:
        if e.get("final_params_bitwise_equal") is not None:
            lines.append(f"\n{e['engine']}: final parameters of every replica group "
                         + ("bitwise equal" if e["final_params_bitwise_equal"] else "DIFFER"))
        if e.get("loss_distance"):
            d = e["loss_distance"]
            lines.append(f"{e['engine']}: loss curve against {d['reference']}'s (bitwise equal to an uninterrupted "
                         f"run): mean |difference| {d['mean_abs']:.4g} over {d['steps']} steps, max {d['max_abs']:.4g}")
        if e["status"] != "ok":
            lines.append(f"\n{e['engine']} failed: {e['reason']}")
    lines += ["", "Each engine's own drill report is in its folder (drill_report.md).", "",
              f"![progress]({PROGRESS_PNG})", ""]
    return "\n".join(lines)


def progress_plot(runs: dict[str, Path], path: Path, ft_groups: list[GroupFiles] | None = None) -> Path:
    """Steps done against seconds since the job's first run_start, one line per engine, faults marked."""
    from trainscale.analysis.plots import _save, plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (engine, run_dir) in enumerate(runs.items()):
        colour = f"C{i}"
        if engine == TORCHFT:
            groups = ft_groups or []
            t0 = min((g.run_starts[0] for g in groups if g.run_starts), default=0.0)
            best: dict[int, float] = {}
            for g in groups:
                for _s, end, r in g.rows_mono():
                    if r["committed"]:
                        step = int(r["step"]) + 1
                        best[step] = min(best.get(step, end), end)
            points = sorted((t, s) for s, t in best.items())
            faults = [mono_s(e) for g in groups for e in all_of(g.events, schema.EVENT_FAULT)]
        else:
            points, t0, _stop = _restart_progress(run_dir)
            events = read_events(run_dir / schema.EVENTS) if (run_dir / schema.EVENTS).exists() else []
            faults = [mono_s(e) for e in all_of(events, schema.EVENT_FAULT)]
            t0 = t0 or 0.0
        ax.plot([t - t0 for t, _ in points], [s for _, s in points], ".", markersize=2, color=colour, label=engine)
        for f in faults:
            ax.axvline(f - t0, color=colour, linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds since the job's first run_start")
    ax.set_ylabel("steps done (the model's progress)")
    ax.set_title("same failure trace, each engine (faults dashed in the engine's colour)")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
