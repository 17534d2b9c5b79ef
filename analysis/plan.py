"""Capacity planning from measured curves: per node count, the predicted throughput and efficiency
(analysis.models step-time model), time to train, cost, and expected goodput with failures
(analysis.reliability, restart and save times from drills); the node count that minimises cost under a
deadline; where efficiency falls under a threshold; the time-vs-cost Pareto frontier.

Per planned node count n with G devices per node, world size N = n G:
    throughput X(N)        = global batch(N) / T(N)                 (predicted; "measured" only where N was run)
    efficiency E(N)        = X(N) / ((N / N0) X_measured(N0))
    failure-free time      = target samples / X(N)
    job MTBF               = node MTBF / n                         (independent exponential node failures)
    checkpoint interval    = Daly's (or Young's) optimum from the job MTBF and the save time
    expected wall time     = Daly's expected wall time (failures, saves, restarts, lost work)
    goodput                = failure-free time / expected wall time
    node-hours             = n x expected wall hours;  cost = node-hours x cost per node-hour
Every value is labelled measured, fitted (inside the fitted world sizes) or extrapolated.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from trainscale.scaling.results import schema
from trainscale.analysis.collectives import CollectiveModel
from trainscale.analysis.drills import FailureInputs
from trainscale.analysis.engine_goodput import (LLAMA3_GPU_FAILURES_PER_DAY, EngineCosts, EngineRow, compare_engines,
                                                rate_basis)
from trainscale.analysis.engine_goodput import markdown as engines_markdown
from trainscale.analysis.models import (MEASURED, LawFit, ModelError, ScalingData, StepTimeModel, Validation,
                     fit_laws, fit_step_model, validate)
from trainscale.analysis.reliability import DALY, expected_goodput, job_mtbf_s
from trainscale.analysis.scaling import STRONG

DEFAULT_EFFICIENCY_THRESHOLD = 0.8


class PlanError(ValueError):
    pass


@dataclass
class PlanInputs:
    nodes: list[int]
    gpus_per_node: int
    cost_per_node_hour: float | None = None
    node_mtbf_hours: float | None = None
    target_samples: float | None = None
    target_accuracy: bool = False
    deadline_hours: float | None = None
    efficiency_threshold: float = DEFAULT_EFFICIENCY_THRESHOLD
    interval_method: str = DALY
    failures: FailureInputs | None = None
    comm_source: str | None = None
    link_bandwidth: str | None = None  # e.g. "100mbit": collectives as a ring over links of that rate
    drills_source: str | None = None
    engines: list[EngineCosts] = field(default_factory=list)  # each recovery engine's costs, from --drills
    gpu_failures_per_day: float = LLAMA3_GPU_FAILURES_PER_DAY  # the engines' projection, without --mtbf-hours

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PlanRow:
    nodes: int
    world_size: int
    throughput: float
    throughput_low: float
    throughput_high: float
    label: str  # measured / fitted / extrapolated
    comm_label: str
    efficiency: float
    per_device_batch: float
    step_s: float
    exposed_comm_s: float
    train_hours: float | None = None  # failure-free
    job_mtbf_hours: float | None = None
    checkpoint_interval_s: float | None = None
    goodput: float | None = None
    expected_hours: float | None = None  # with failures when an MTBF is given, else failure-free
    expected_hours_low: float | None = None  # from the throughput band
    expected_hours_high: float | None = None
    node_hours: float | None = None
    cost: float | None = None
    meets_deadline: bool | None = None
    below_threshold: bool = False
    pareto: bool = False
    feasible: bool = True
    note: str | None = None


@dataclass
class Plan:
    inputs: PlanInputs
    source: str
    mode: str
    sample_unit: str
    measured_worlds: list[int]
    measured_throughput: dict[int, float]  # mean over runs, per measured world size
    target_samples: float | None
    target_basis: str | None
    model: StepTimeModel
    laws: dict[str, LawFit]
    validation: Validation | None
    rows: list[PlanRow]
    best: PlanRow | None  # fewest node-hours (lowest cost) meeting the deadline
    best_reason: str
    threshold_nodes: int | None  # first planned node count whose efficiency is below the threshold
    warnings: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    engines: list[EngineRow] = field(default_factory=list)  # modelled goodput per recovery engine and size

    def to_dict(self) -> dict:
        return {
            "kind": "plan", "source": self.source, "mode": self.mode, "sample_unit": self.sample_unit,
            "inputs": self.inputs.to_dict(), "measured_worlds": self.measured_worlds,
            "measured_throughput": {str(k): v for k, v in self.measured_throughput.items()},
            "target_samples": self.target_samples, "target_basis": self.target_basis,
            "model": self.model.to_dict(), "laws": {k: v.to_dict() for k, v in self.laws.items()},
            "validation": self.validation.to_dict() if self.validation else None,
            "rows": [asdict(r) for r in self.rows], "best": asdict(self.best) if self.best else None,
            "best_reason": self.best_reason, "threshold_nodes": self.threshold_nodes, "warnings": self.warnings,
            "plots": {k: str(v) for k, v in self.plots.items()},
            "engines": {"rate": rate_basis(self.inputs.gpu_failures_per_day, self.inputs.node_mtbf_hours),
                        "rows": [asdict(r) for r in self.engines]} if self.engines else None,
            "labels": "measured: a world size that was run; fitted: predicted inside the fitted world sizes; "
                      "extrapolated: predicted outside them. Goodput, wall time and cost are modelled.",
        }


def samples_to_target(report) -> tuple[float, str]:
    """Training samples consumed up to the evaluation that reached the target, mean over the valid TTA
    runs of the largest world size that has one (closest to the planned scale)."""
    from trainscale.analysis.runs import load_rank_samples

    tta = report.tta
    if tta is None:
        raise PlanError("--target-accuracy needs time-to-accuracy runs (runs with a target) in the results")
    for row in sorted(tta.rows, key=lambda r: -r.world_size):
        counts = []
        for name in row.runs:
            res = tta.results[name]
            if not res["valid"] or res["reached"] is None or res["reached"].get("step") is None:
                continue
            run_dir = next((p for p in _run_paths(report) if p.name == name), None)
            if run_dir is None:
                continue
            step = res["reached"]["step"]
            total = 0.0
            for cols in load_rank_samples(run_dir).values():
                keep = np.isin(cols["phase"], (schema.PHASE_WARMUP, schema.PHASE_MEASURED)) & (cols["step"] <= step)
                total += float(np.sum(cols["samples"][keep]))
            counts.append(total)
        if counts:
            return float(np.mean(counts)), (
                f"measured: training samples up to the evaluation reaching target {tta.target:g}, mean of "
                f"{len(counts)} valid run(s) at world size {row.world_size}; assumed the same at every planned size "
                "(a larger global batch may need more)")
    raise PlanError("no time-to-accuracy run reached its target: no samples-to-target to plan with")


def _run_paths(report) -> list[Path]:
    from trainscale.analysis.report import find_runs

    return find_runs(report.source)


def _pareto(rows: list[PlanRow]) -> None:
    pts = [r for r in rows if r.feasible and r.expected_hours is not None and r.node_hours is not None]
    for r in pts:
        r.pareto = not any((o.expected_hours <= r.expected_hours and o.node_hours <= r.node_hours)
                           and (o.expected_hours < r.expected_hours or o.node_hours < r.node_hours) for o in pts)


def build_plan(report, data: ScalingData, inputs: PlanInputs, comm_model: CollectiveModel | None = None) -> Plan:
    if inputs.gpus_per_node < 1:
        raise PlanError(f"--gpus-per-node must be at least 1, got {inputs.gpus_per_node}")
    if inputs.node_mtbf_hours is not None and inputs.failures is None:
        raise PlanError("--mtbf-hours needs restart and checkpoint-save times: --drills DRILL_RESULTS, "
                        "or --restart-s and --ckpt-save-s")
    try:
        model = fit_step_model(data, comm_model=comm_model)
    except ModelError as e:
        raise PlanError(str(e)) from None
    try:
        laws = fit_laws(data)
    except ModelError:
        laws = {}
    validation = None
    if len(data.sizes) >= 3:
        try:
            validation = validate(data, [w for w in data.worlds[:-1]], comm_model)
        except ModelError:
            validation = None

    target, target_basis = inputs.target_samples, None
    if inputs.target_accuracy:
        target, target_basis = samples_to_target(report)
    elif target is not None:
        target_basis = "given (--target-samples)"

    base = data.size(model.base_world)
    measured_ci = {r.world_size: (r.ci_low, r.ci_high) for r in report.rows}
    rows = [_plan_row(n, model, data, base, measured_ci, inputs, target) for n in inputs.nodes]
    _pareto(rows)
    best, reason = _recommend(rows, target, inputs)
    threshold = next((r.nodes for r in rows if r.below_threshold), None)
    plan = Plan(inputs=inputs, source=str(report.source), mode=data.mode, sample_unit=data.sample_unit,
                measured_worlds=data.worlds,
                measured_throughput={s.world_size: s.throughput for s in data.sizes}, target_samples=target, target_basis=target_basis, model=model,
                laws=laws, validation=validation, rows=rows, best=best, best_reason=reason, threshold_nodes=threshold)
    if inputs.engines:
        plan.engines = compare_engines(inputs.engines, inputs.nodes, inputs.gpus_per_node,
                                       inputs.gpu_failures_per_day, inputs.node_mtbf_hours)
    plan.warnings = _warnings(plan, report, data)
    return plan


def _plan_row(n: int, model, data: ScalingData, base, measured_ci: dict, inputs: PlanInputs,
              target: float | None) -> PlanRow:
    """One node count: throughput (measured where that world size was run, else the model's), efficiency,
    and with a target the time, node-hours, cost and goodput under failures."""
    world = n * inputs.gpus_per_node
    p = model.predict(world)
    per_device = p.global_batch / world
    measured = {s.world_size: s for s in data.sizes}
    if world in measured:  # the measured mean and its 95% CI (the report's), not the model's band
        x, label = measured[world].throughput, MEASURED
        ci = measured_ci.get(world, (None, None))
        lo = max(0.0, ci[0]) if ci[0] is not None else x
        hi = ci[1] if ci[1] is not None else x
    else:
        x, lo, hi, label = p.throughput, p.throughput_low, p.throughput_high, p.label
    row = PlanRow(nodes=n, world_size=world, throughput=x, throughput_low=lo, throughput_high=hi, label=label,
                  comm_label=p.comm_label, efficiency=x / ((world / base.world_size) * base.throughput),
                  per_device_batch=per_device, step_s=p.global_batch / x, exposed_comm_s=p.exposed_comm_s)
    if data.mode == STRONG and per_device < 1:
        row.feasible = False
        row.note = f"global batch {p.global_batch:g} leaves less than one sample per device"
    row.below_threshold = row.efficiency < inputs.efficiency_threshold
    if target is not None and row.feasible:
        _time_and_cost(row, target, inputs)
    return row


def _time_and_cost(row: PlanRow, target: float, inputs: PlanInputs) -> None:
    work_s = target / row.throughput
    row.train_hours = work_s / 3600
    band = (target / row.throughput_high, target / row.throughput_low)
    if inputs.node_mtbf_hours is not None and inputs.failures is not None:
        mtbf = job_mtbf_s(inputs.node_mtbf_hours * 3600, row.nodes)
        g = expected_goodput(mtbf, inputs.failures.save_s, inputs.failures.restart_s, method=inputs.interval_method)
        row.job_mtbf_hours, row.checkpoint_interval_s, row.goodput = mtbf / 3600, g.interval_s, g.goodput
        row.expected_hours = work_s / g.goodput / 3600
        row.expected_hours_low, row.expected_hours_high = band[0] / g.goodput / 3600, band[1] / g.goodput / 3600
    else:
        row.expected_hours = row.train_hours
        row.expected_hours_low, row.expected_hours_high = band[0] / 3600, band[1] / 3600
    row.node_hours = row.nodes * row.expected_hours
    if inputs.cost_per_node_hour is not None:
        row.cost = row.node_hours * inputs.cost_per_node_hour
    if inputs.deadline_hours is not None:
        row.meets_deadline = row.expected_hours <= inputs.deadline_hours


def _recommend(rows: list[PlanRow], target: float | None, inputs: PlanInputs) -> tuple[PlanRow | None, str]:
    """The cheapest feasible node count meeting the deadline, and why."""
    if target is None:
        return None, "no target (--target-samples or --target-accuracy): no time to train, cost or deadline"
    candidates = [r for r in rows if r.feasible and r.node_hours is not None
                  and (inputs.deadline_hours is None or r.meets_deadline)]
    what = "cost" if inputs.cost_per_node_hour is not None else "node-hours"
    if not candidates:
        return None, f"no planned node count meets the {inputs.deadline_hours:g} h deadline"
    best = min(candidates, key=lambda r: (r.node_hours, r.expected_hours))
    return best, (f"lowest {what} among the node counts meeting the {inputs.deadline_hours:g} h deadline"
                  if inputs.deadline_hours is not None else f"lowest {what} (no deadline given)")


def _warnings(plan: Plan, report, data: ScalingData) -> list[str]:
    w = []
    biggest = max(data.worlds)
    far = [r for r in plan.rows if r.world_size > biggest]
    if far:
        w.append(f"Extrapolation: {len(far)} planned size(s) go beyond the largest measured world size {biggest} "
                 f"(up to {max(r.world_size for r in far)}, {max(r.world_size for r in far) / biggest:.0f}x): "
                 "they are model predictions, labelled extrapolated, not measurements.")
    if plan.model.comm_model is None:
        w.append("No collective fit given (--comm): communication is the ring all-reduce bandwidth term fitted on "
                 "the training runs alone; pass a trainscale comm folder measured on the target network.")
    elif plan.inputs.link_bandwidth:
        w.append(f"Communication is modelled as a ring over links of {plan.inputs.link_bandwidth} per direction "
                 "(no latency term): valid when that link is the bottleneck the planned job's ring crosses.")
    else:
        w.append("The collective fit is carried to larger world sizes with the ring model (same bus bandwidth): "
                 "valid when the measured link is the one the planned job's ring crosses (inter-node).")
    hosts = report.environment.get("hosts", [])
    if len(hosts) <= 1 and not report.environment.get("emulated"):
        w.append("Measured on one host only: intra-node scaling; inter-node communication is not in the data.")
    for s in data.sizes:
        if s.oversubscribed:
            w.append(f"World size {s.world_size} was oversubscribed (more threads than cores): its throughput "
                     "includes CPU contention, which the model does not predict.")
    if report.environment.get("data_kind") == "synthetic":
        w.append("Synthetic data: no data-loading cost in the measured step times.")
    if max(len(s.runs) for s in data.sizes) < 2:
        w.append("One run per world size: the uncertainty bands come from step-to-step scatter only "
                 "(use sweep --repeats 3 or more).")
    if plan.validation:
        errs = ", ".join(f"world {p.world_size}: {p.error_pct:+.1f}%" for p in plan.validation.points)
        comm = [p for p in plan.validation.points if p.comm_error_pct is not None]
        if comm:
            errs += "; time in collectives " + ", ".join(f"world {p.world_size}: {p.comm_error_pct:+.1f}%" for p in comm)
        w.append(f"Model validation (fitted on world sizes {', '.join(map(str, plan.validation.fitted_worlds))}, "
                 f"predicting the measured larger ones): throughput prediction error {errs}.")
    else:
        w.append("The model could not be validated: fewer than 3 measured world sizes (fit on the small ones, "
                 "predict a measured larger one).")
    if plan.inputs.node_mtbf_hours is None:
        w.append("No MTBF given (--mtbf-hours): times and costs assume no failures.")
    infeasible = [r.nodes for r in plan.rows if not r.feasible]
    if infeasible:
        w.append(f"Strong scaling: node count(s) {', '.join(map(str, infeasible))} leave less than one sample per "
                 "device of the fixed global batch.")
    return w


# ---------------------------------------------------------------------------------------------
# Output: markdown, console table, plots, files


def _f(v: float | None, spec: str = ".3g") -> str:
    if v == math.inf:
        return "unbounded"
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def plan_table(plan: Plan) -> tuple[list[str], list[list[str]]]:
    u = plan.sample_unit
    header = ["nodes", "devices", f"throughput ({u}/s)", "95% band", "label", "efficiency", "exposed comm ms",
              "train h (no failures)", "ckpt interval min", "goodput", "expected h", "node-hours", "cost",
              "deadline", "Pareto"]
    rows = []
    for r in plan.rows:
        flag = " (below threshold)" if r.below_threshold else ""
        rows.append([str(r.nodes), str(r.world_size), _f(r.throughput, ".4g"),
                     f"[{_f(r.throughput_low, '.4g')}, {_f(r.throughput_high, '.4g')}]", r.label,
                     f"{r.efficiency:.3f}{flag}", _f(r.exposed_comm_s * 1e3, ".3g"), _f(r.train_hours, ".3g"),
                     _f(r.checkpoint_interval_s / 60 if r.checkpoint_interval_s else None, ".3g"),
                     _f(r.goodput, ".3f"), _f(r.expected_hours, ".3g"), _f(r.node_hours, ".4g"),
                     _f(r.cost, ",.2f"), "-" if r.meets_deadline is None else ("yes" if r.meets_deadline else "no"),
                     "yes" if r.pareto else ""])
    return header, rows


def to_markdown(plan: Plan, image_names: dict[str, str] | None = None) -> str:
    i = plan.inputs
    lines = ["# trainscale capacity plan", "", f"Source: `{plan.source}` ({plan.mode} scaling, measured world sizes "
             f"{', '.join(map(str, plan.measured_worlds))}); {i.gpus_per_node} device(s) per node.", ""]
    if plan.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in plan.warnings] + [""]
    lines += ["## Model (fitted)", "", f"- Step time: {plan.model.describe()}"]
    lines += [f"- {n}" for n in plan.model.notes]
    for law in plan.laws.values():
        ci = f", 95% CI [{law.ci_low:.3f}, {law.ci_high:.3f}]" if law.ci_low is not None else ", no CI (too few points)"
        lines.append(f"- {law.law.capitalize()} (describes {law.matches_mode} scaling): serial fraction "
                     f"{law.serial_fraction:.4f}{ci}, rel. rms error {law.rel_rms_error:.1%} over {law.points} run(s)")
    if plan.target_samples is not None:
        lines += [f"- Target: {plan.target_samples:.4g} {plan.sample_unit} ({plan.target_basis})"]
    if i.failures is not None:
        lines += [f"- Restart time R = {i.failures.restart_s:.2f} s ({i.failures.restart_basis})",
                  f"- Checkpoint save = {i.failures.save_s:.2f} s ({i.failures.save_basis})"]
    if i.node_mtbf_hours is not None:
        lines += [f"- Node MTBF {i.node_mtbf_hours:g} h; job MTBF = node MTBF / nodes; checkpoint interval: "
                  f"{'Daly' if i.interval_method == DALY else 'Young'}; goodput: Daly's expected wall time (modelled)"]
    header, rows = plan_table(plan)
    lines += ["", "## Plan", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Efficiency threshold {i.efficiency_threshold:g}: "
              + (f"efficiency falls below it from {plan.threshold_nodes} node(s) on." if plan.threshold_nodes
                 else "every planned node count stays above it."),
              f"Recommendation: {f'{plan.best.nodes} node(s)' if plan.best else 'none'} ({plan.best_reason})."]
    if plan.engines:
        lines += [""] + engines_markdown(i.engines, plan.engines, rate_basis(i.gpu_failures_per_day, i.node_mtbf_hours))
    if plan.validation:
        lines += ["", "## Model validation", "", f"Fitted on world sizes {', '.join(map(str, plan.validation.fitted_worlds))}; "
                  "predicted the larger measured ones.", "",
                  "| world | measured | predicted | 95% band | error | Amdahl | Gustafson | in collectives ms "
                  "(measured) | predicted ms | error |", "|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|"]
        for p in plan.validation.points:
            lines.append(f"| {p.world_size} | {p.measured_throughput:.4g} | {p.predicted_throughput:.4g} ({p.label}) | "
                         f"[{_f(p.predicted_low, '.4g')}, {_f(p.predicted_high, '.4g')}] | {p.error_pct:+.1f}% | "
                         f"{_f(p.amdahl_throughput, '.4g')} | {_f(p.gustafson_throughput, '.4g')} | "
                         f"{_f(p.measured_comm_s * 1e3 if p.measured_comm_s else None, '.4g')} | "
                         f"{_f(p.predicted_comm_s * 1e3 if p.predicted_comm_s else None, '.4g')} | "
                         f"{_f(p.comm_error_pct, '+.1f')}{'%' if p.comm_error_pct is not None else ''} |")
    if image_names:
        lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in image_names.items()]
    lines += ["", "Labels: measured = a world size that was run; fitted = model inside the fitted world sizes; "
              "extrapolated = model outside them. Goodput, expected hours and cost are modelled.", ""]
    return "\n".join(lines)


def write_plan(plan: Plan, out_dir: Path) -> Path:
    from trainscale.analysis import plan_plots
    from trainscale.scaling.results.files import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.plots = plan_plots.plan_figures(plan, out_dir)
    write_json_atomic(out_dir / "plan.json", plan.to_dict())
    write_text_atomic(out_dir / "plan.md", to_markdown(plan, {k: v.name for k, v in plan.plots.items()}))
    return out_dir / "plan.json"
