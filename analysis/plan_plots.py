"""Figures of a capacity plan: throughput and efficiency against world size (measured points, the
model's prediction with its 95% band, extrapolated part dashed and labelled) and time to train against
cost with the Pareto frontier marked."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainscale.analysis.plots import _save, plt


def _curve_worlds(plan) -> list[int]:
    worlds = sorted(set(plan.measured_worlds) | {r.world_size for r in plan.rows})
    lo, hi = min(worlds), max(worlds)
    grid = np.unique(np.round(np.geomspace(lo, hi, 60)).astype(int))
    return sorted(set(grid.tolist()) | set(worlds))


def throughput_figure(plan, path: Path) -> Path:
    m = plan.model
    worlds = _curve_worlds(plan)
    preds = [m.predict(w) for w in worlds]
    fitted_max = max(m.fitted_worlds)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = min(plan.measured_worlds)
    base_x = plan.measured_throughput[base]
    ax.plot(worlds, [base_x * w / base for w in worlds], ":", color="grey", label="ideal (linear)")
    xs, ys = np.array(worlds), np.array([p.throughput for p in preds])
    lo, hi = np.array([p.throughput_low for p in preds]), np.array([p.throughput_high for p in preds])
    hi = np.where(np.isfinite(hi), hi, np.nan)  # unbounded above: no band drawn there
    ax.plot(xs[xs <= fitted_max], ys[xs <= fitted_max], "-", color="C0", label="model (fitted)")
    ax.plot(xs[xs >= fitted_max], ys[xs >= fitted_max], "--", color="C0", label="model (extrapolated)")
    ax.fill_between(xs, lo, hi, color="C0", alpha=0.15, label="model 95% band")
    planned = [r for r in plan.rows if r.label != "measured"]
    ax.plot([r.world_size for r in planned], [r.throughput for r in planned], "s", color="C1", ms=6,
            label="planned sizes (predicted)")
    mw = sorted(plan.measured_throughput)
    ax.plot(mw, [plan.measured_throughput[w] for w in mw], "o", color="k", label="measured")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices (world size)")
    ax.set_ylabel(f"global throughput ({plan.sample_unit}/s)")
    ax.set_title("Throughput: measured and predicted")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def efficiency_figure(plan, path: Path) -> Path:
    m = plan.model
    worlds = _curve_worlds(plan)
    base = min(plan.measured_worlds)
    base_x = plan.measured_throughput[base]
    eff = [m.predict(w).throughput / ((w / base) * base_x) for w in worlds]
    fitted_max = max(m.fitted_worlds)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs, ys = np.array(worlds), np.array(eff)
    ax.plot(xs[xs <= fitted_max], ys[xs <= fitted_max], "-", color="C0", label="model (fitted)")
    ax.plot(xs[xs >= fitted_max], ys[xs >= fitted_max], "--", color="C0", label="model (extrapolated)")
    mw = sorted(plan.measured_throughput)
    ax.plot(mw, [plan.measured_throughput[w] / ((w / base) * base_x) for w in mw], "o", color="k", label="measured")
    ax.axhline(1.0, ls=":", color="grey", label="ideal (E = 1)")
    ax.axhline(plan.inputs.efficiency_threshold, ls="--", color="C3",
               label=f"threshold {plan.inputs.efficiency_threshold:g}")
    if plan.threshold_nodes:
        w = plan.threshold_nodes * plan.inputs.gpus_per_node
        ax.axvline(w, color="C3", alpha=0.4)
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, max(1.1, float(np.nanmax(ys)) * 1.05))
    ax.set_xlabel("devices (world size)")
    ax.set_ylabel(f"{plan.mode} scaling efficiency")
    ax.set_title("Scaling efficiency: measured and predicted")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pareto_figure(plan, path: Path) -> Path | None:
    rows = [r for r in plan.rows if r.expected_hours is not None and r.node_hours is not None]
    if not rows:
        return None
    cost_of = (lambda r: r.cost) if plan.inputs.cost_per_node_hour is not None else (lambda r: r.node_hours)
    ylabel = "cost" if plan.inputs.cost_per_node_hour is not None else "node-hours"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r.expected_hours for r in rows], [cost_of(r) for r in rows], "o", color="grey", label="planned node counts")
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.expected_hours)
    ax.plot([r.expected_hours for r in front], [cost_of(r) for r in front], "-o", color="C2",
            label="Pareto frontier (no other option is both faster and cheaper)")
    for r in rows:
        ax.annotate(f"{r.nodes} n{' (extrap.)' if r.label == 'extrapolated' else ''}", (r.expected_hours, cost_of(r)),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    if plan.best is not None:
        ax.plot([plan.best.expected_hours], [cost_of(plan.best)], "*", ms=16, color="C3",
                label=f"recommended: {plan.best.nodes} node(s)")
    if plan.inputs.deadline_hours is not None:
        ax.axvline(plan.inputs.deadline_hours, ls="--", color="C3", alpha=0.6,
                   label=f"deadline {plan.inputs.deadline_hours:g} h")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("expected time to train (hours, modelled" + (", with failures)" if plan.inputs.node_mtbf_hours else ")"))
    ax.set_ylabel(f"{ylabel} (modelled)")
    ax.set_title("Time to train vs cost")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plan_figures(plan, out_dir: Path) -> dict[str, Path]:
    out = {"plan_throughput": throughput_figure(plan, out_dir / "plan_throughput.png"),
           "plan_efficiency": efficiency_figure(plan, out_dir / "plan_efficiency.png")}
    p = pareto_figure(plan, out_dir / "plan_pareto.png")
    if p is not None:
        out["plan_pareto"] = p
    return out
