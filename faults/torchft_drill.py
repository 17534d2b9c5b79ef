"""The record of a drill under torchft (launchers/torchft_groups.py): what per-step fault tolerance
did with each fault, from the replica groups' own files.

Each group writes its event log (events-groupG.log: its attempts, run_start, the faults it fired, its
heals), its agent's reactions (agent_events-groupG.jsonl) and its step rows (samples/rankG.csv; an
earlier attempt's rows under samples/attempts/): each row says who took part in the step
(``participants``) and whether it was committed. Per fault:

- detection_s: the fault -> the victim's agent saw its worker fail;
- restart_s: -> the victim's new process started (none when the victim never died: a partitioned
  group's collectives time out, it rejoins once its link is back and heals, still the same process);
- rejoin_s: the fault -> the victim's group back in a quorum, healed (its state loaded from a peer);
  heal_s is that quorum's own time, the state transfer included;
- stall_s of each healthy group: the time the step in flight at the fault took, until the first
  step committed without the victim, beyond one normal step (the failed all-reduce, the Lighthouse
  dropping the dead group after its heartbeat timeout, the new quorum); lost_steps: the steps it ran
  that were not committed (they ran again).

For the job: the steps that ran with fewer replicas (and the samples the missing groups would have
added), whether every group ends with bitwise-equal parameters, and goodput with the categories of
restart drills (analysis/recovery.py), from the group that reached the target steps first.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from trainscale.analysis.eventlog import all_of, mono_s, read_events
from trainscale.analysis.recovery import rank_attempt_rows, read_agent_events
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import ResultsError, read_json
from trainscale.scaling.runtime.torchft_loop import EVENT_HEAL, group_events_path


@dataclass
class GroupFiles:
    """One replica group's records: events, its agent's reactions, its attempts' rows."""
    group: int
    events: list[dict]
    agent_failed_mono: list[float]
    attempts: list[list[dict]]  # rows of each attempt, in order (the last is samples/rankG.csv)
    run_starts: list[float]  # each attempt's run_start (mono)

    def rows_mono(self) -> list[tuple[float, float, dict]]:
        """Every row of every attempt as (start, end, row) on the machine's monotonic clock."""
        out = []
        for start, rows in zip(self.run_starts, self.attempts):
            out += [(start + r["t_start"], start + r["t_start"] + r["step_s"], r) for r in rows]
        return out


def _numeric(rows: list[dict], where: str) -> list[dict]:
    try:
        return [{k: (float(v) if k != "phase" else v) for k, v in r.items()} for r in rows]
    except (ValueError, TypeError) as e:
        raise ResultsError(f"{where}: unreadable step rows ({e})") from None


def read_groups(run_dir: Path, n_groups: int) -> list[GroupFiles]:
    """Every replica group's records (the agents' reaction files read once for all groups)."""
    run_dir = Path(run_dir)
    try:
        reactions = read_agent_events(run_dir)
    except (ValueError, KeyError) as e:
        raise ResultsError(f"{run_dir}: unreadable agent events ({e})") from None
    out = []
    for g in range(n_groups):
        events_path = group_events_path(run_dir, g)
        events = read_events(events_path) if events_path.exists() else []
        failed = [float(e["mono_s"]) for e in reactions
                  if e["file"] == f"agent_events-group{g}.jsonl" and e.get("event") == "worker_group_failed"]
        attempts = [_numeric(rows, f"{run_dir} group {g}") for rows in rank_attempt_rows(run_dir, g)]
        # Every attempt that reached run_start opened its rows file right after: they pair in order.
        starts = [mono_s(e) for e in all_of(events, "run_start")]
        out.append(GroupFiles(g, events, failed, attempts[:len(starts)], starts[:len(attempts)]))
    return out


def _median_step(groups: list[GroupFiles]) -> float:
    steps = [r["step_s"] for g in groups for rows in g.attempts for r in rows
             if r["committed"] and r["phase"] == schema.PHASE_MEASURED]
    return statistics.median(steps) if steps else 0.0


def fault_recovery(fault: dict, groups: list[GroupFiles], n_groups: int, normal_step_s: float) -> dict:
    """One fault's figures (module docstring)."""
    victim, at = int(fault["metadata"]["rank"]), mono_s(fault)
    g = groups[victim]
    detected = next((t for t in g.agent_failed_mono if t >= at), None)
    starts = [e["metadata"].get("process_start_mono_s") for e in all_of(g.events, schema.EVENT_ATTEMPT)]
    restarted = next((t for t in starts if t is not None and t > at), None)
    heal = next((e for e in all_of(g.events, EVENT_HEAL) if mono_s(e) > at), None)
    out = {"fault": fault["value"], "group": victim, "step": int(fault["metadata"]["step"]),
           "job_time_s": fault["metadata"].get("job_time_s"),
           "detection_s": detected - at if detected is not None else None,
           "restart_s": restarted - detected if restarted is not None and detected is not None else None,
           "rejoin_s": mono_s(heal) - at if heal is not None else None,
           "heal_s": float(heal["metadata"]["quorum_s"]) if heal is not None else None,
           "healed_to_step": int(heal["value"]) if heal is not None else None,
           "process_restarted": detected is not None, "healthy": []}
    for h in groups:
        if h.group == victim:
            continue
        rows = [(s, e, r) for s, e, r in h.rows_mono() if e > at]
        first_without = next((i for i, (_s, _e, r) in enumerate(rows)
                              if r["committed"] and r["participants"] < n_groups), None)
        if not rows or first_without is None or rows[0][0] > at + 10 * max(normal_step_s, 0.01) + 5.0:
            continue  # this group was not training at the fault (restarting itself) or never lost the victim
        window = rows[:first_without + 1]
        out["healthy"].append({"group": h.group, "stall_s": window[-1][1] - window[0][0] - normal_step_s,
                               "lost_steps": sum(1 for _s, _e, r in window if not r["committed"]),
                               "quorum_change_s": window[-1][2]["quorum_s"]})
    stalls = [x["stall_s"] for x in out["healthy"]]
    out["stall_s"] = max(stalls) if stalls else None
    out["lost_steps"] = max((x["lost_steps"] for x in out["healthy"]), default=None)
    if not out["healthy"]:
        out["note"] = "no healthy group was training at the fault: the groups restarted without a live peer"
    elif detected is None and heal is not None:
        out["note"] = "the group stayed alive (its collectives timed out), rejoined and healed without a restart"
    return out


def committed_steps(groups: list[GroupFiles]) -> dict[int, dict]:
    """Each committed step: the most participants any group saw commit it, and its samples per group."""
    steps: dict[int, dict] = {}
    for g in groups:
        for rows in g.attempts:
            for r in rows:
                if r["committed"]:
                    s = steps.setdefault(int(r["step"]), {"participants": 0, "samples": r["samples"], "loss": []})
                    s["participants"] = max(s["participants"], int(r["participants"]))
                    s["loss"].append(r["loss"])
    return steps


def final_state(run_dir: Path, n_groups: int) -> dict:
    shas = {}
    for g in range(n_groups):
        path = schema.rank_info_path(run_dir, g)
        if path.exists():
            shas[g] = (read_json(path).get("torchft") or {}).get("final_params_sha256")
    return {"final_params_sha256": {f"group{g}": v for g, v in shas.items()},
            "bitwise_equal": len(shas) == n_groups and len(set(shas.values())) == 1}


def goodput_of(groups: list[GroupFiles], steps_target: int) -> dict:
    """ETTR and badput from the group that reached the target steps first (its clock)."""
    finishers = [(mono_s(e), g) for g in groups for e in all_of(g.events, "run_stop")]
    if not finishers:
        raise ValueError("no replica group reached run_stop")
    end, ref = min(finishers, key=lambda x: x[0])
    first = all_of(ref.events, schema.EVENT_ATTEMPT)[0]["metadata"]
    start = first.get("process_start_mono_s") or first["main_mono_s"]
    rows = [r for rows in ref.attempts for r in rows]
    committed = [r for r in rows if r["committed"]]
    productive = sum(r["compute_s"] + r["optimizer_s"] for r in committed)
    lost = sum(r["step_s"] for r in rows if not r["committed"])
    data = sum(r["data_s"] for r in committed)
    wall = end - start
    badput = {"startup": ref.run_starts[0] - start if ref.run_starts else 0.0, "checkpoint_save": 0.0,
              "checkpoint_restore": 0.0, "recovery": 0.0, "lost_work": lost, "data_loading": data}
    badput["other"] = max(0.0, wall - productive - sum(badput.values()))
    return {"ettr": productive / wall if wall > 0 else None, "wall_s": wall, "productive_s": productive,
            "badput_s": badput, "reference_group": ref.group, "target_steps": steps_target}


def torchft_figures(run_dir: Path, n_groups: int, steps_target: int) -> dict:
    """Every figure of a torchft drill (module docstring): recoveries, replicas, final state, goodput."""
    run_dir = Path(run_dir)
    groups = read_groups(run_dir, n_groups)
    normal = _median_step(groups)
    faults = sorted((e for g in groups for e in all_of(g.events, schema.EVENT_FAULT)), key=mono_s)
    recoveries = [fault_recovery(f, groups, n_groups, normal) for f in faults]
    steps = committed_steps(groups)
    fewer = {s: v for s, v in steps.items() if v["participants"] < n_groups}
    try:
        good = goodput_of(groups, steps_target)
        # The healthy groups' stalls are the time recovery took from training (less the steps run again).
        good["badput_s"]["recovery"] = max(0.0, sum(r["stall_s"] or 0.0 for r in recoveries)
                                           - good["badput_s"]["lost_work"])
        good["badput_s"]["other"] = max(0.0, good["badput_s"]["other"] - good["badput_s"]["recovery"])
    except (ValueError, KeyError, IndexError) as e:
        good = {"ettr": None, "badput_s": {}, "note": str(e)}
    return {"recovery": recoveries, "normal_step_s": normal,
            "replicas": {"groups": n_groups, "committed_steps": len(steps),
                         "steps_with_fewer_replicas": len(fewer),
                         "missing_group_steps": sum(n_groups - v["participants"] for v in fewer.values()),
                         "samples_lost": sum((n_groups - v["participants"]) * v["samples"] for v in fewer.values())},
            "final_state": final_state(run_dir, n_groups), "goodput": good}


def loss_by_step(groups: list[GroupFiles]) -> dict[int, float]:
    """Each committed step's loss: the mean over the groups that committed it."""
    return {s: statistics.fmean(v["loss"]) for s, v in sorted(committed_steps(groups).items())}


def _s(v, unit: str = " s") -> str:
    return "n/a" if v is None else f"{v:.3f}{unit}"


def torchft_report_body(s: dict) -> list[str]:
    """The torchft sections of a drill report: per-fault recovery, replicas, final state, goodput."""
    t = s["torchft"]
    lines = ["", "## Recovery under torchft (per-step fault tolerance)", "",
             "| fault | group | step | detection | restart | rejoined (healed) after | heal quorum | healed to step "
             "| healthy groups' stall | steps run again |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["recovery"]:
        alive = not r.get("process_restarted", True) and r["rejoin_s"] is not None
        detection, restart = ("none (stayed alive)", "none") if alive else (_s(r["detection_s"]), _s(r["restart_s"]))
        lines.append(f"| {r['fault']} | {r['group']} | {r['step']} | {detection} | {restart} | "
                     f"{_s(r['rejoin_s'])} | {_s(r['heal_s'])} | {r['healed_to_step'] if r['healed_to_step'] is not None else 'n/a'} | "
                     f"{_s(r['stall_s'])} | {r['lost_steps'] if r['lost_steps'] is not None else 'n/a'} |")
    if not s["recovery"]:
        lines.append("| (no fault fired) | | | | | | | | | |")
    rep, fin = t["replicas"], t["final_state"]
    lines += ["", "detection: fault -> the group's agent saw its worker fail; restart: -> its new process started; "
                  "rejoined: fault -> back in a quorum with its state loaded from a live peer; stall: the healthy "
                  "groups' step in flight at the fault until the first step committed without the victim, less "
                  f"one normal step ({_s(t['normal_step_s'])}).", "",
              "## Replicas and final state", "",
              f"- {rep['groups']} replica groups; {rep['committed_steps']} steps committed, "
              f"**{rep['steps_with_fewer_replicas']}** of them with fewer replicas ({rep['missing_group_steps']} "
              f"group-steps missing, {rep['samples_lost']:,.0f} samples not trained on)",
              "- final parameters " + ("**bitwise equal** across every group" if fin["bitwise_equal"] else
                                       "**differ** between groups") + " (sha256: "
              + ", ".join(f"{g} {h[:12] if h else 'none'}" for g, h in fin["final_params_sha256"].items()) + ")"]
    if t.get("loss_distance"):
        d = t["loss_distance"]
        lines.append(f"- loss curve against the uninterrupted one ({d['reference']}): mean |difference| "
                     f"{d['mean_abs']:.4g} over {d['steps']} steps, max {d['max_abs']:.4g}")
    g = s.get("goodput") or {}
    if g.get("ettr") is not None:
        lines += ["", "## Goodput", "", f"- ETTR (productive / wall-clock, group {g['reference_group']}, the first to "
                                        f"reach {g['target_steps']} steps): **{g['ettr']:.3f}** "
                                        f"({g['productive_s']:.2f} s of {g['wall_s']:.2f} s)", "",
                  "| badput | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in g["badput_s"].items()]
    return lines + ["", "![progress](timeline.png)", ""]


def progress_plot(run_dir: Path, summary: dict, path: Path) -> Path:
    """Committed steps against time, one line per replica group, the faults marked."""
    from trainscale.analysis.plots import _save, plt

    groups = read_groups(Path(run_dir), int(summary["torchft"]["replicas"]["groups"]))
    points = {g.group: [(end, int(r["step"]) + 1) for _s, end, r in g.rows_mono() if r["committed"]] for g in groups}
    t0 = min((p[0][0] for p in points.values() if p), default=0.0)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for g, p in points.items():
        ax.plot([x - t0 for x, _ in p], [y for _, y in p], ".", markersize=2, label=f"group {g}")
    for f in sorted((e for gr in groups for e in all_of(gr.events, schema.EVENT_FAULT)), key=mono_s):
        ax.axvline(mono_s(f) - t0, color="red", linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds since the first committed step (machine monotonic clock)")
    ax.set_ylabel("committed steps")
    ax.set_title(f"drill under torchft: {summary['drill']['fault']} (faults dashed)")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)
