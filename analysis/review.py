"""The review report: one document with the sections of docs/method.md (environment and provenance,
throughput and efficiency, time to accuracy, communication, strategies, faults, plan), the pitfall
warnings on top, rendered to a self-contained HTML file and to markdown.

It only arranges what the existing builders computed: the scaling report (analysis.report.build and
its plots), the TTA section, the communication figures, the strategy rows, the comm folder's results,
the drills (analysis.drills) and a plan written by ``trainscale plan`` (plan.json and its plots).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainscale.analysis.drills import RESTART_PARTS, Drill, find_drills, load_drill, load_drills
from trainscale.scaling.results.files import read_json, write_text_atomic
from trainscale.analysis.review_doc import Bullets, Document, Figure, Paragraph, Section, Table, to_html, to_markdown
from trainscale.analysis.scaling import STRONG

MIN_REPEATS = 3  # docs/method.md: default 3 repeats for quick work


def _f(v, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


@dataclass
class ReviewInputs:
    plan_dir: Path | None = None
    comm_dir: Path | None = None
    drills: list[Drill] | None = None


def pitfall_warnings(rep, plan: dict | None) -> list[str]:
    """The report's own warnings plus the review-level pitfalls of docs/method.md."""
    w = list(rep.warnings)
    rows = rep.rows
    if rows and min(r.runs_ok for r in rows) < MIN_REPEATS and max(r.runs_ok for r in rows) >= 2:
        few = [str(r.world_size) for r in rows if r.runs_ok < MIN_REPEATS]
        w.append(f"Too few repeats at world size {', '.join(few)} (fewer than {MIN_REPEATS} runs): CIs are wide or "
                 "missing.")
    if rows and len(rows) == 1:
        w.append("Only one world size was measured: there is no scaling curve.")
    if plan:
        w += [f"Plan: {x}" for x in plan.get("warnings", []) if x.startswith(("Extrapolation", "Measured on one host"))]
    return w


def _summary(rep, plan: dict | None, warnings: list[str]) -> Section:
    env = rep.environment
    s = Section("summary", "Summary and warnings")
    facts = [f"Workload {env.get('workload')} / {env.get('parallel')}, backend {env.get('backend')}, "
             f"{env.get('data_kind')} data; {rep.mode} scaling ({rep.mode_basis})."]
    if rep.rows:
        last = rep.rows[-1]
        facts.append(f"Measured world sizes {', '.join(str(r.world_size) for r in rep.rows)}; at {last.world_size}: "
                     f"{last.throughput:.4g} {rep.sample_unit}/s, efficiency {_f(last.efficiency)} (measured).")
    if plan and plan.get("best"):
        b = plan["best"]
        facts.append(f"Plan: {b['nodes']} node(s) ({b['label']}), {plan['best_reason']}.")
    s.add(Bullets(facts))
    if warnings:
        s.add(Bullets(warnings, kind="warning"))
    return s


def _environment(rep) -> Section:
    env = rep.environment
    first = next((r for r in _runs(rep)), None)
    prov = first.provenance if first else {}
    v = env.get("versions") or {}
    git = env.get("git") or {}
    rows = [["workload / strategy", f"{env.get('workload')} / {env.get('parallel')}"],
            ["backend", str(env.get("backend"))], ["data", str(env.get("data_kind"))],
            ["hosts", ", ".join(env.get("hosts", [])) or "unknown"], ["CPU", ", ".join(env.get("cpus", [])) or "unknown"],
            ["GPU", _gpu(prov)], ["emulated nodes", "; ".join(f"{h}: links {b}" for h, b in env.get("emulated", [])) or "no"],
            ["trainscale", f"{v.get('trainscale')} (commit {git.get('commit')}{', dirty' if git.get('dirty') else ''})"],
            ["versions", ", ".join(f"{k} {val}" for k, val in sorted(v.items()) if val and k != "trainscale")],
            ["first run at (UTC)", str(prov.get("time_utc", "-"))],
            ["environment variables", ", ".join(f"{k}={val}" for k, val in sorted((prov.get("env") or {}).items())) or "-"],
            ["source", str(rep.source)]]
    return Section("environment", "Environment and provenance").add(
        Table(["what", "value"], rows, caption="From the runs' provenance.json (first run shown for per-run facts).",
              key_value=True))


def _gpu(prov: dict) -> str:
    g = prov.get("gpu") or {}
    if not g.get("available"):
        return f"none ({g.get('reason', 'not recorded')})"
    return ", ".join(f"{d.get('name')}" for d in g.get("devices", [])) or "available"


def _runs(rep):
    from trainscale.analysis.report import find_runs
    from trainscale.analysis.runs import load_run

    return [load_run(p) for p in find_runs(rep.source)]


def _throughput(rep) -> Section:
    u = rep.sample_unit
    s = Section("throughput", "Throughput and scaling efficiency")
    formula = ("E(N) = T(N0) / ((N/N0) T(N)), fixed global batch" if rep.mode == STRONG
               else "E(N) = X(N) / ((N/N0) X(N0)), fixed per-device batch")
    s.add(Paragraph(f"{rep.mode.capitalize()} scaling ({rep.mode_basis}): {formula}. Throughput over the measured "
                    "window only (warmup steps discarded); global step = slowest rank. All values measured."))
    if not rep.rows:
        s.add(Paragraph("Several strategies: see the strategies section; each strategy's own scaling report: "
                        + ", ".join(f"{k}: {v}" for k, v in rep.sub_reports.items())))
        return s
    s.add(Table([ "world", "nodes x procs", "runs ok", "global batch", f"throughput ({u}/s)", "95% CI", "per device",
                 "speedup", "efficiency", "Karp-Flatt e"],
                [[str(r.world_size), f"{r.nodes} x {r.nproc}", f"{r.runs_ok}/{r.runs_ok + r.runs_failed}",
                  f"{r.global_batch:g}", f"{r.throughput:.4g}", f"[{_f(r.ci_low, '.4g')}, {_f(r.ci_high, '.4g')}]",
                  f"{r.per_device:.4g}", _f(r.speedup), _f(r.efficiency), _f(r.karp_flatt, '.4f')] for r in rep.rows],
                caption=f"CI basis: {rep.rows[0].ci_basis}. Karp-Flatt e = (1/S - 1/n)/(1 - 1/n), n = N/N0."))
    laws = _laws(rep)
    if laws:
        s.add(Table(["law (fitted)", "describes", "serial fraction", "95% CI", "rel. rms error", "points"],
                    [[k.capitalize(), f"{v.matches_mode} scaling", f"{v.serial_fraction:.4f}",
                      f"[{v.ci_low:.4f}, {v.ci_high:.4f}]" if v.ci_low is not None else "no CI (too few points)",
                      f"{v.rel_rms_error:.1%}", str(v.points)] for k, v in laws.items()],
                    caption="Fitted, not measured: Amdahl S(n) = 1/(s + (1-s)/n), Gustafson S(n) = n - s(n-1), one "
                            "point per run, scipy curve_fit; the CI is Student-t with the fit's degrees of freedom."))
    for key, cap in (("throughput", "Global throughput with 95% CIs (measured) and the ideal linear line."),
                     ("efficiency", "Scaling efficiency (measured) against the ideal E = 1.")):
        if key in rep.plots:
            s.add(Figure(rep.plots[key], cap))
    s.add(Table(["world", "mean ms", "p50 ms", "p95 ms", "p99 ms", "data ms", "compute ms", "optimizer ms",
                 "outlier steps (MAD)", "slowest rank"],
                [[str(r.world_size), _ms(r.step_mean_s), _ms(r.step_p50_s), _ms(r.step_p95_s), _ms(r.step_p99_s),
                  _ms(r.breakdown_s.get("data_s")), _ms(r.breakdown_s.get("compute_s")),
                  _ms(r.breakdown_s.get("optimizer_s")), str(r.outlier_steps), str(r.slowest_rank)] for r in rep.rows],
                caption="Step time of the global step (slowest rank per step), pooled over runs; tails kept."))
    for key, cap in (("breakdown", "Mean step time split into data, compute and optimizer."),
                     ("per_rank", "Per-rank step-time distributions: a straggler shows as one rank's tail.")):
        if key in rep.plots:
            s.add(Figure(rep.plots[key], cap))
    return s


def _laws(rep) -> dict:
    from trainscale.analysis.models import ModelError, fit_laws, scaling_data

    try:
        return fit_laws(scaling_data(rep))
    except (ModelError, ValueError):
        return {}


def _tta(rep) -> Section | None:
    sec = rep.tta
    if not sec:
        return None
    s = Section("tta", "Time to accuracy")
    s.add(Paragraph(f"Target {sec.target if sec.target is not None else 'differs between runs'}; TTA from run_start to "
                    "the first evaluation reaching the target (MLPerf rules). INVALID runs count as the slowest."))
    s.add(Table(["world", "runs", "INVALID", "headline TTA s", "headline", "median s", "95% CI (valid)", "TTA speedup",
                 "TTA efficiency", "throughput efficiency"],
                [[str(r.world_size), str(r.summary.n), str(r.summary.invalid),
                  _f(r.summary.headline, ".3f") if r.summary.headline is not None else "INVALID", r.summary.headline_method,
                  _f(r.summary.median, ".3f"), f"[{_f(r.summary.ci_low)}, {_f(r.summary.ci_high)}]"
                  if r.summary.ci_low is not None else "-", _f(r.speedup), _f(r.efficiency),
                  _f(sec.throughput_efficiency.get(r.world_size))] for r in sec.rows]))
    if "tta_curves" in rep.plots:
        s.add(Figure(rep.plots["tta_curves"], "Validation accuracy against the TTA clock, per run; dashed: target."))
    return s


def _communication(rep, comm_dir: Path | None) -> Section | None:
    rows = [r for r in rep.rows if r.comm]
    if not rows and comm_dir is None:
        return None
    s = Section("communication", "Communication")
    if rows:
        s.add(Paragraph("Inside training (measured): time with a gradient collective in flight, and the exposed part "
                        "= compute of measured steps minus compute of no_sync steps (gradient sync skipped)."))
        s.add(Table(["world", "efficiency", "step ms", "in collectives ms", "exposed ms", "95% CI", "exposed % of step",
                     "overlap %"],
                    [[str(r.world_size), _f(r.efficiency), _ms(r.comm["step_time_s"]), _ms(r.comm["comm_s"]),
                      _ms(r.comm["exposed_comm_s"]), f"[{_ms(r.comm['exposed_ci_low'])}, {_ms(r.comm['exposed_ci_high'])}]",
                      _f(r.comm["exposed_pct_of_step"], ".1f"), _f(r.comm["overlap_pct"], ".0f")] for r in rows]))
        if "comm_overhead" in rep.plots:
            s.add(Figure(rep.plots["comm_overhead"], "Step time, time in collectives and exposed communication, with "
                                                     "efficiency."))
    if comm_dir is not None:
        from trainscale.scaling.results import schema
        doc = read_json(Path(comm_dir) / schema.COMM_RESULTS)
        s.add(Paragraph(f"Collective microbenchmark (trainscale comm, {comm_dir}): not end-to-end training. "
                        "Alpha-beta fits t = alpha + bytes x beta are fitted, not measured."))
        s.add(Table(["op", "world", "alpha us", "algbw GB/s (fit)", "busbw GB/s (fit)", "R^2", "max rel err", "sizes"],
                    [[f["op"], str(f["world_size"]), f"{f['alpha_s'] * 1e6:.1f}", f"{f['asymptotic_algbw_gbps']:.3g}",
                      f"{f['asymptotic_busbw_gbps']:.3g}", f"{f['r_squared']:.4f}", f"{f['max_rel_error']:.1%}",
                      f"{f['min_bytes']}..{f['max_bytes']} B"] for f in doc.get("fits", [])],
                    row_classes=["fitted"] * len(doc.get("fits", []))))
        png = Path(comm_dir) / "busbw.png"
        if png.exists():
            s.add(Figure(png, "Bus bandwidth per message size (measured; dashed: alpha-beta fit)."))
    return s


def _strategies(rep) -> Section | None:
    if not rep.strategies:
        return None
    from trainscale.analysis.report import _strategy_table

    s = Section("strategies", "Parallel strategies")
    lines = [l for l in _strategy_table(rep) if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]
    s.add(Table(header, body, caption="Memory, communication per step, pipeline bubble and MFU per strategy (measured; "
                                      "wire bytes are a ring model)."))
    if "strategies" in rep.plots:
        s.add(Figure(rep.plots["strategies"], "Strategies compared."))
    return s


def recovery_figure(drills: list[Drill], path: Path) -> Path:
    from trainscale.analysis.plots import _save, plt

    parts = (*RESTART_PARTS, "lost_work_s")
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(drills) + 1.2))
    left = np.zeros(len(drills))
    labels = [f"{d.name} ({d.fault})" for d in drills]
    for p in parts:
        vals = np.array([np.mean([r[p] for r in d.recovery]) if d.recovery else 0.0 for d in drills])
        ax.barh(labels, vals, left=left, label=p.removesuffix("_s").replace("_", " "))
        left += vals
    ax.set_xlabel("seconds (mean over the drill's recoveries, measured)")
    ax.set_title("Recovery timeline per drill")
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _faults(drills: list[Drill] | None, out_dir: Path) -> Section | None:
    if not drills:
        return None
    s = Section("faults", "Faults and recovery")
    s.add(Paragraph("Measured in fault drills: detection (failure to first reaction), restart, rendezvous, checkpoint "
                    "restore and lost work (recomputed steps); total = failure to the first step past it."))
    rows = []
    for d in drills:
        m = {k: np.mean([r[k] for r in d.recovery]) if d.recovery else None
             for k in ("detection_s", "restart_s", "rendezvous_s", "restore_s", "lost_work_s", "total_s")}
        rows.append([d.name, d.fault, d.engine, str(len(d.recovery))] + [_f(m[k], ".2f") for k in m]
                    + [_f(d.save_s_mean, ".2f"), "-" if d.checkpoint_bytes is None else f"{d.checkpoint_bytes / 2**20:.1f}",
                       "async" if d.async_checkpoint else "sync", _f(d.ettr, ".3f")])
    s.add(Table(["drill", "fault", "engine", "recoveries", "detection s", "restart s", "rendezvous s", "restore s",
                 "lost work s", "total s", "ckpt save s", "ckpt MiB", "ckpt", "ETTR"], rows))
    s.add(Figure(recovery_figure(drills, out_dir / "recovery.png"), "Recovery phases per drill (mean, measured)."))
    return s


def _plan(plan: dict | None, plan_dir: Path | None) -> Section | None:
    if not plan:
        return None
    from trainscale.analysis.plan import PlanRow, _f as pf

    s = Section("plan", "Capacity plan")
    i = plan["inputs"]
    s.add(Paragraph(f"Predicted from the measured curves for {i['gpus_per_node']} device(s) per node. "
                    f"Step-time model (fitted): {plan['model']['formula']}. {plan['labels']}"))
    s.add(Bullets(plan["model"].get("notes", [])))
    rows = [PlanRow(**r) for r in plan["rows"]]
    best = plan["best"]["nodes"] if plan.get("best") else None
    body, classes = [], []
    for r in rows:
        body.append([str(r.nodes), str(r.world_size), pf(r.throughput, ".4g"),
                     f"[{pf(r.throughput_low, '.4g')}, {pf(r.throughput_high, '.4g')}]", r.label, f"{r.efficiency:.3f}",
                     pf(r.train_hours, ".3g"), pf(r.goodput, ".3f"),
                     pf(r.checkpoint_interval_s / 60 if r.checkpoint_interval_s else None, ".3g"),
                     pf(r.expected_hours, ".3g"), pf(r.node_hours, ".4g"), pf(r.cost, ",.2f"),
                     "-" if r.meets_deadline is None else ("yes" if r.meets_deadline else "no"), "yes" if r.pareto else ""])
        classes.append("best" if r.nodes == best else ("below" if r.below_threshold else
                                                       ("extrapolated" if r.label == "extrapolated" else "")))
    s.add(Table(["nodes", "devices", f"throughput ({plan['sample_unit']}/s)", "95% band", "label", "efficiency",
                 "train h (no failures)", "goodput", "ckpt interval min", "expected h", "node-hours", "cost",
                 "meets deadline", "Pareto"], body, row_classes=classes,
                caption=f"Threshold {i['efficiency_threshold']:g}: "
                        + (f"efficiency below it from {plan['threshold_nodes']} node(s) on. " if plan.get("threshold_nodes")
                           else "never crossed. ")
                        + f"Recommended: {best if best else 'none'} ({plan['best_reason']}). Goodput, hours and cost "
                          "are modelled (Daly's expected wall time; job MTBF = node MTBF / nodes)."))
    v = plan.get("validation")
    if v:
        def ms(x):
            return pf(x * 1e3 if x is not None else None, ".4g")

        s.add(Table(["world", "measured", "predicted", "95% band", "error", "Amdahl (fitted)", "Gustafson (fitted)",
                     "in collectives ms (measured)", "predicted ms", "error"],
                    [[str(p["world_size"]), f"{p['measured_throughput']:.4g}", f"{p['predicted_throughput']:.4g} ({p['label']})",
                      f"[{pf(p['predicted_low'], '.4g')}, {pf(p['predicted_high'], '.4g')}]", f"{p['error_pct']:+.1f}%",
                      pf(p["amdahl_throughput"], ".4g"), pf(p["gustafson_throughput"], ".4g"),
                      ms(p.get("measured_comm_s")), ms(p.get("predicted_comm_s")),
                      pf(p.get("comm_error_pct"), "+.1f")] for p in v["points"]],
                    row_classes=["extrapolated"] * len(v["points"]),
                    caption=f"Model validation: fitted on world sizes {', '.join(map(str, v['fitted_worlds']))}, predicting "
                            "the larger measured ones (throughput error = (predicted - measured) / measured). The "
                            "communication part alone (with --comm or --link-bandwidth): predicted seconds per step in "
                            "the step's collectives against the time measured inside them (DDP comm hook)."))
    for key, cap in (("plan_throughput", "Throughput: measured points, model (solid: fitted, dashed: extrapolated) "
                                         "with its 95% band, planned sizes."),
                     ("plan_efficiency", "Efficiency: measured and predicted, with the threshold."),
                     ("plan_pareto", "Time to train against cost: the Pareto frontier is marked, the star is the "
                                     "recommendation.")):
        p = (plan.get("plots") or {}).get(key)
        if p:
            path = Path(p) if Path(p).is_absolute() else Path(plan_dir) / Path(p).name
            if not path.exists() and plan_dir is not None:
                path = Path(plan_dir) / Path(p).name
            if path.exists():
                s.add(Figure(path, cap))
    if plan.get("warnings"):
        s.add(Bullets(plan["warnings"], kind="warning"))
    return s


def _failed(rep) -> Section | None:
    if not rep.failed:
        return None
    return Section("failed", "Failed runs").add(
        Table(["run", "world", "reason"], [[f["run"], str(f["world_size"]), str(f["reason"])] for f in rep.failed]))


def find_inputs(results: Path, plan: Path | None = None, comm: Path | None = None,
                drills: Path | None = None) -> ReviewInputs:
    """The plan, comm and drills folders of a review: the ones given, else the plan's own sources,
    else what RESULTS holds (RESULTS/plan, drill folders inside it). DrillError for unusable drills."""
    plan_dir = plan or (results / "plan" if (results / "plan" / "plan.json").exists() else None)
    sources = (load_plan(plan_dir) or {}).get("inputs", {})

    def source(key: str) -> Path | None:
        return Path(sources[key]) if sources.get(key) and Path(sources[key]).is_dir() else None

    comm = comm or source("comm_source")
    if drills or source("drills_source"):
        loaded = load_drills(drills or source("drills_source"))
    else:
        loaded = [load_drill(p) for p in find_drills(results)] or None
    return ReviewInputs(plan_dir=plan_dir, comm_dir=comm, drills=loaded)


def load_plan(plan_dir: Path | None) -> dict | None:
    if plan_dir is None or not (Path(plan_dir) / "plan.json").exists():
        return None
    return read_json(Path(plan_dir) / "plan.json")


def build_review(rep, inputs: ReviewInputs) -> Document:
    plan = load_plan(inputs.plan_dir)
    warnings = pitfall_warnings(rep, plan)
    env = rep.environment
    doc = Document(title=f"trainscale report: {env.get('workload')} / {env.get('parallel')}",
                   subtitle=f"{rep.source} - {rep.mode} scaling - measured values unless labelled fitted, predicted, "
                            "extrapolated or modelled")
    sections = [_summary(rep, plan, warnings), _environment(rep), _throughput(rep), _tta(rep),
                _communication(rep, inputs.comm_dir), _strategies(rep), _faults(inputs.drills, Path(rep.out_dir)),
                _plan(plan, inputs.plan_dir), _failed(rep)]
    doc.sections = [s for s in sections if s is not None]
    return doc


def write_review(rep, inputs: ReviewInputs, html_path: Path | None = None, markdown_path: Path | None = None) -> Document:
    doc = build_review(rep, inputs)
    if html_path is not None:
        write_text_atomic(Path(html_path), to_html(doc))
    if markdown_path is not None:
        markdown_path = Path(markdown_path)
        image_dir = markdown_path.parent / f"{markdown_path.stem}_files"
        write_text_atomic(markdown_path, to_markdown(doc, image_dir, f"{image_dir.name}/"))
    return doc
