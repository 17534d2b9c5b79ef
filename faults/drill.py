"""A drill: its checks (the recovery engine against the fault kind), running it, and its record: the
figures of analysis/recovery.py gathered into a DrillRecord (scaling/results/records.py) whose keys are
merged into the run's summary.json (analysis/drills.py reads them), a markdown report and a timeline
plot in the run folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainscale.scaling.results import schema
from trainscale.analysis.eventlog import all_of, mono_s, read_events
from trainscale.scaling.results.files import read_json, write_json_atomic, write_text_atomic
from trainscale.scaling.results.records import DrillRecord
from trainscale.analysis.recovery import checkpoint_figures, goodput, recovery_timelines, straggler
from trainscale.analysis.reliability import daly_interval_s, young_interval_s
from trainscale.faults.kinds import FAULT_KINDS, TORCHFT
from trainscale.faults.torchft_drill import progress_plot, torchft_figures, torchft_report_body
from trainscale.faults.trace import TRACE_FILE
from trainscale.launchers.registry import LAUNCHERS
from trainscale.scaling.orchestration.runner import RunObserver, RunOutcome, execute
from trainscale.scaling.runtime.torchft_loop import group_events_path
from trainscale.scaling.spec import RunSpec, SpecError

REPORT = "drill_report.md"
TIMELINE_PNG = "timeline.png"


def check_engine(spec: RunSpec, engine: str) -> None:
    """SpecError when the drill's recovery engine cannot recover the run's fault (or runs no drills)."""
    drilling = [launcher.name for launcher in LAUNCHERS if launcher.engine]
    if not engine:
        raise SpecError(f"drill recovers through a recovery engine: --launcher {', '.join(drilling)} or slurm "
                        f"(Slurm's requeue), got {spec.launcher!r}")
    if spec.fault.trace:  # each of the trace's kinds was checked against the engine with the spec
        kind = None
    else:
        kind = FAULT_KINDS.get(spec.fault.kind)
    if kind is not None and engine not in kind.engines:
        raise SpecError(f"drill --fault {kind.name} cannot be recovered by the {engine} engine "
                        f"(it can by: {', '.join(kind.engines)})")
    if spec.nodes > 1 and spec.launcher not in ("local", TORCHFT):
        raise SpecError(f"multi-node drills run on an emulated cluster (--engine torchrun or torchft), "
                        f"got --launcher {spec.launcher!r}")


def run(spec: RunSpec, engine_label: str, mtbf_s: float, draw: dict | None,
        observer: RunObserver | None = None, run_dir: Path | None = None) -> tuple[RunOutcome, dict]:
    """Run a drill's spec and record it: the run, then the drill's keys merged into its summary."""
    what = "trace" if spec.fault.trace else spec.fault.kind
    outcome = execute(spec, run_dir, observer=observer,
                      label=f"drill {what} {spec.workload} {spec.parallel} "
                            + (f"{spec.nodes}x{spec.nproc}" if spec.nodes > 1 else f"x{spec.nproc}"))
    return outcome, record(outcome.run_dir, drill_summary(outcome.run_dir, spec, engine_label, mtbf_s, draw))


def drill_summary(run_dir: Path, spec: RunSpec, engine_label: str, mtbf_s: float,
                  draw: dict | None = None) -> DrillRecord:
    run_dir = Path(run_dir)
    events = read_events(run_dir / schema.EVENTS) if (run_dir / schema.EVENTS).exists() else []
    if spec.launcher == TORCHFT:  # each replica group keeps its own log
        events = [e for g in range(spec.world_size) if group_events_path(run_dir, g).exists()
                  for e in read_events(group_events_path(run_dir, g))]
    faults = sorted(all_of(events, schema.EVENT_FAULT), key=mono_s)
    f = spec.fault
    if f.trace:
        return trace_summary(run_dir, spec, engine_label, mtbf_s, events, faults)
    drill = {"fault": f.kind, "engine": engine_label, "engine_name": engine_name(spec), "launcher": spec.launcher,
             "max_restarts": spec.launch.max_restarts, "rank": f.rank,
             "node": f.node if FAULT_KINDS.get(f.kind).targets_node else None, "nodes": spec.nodes,
             "at_step": f.at_step if f.at_time_s < 0 else None, "at_time_s": f.at_time_s if f.at_time_s >= 0 else None,
             "detect_timeout_s": f.detect_timeout_s or None, "random_draw": draw, "fired": bool(faults),
             "fired_at_step": int(faults[0]["metadata"]["step"]) if faults else None,
             "restarts": restarts(spec, events)}
    if faults and "corrupted" in faults[0]["metadata"]:
        drill["corrupted"] = faults[0]["metadata"]["corrupted"]
    if FAULT_KINDS.get(f.kind).shrinks_world:
        # World size of each attempt: the job went on with the nodes left.
        drill["world_sizes"] = [e["metadata"].get("world_size") for e in all_of(events, schema.EVENT_ATTEMPT)]
    out = job_record(run_dir, spec, drill, mtbf_s, bool(events))
    if FAULT_KINDS.get(f.kind).straggler and faults:
        out.straggler = {**straggler(run_dir, f.rank, int(faults[0]["metadata"]["step"])), "slow_factor": f.slow_factor}
    return out


def trace_summary(run_dir: Path, spec: RunSpec, engine_label: str, mtbf_s: float, events: list[dict],
                  fired: list[dict]) -> DrillRecord:
    """A trace drill's record: the trace, which of its faults fired (and when, in job time), one
    recovery timeline per attempt a fault ended, goodput over the whole job."""
    from trainscale.faults.trace import read

    trace = read(Path(spec.fault.trace))
    by_index: dict[int, dict] = {}
    for e in fired:
        by_index.setdefault(int(e["metadata"]["trace_index"]), e)
    drill = {"fault": "trace", "engine": engine_label, "engine_name": engine_name(spec), "launcher": spec.launcher,
             "nodes": spec.nodes,
             "max_restarts": spec.launch.max_restarts, "detect_timeout_s": spec.fault.detect_timeout_s or None,
             "trace": {**trace.to_dict(), "file": TRACE_FILE},
             "faults": [{**tf.to_dict(), "fired": i in by_index,
                         "fired_at_step": int(by_index[i]["metadata"]["step"]) if i in by_index else None,
                         "fired_at_job_time_s": by_index[i]["metadata"].get("job_time_s") if i in by_index else None}
                        for i, tf in enumerate(trace.faults)],
             "fired": bool(fired), "restarts": restarts(spec, events)}
    out = job_record(run_dir, spec, drill, trace.mtbf_s or mtbf_s, bool(events))
    for r in out.recovery[:-1]:  # the next fault fired before the failed step ran again
        if "recovered" in r:
            r["cut_short"] = not r["recovered"]
    return out


def engine_name(spec: RunSpec) -> str:
    """The recovery engine's short name (the launcher's `engine`: torchrun, ray, torchft), which the
    plan's per-engine goodput groups drills by; a Slurm requeue drill's record says slurm itself."""
    return LAUNCHERS.get(spec.launcher).engine or spec.launcher


def restarts(spec: RunSpec, events: list[dict]) -> int:
    """Restarts the engine made: of the job (restart engines), of any replica group (torchft)."""
    attempts = len(all_of(events, schema.EVENT_ATTEMPT))
    return max(0, attempts - (spec.world_size if spec.launcher == TORCHFT else 1))


def torchft_record(run_dir: Path, spec: RunSpec, drill: dict, mtbf_s: float) -> DrillRecord:
    figures = torchft_figures(run_dir, spec.world_size, spec.steps)
    return DrillRecord(drill=drill, recovery=figures["recovery"], checkpoint={}, goodput=figures["goodput"],
                       intervals={"mtbf_s": mtbf_s, "save_s": None, "young_s": None, "daly_s": None},
                       torchft={"replicas": figures["replicas"], "final_state": figures["final_state"],
                                "normal_step_s": figures["normal_step_s"]})


def job_record(run_dir: Path, spec: RunSpec, drill: dict, mtbf_s: float, has_events: bool) -> DrillRecord:
    """The drill's figures of the whole job: recoveries, checkpoint cost, goodput, optimal intervals."""
    if spec.launcher == TORCHFT:
        return torchft_record(run_dir, spec, drill, mtbf_s)
    checkpoint = (checkpoint_figures(run_dir, spec.checkpoint.every_steps, spec.checkpoint.async_save)
                  if has_events else {})
    try:
        good = goodput(run_dir)
    except (ValueError, OSError) as e:
        good = {"ettr": None, "badput_s": {}, "note": str(e)}
    save_s = checkpoint.get("save_s_mean")
    return DrillRecord(drill=drill, recovery=recovery_timelines(run_dir) if has_events else [], checkpoint=checkpoint,
                       goodput=good, intervals={"mtbf_s": mtbf_s, "save_s": save_s,
                                                "young_s": young_interval_s(save_s, mtbf_s) if save_s else None,
                                                "daly_s": daly_interval_s(save_s, mtbf_s) if save_s else None})


def record(run_dir: Path, drill: DrillRecord) -> dict:
    """Merge the drill's keys into summary.json and write the report; the merged summary."""
    summary = {**read_json(run_dir / schema.SUMMARY), **drill.to_dict()}
    write_json_atomic(run_dir / schema.SUMMARY, summary)
    timeline_plot(run_dir, summary, run_dir / TIMELINE_PNG)
    write_text_atomic(run_dir / REPORT, report_markdown(summary))
    return summary


def fmt_seconds(v: Any, unit: str = " s") -> str:
    return "n/a" if v is None else f"{v:.3f}{unit}"


def report_markdown(s: dict) -> str:
    d = s["drill"]
    body = torchft_report_body(s) if s.get("torchft") else report_body(s)
    if d["fault"] == "trace":
        return "\n".join(trace_report_header(s) + body)
    lines = [f"# Drill: {d['fault']} ({s.get('run_id', '')})", "",
             f"- status: **{s['status']}**" + (f" ({s['reason']})" if s.get("reason") else ""),
             f"- recovery engine: {d['engine']}, max restarts {d['max_restarts']}, restarts taken {d['restarts']}",
             f"- fault: `{d['fault']}` on " + (f"node {d['node']} (every rank of it; {d['nodes']} nodes), "
                                               if d.get("node") is not None else f"rank {d['rank']}, ")
             + (f"at step {d['at_step']}" if d["at_step"] is not None else f"at {d['at_time_s']:.2f} s after run_start")
             + (f" (drawn: {d['random_draw']})" if d.get("random_draw") else "")
             + (f"; fired at step {d['fired_at_step']}" if d["fired"] else "; **never fired**"),
             ]
    if d.get("detect_timeout_s"):
        lines.append(f"- collective timeout (hang detection): {d['detect_timeout_s']} s")
    if d.get("world_sizes"):
        lost = ", ".join(n["node"] for n in (s.get("launch") or {}).get("lost_nodes", [])) or "none recorded"
        lines.append(f"- node lost for good ({lost}); world size per attempt: "
                     + " -> ".join(str(w) for w in d["world_sizes"]) + " (the checkpoint restored at the smaller one)")
    if d.get("corrupted"):
        c = d["corrupted"]
        lines.append(f"- corrupted: `{c['file']}` of `{c['path']}` truncated {c['bytes_before']} -> {c['bytes_after']} bytes")
    return "\n".join(lines + body)


def trace_report_header(s: dict) -> list[str]:
    d = s["drill"]
    t = d["trace"]
    drawn = (f"drawn from seed {t['seed']}, mean gap {t['mtbf_s']:g} s, mix "
             + ", ".join(f"{k}={v:g}" for k, v in t["mix"].items()) if t.get("seed") is not None else "given")
    lines = [f"# Drill: a failure trace of {len(d['faults'])} faults ({s.get('run_id', '')})", "",
             f"- status: **{s['status']}**" + (f" ({s['reason']})" if s.get("reason") else ""),
             f"- recovery engine: {d['engine']}, max restarts {d['max_restarts']}, restarts taken {d['restarts']}",
             f"- trace `{t['file']}` ({drawn}; {t.get('source') or ''})", "",
             "| # | kind | target | at (job time) | fired at step | fired at |", "|---|---|---|---|---|---|"]
    for i, f in enumerate(d["faults"]):
        target = f"node {f['node']}" if "node" in f else f"rank {f['rank']}"
        lines.append(f"| {i} | {f['kind']} | {target} | {f['at_time_s']:.2f} s | "
                     + (f"{f['fired_at_step']} | {f['fired_at_job_time_s']:.2f} s |" if f["fired"]
                        else "never fired | |"))
    if d.get("detect_timeout_s"):
        lines.append(f"\ncollective timeout (hang and partition detection): {d['detect_timeout_s']} s")
    return lines


def report_body(s: dict) -> list[str]:
    """The sections every drill report has: recovery timelines, checkpoints, goodput, intervals."""
    lines = ["", "## Recovery timeline (docs/method.md \"Recovery time\")", "",
             "| fault step | resumed at | detection | restart | rendezvous | restore | lost work | other | total |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in s["recovery"]:
        lines.append(f"| {r['step']} | {r.get('resumed_step', 'n/a')} | {fmt_seconds(r['detection_s'])} | {fmt_seconds(r['restart_s'])} | "
                     f"{fmt_seconds(r['rendezvous_s'])} | {fmt_seconds(r['restore_s'])} | {fmt_seconds(r['lost_work_s'])} | "
                     f"{fmt_seconds(r.get('other_s'))} | {fmt_seconds(r['total_s'])} |")
        if r.get("slurm_requeue"):
            q = r["slurm_requeue"]
            lines.append(f"\nrestart through Slurm requeue ({q['after_failure']} -> {q['attempt']}): failure seen -> "
                         f"`scontrol requeue` {fmt_seconds(q['to_requeue_s'])}, requeue -> the next attempt's "
                         f"trainscale start {fmt_seconds(q['requeue_to_start_s'])} (the requeued job's wait, "
                         f"cred_expire, and Slurm's start), -> rank 0's main() {fmt_seconds(q['start_to_main_s'])}")
        for fb in r.get("fallbacks", []):
            lines.append(f"\nFell back past checkpoint step {fb['step']} ({fb['path']}): {fb['reason']}")
    if any(r["detection_s"] is None for r in s["recovery"]):
        lines.append("\nThis engine's reaction is not timed (no agent record): detection and restart are in "
                     "'other'.")
    if not s["recovery"]:
        lines.append("| (no recovery: the fault did not stop the job) | | | | | | | | |")
    lines += ["", "restart: agent saw the failure -> new rank 0 in main() (spawn, interpreter, imports); "
                  "rendezvous: -> process group ready; other: model and data set-up; total: failure -> end of "
                  "the failed step in the new attempt.", ""]
    c = s.get("checkpoint") or {}
    if c:
        lines += ["## Checkpoints", "",
                  f"- every {c['every_steps']} steps, {'asynchronous (dcp.async_save)' if c['async'] else 'synchronous (dcp.save)'}, "
                  f"{c['saves']} saves, {c['bytes'] or 0:,} bytes each",
                  f"- save time (the loop's wait): mean {fmt_seconds(c['save_s_mean'])}, samples "
                  + ", ".join(f"{x:.3f}" for x in c["save_s_samples"]),
                  f"- overhead on step time: {c['step_overhead_frac'] * 100:.1f}%" if c.get("step_overhead_frac") is not None
                  else "- overhead on step time: n/a"]
        if c["async"]:
            lines.append(f"- staging (host memory, kept for the run): {c['staging_bytes'] or 0:,} bytes on rank 0")
            if c.get("write_step_slowdown") is not None:
                lines.append(f"- steps during background writes: {c['steps_during_writes']}, median "
                             f"{fmt_seconds(c['step_s_during_writes'])} against {fmt_seconds(c['step_s_otherwise'])} "
                             f"otherwise ({c['write_step_slowdown']:.2f}x)")
        lines.append("")
    g = s.get("goodput") or {}
    if g.get("ettr") is not None:
        lines += ["## Goodput", "", f"- ETTR (productive / wall-clock): **{g['ettr']:.3f}** "
                                    f"({g['productive_s']:.2f} s of {g['wall_s']:.2f} s)", "",
                  "| badput | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in g["badput_s"].items()]
        lines.append("")
    i = s.get("intervals") or {}
    if i.get("young_s"):
        lines += ["## Checkpoint interval", "",
                  f"For MTBF {i['mtbf_s']:g} s and the measured save time {i['save_s']:.3f} s: "
                  f"Young's interval {i['young_s']:.1f} s, Daly's {i['daly_s']:.1f} s.", ""]
    if s.get("straggler"):
        t = s["straggler"]
        lines += ["## Straggler", "", f"rank {t['rank']} slowed x{t['slow_factor']} from step {t['from_step']}: "
                  f"its compute {fmt_seconds(t['compute_s_before'])} -> {fmt_seconds(t['compute_s_after'])}, global step "
                  f"{fmt_seconds(t['global_step_s_before'])} -> {fmt_seconds(t['global_step_s_after'])}", ""]
    lines += [f"![timeline]({TIMELINE_PNG})", ""]
    return lines


def timeline_plot(run_dir: Path, drill: dict, path: Path) -> Path:
    """Rank 0's job as bars over time: attempts, checkpoint saves, the fault and the recovery phases
    (under torchft: each replica group's committed steps over time)."""
    from trainscale.analysis.plots import _save, plt

    if drill.get("torchft"):
        return progress_plot(run_dir, drill, path)

    events = read_events(run_dir / schema.EVENTS) if (run_dir / schema.EVENTS).exists() else []
    fig, ax = plt.subplots(figsize=(9, 3.2))
    attempts = [e for e in events if e["key"] == schema.EVENT_ATTEMPT]
    t0 = (attempts[0]["metadata"].get("process_start_mono_s") or mono_s(attempts[0])) if attempts else 0.0
    starts = [mono_s(e) for e in events if e["key"] == "run_start"]
    stops = [mono_s(e) for e in events if e["key"] == "run_stop"]
    faults = [mono_s(e) for e in events if e["key"] == schema.EVENT_FAULT]
    for i, s in enumerate(starts):
        ends = [x for x in stops + faults if x > s]
        if not ends:
            continue
        end = min(ends)
        ax.broken_barh([(s - t0, end - s)], (2, 0.8), color="tab:green", label="training" if i == 0 else None)
    for e in events:
        if e["key"] == schema.EVENT_CKPT_SAVE:
            b = float(e["metadata"]["blocking_s"])
            ax.broken_barh([(mono_s(e) - t0 - b, b)], (1, 0.8), color="tab:blue")
    colours = {"detection_s": "tab:red", "restart_s": "tab:orange", "rendezvous_s": "tab:purple",
               "restore_s": "tab:cyan", "lost_work_s": "tab:gray", "other_s": "tab:brown"}
    for f_time, r in zip(faults, drill.get("recovery", [])):
        x = f_time - t0
        for key in ("detection_s", "restart_s", "rendezvous_s", "other_s", "restore_s", "lost_work_s"):
            if r.get(key):
                ax.broken_barh([(x, r[key])], (0, 0.8), color=colours[key], label=key[:-2])
                x += r[key]
        ax.axvline(f_time - t0, color="red", linestyle="--")
    ax.set_yticks([0.4, 1.4, 2.4], ["recovery", "checkpoint save", "training"])
    ax.set_xlabel("seconds since the first worker started (rank 0's monotonic clock)")
    ax.set_title(f"drill: {drill['drill']['fault']} ({drill['drill']['engine']})")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys(), fontsize=7,
                  loc="upper left", ncol=4)
    return _save(fig, path)
