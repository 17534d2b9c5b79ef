"""The console tables of reports, plans and time-to-accuracy sections (rich); the files they come
from are written by analysis/ (report.md, plan.md)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from trainscale.scaling.cli.progress import styled

from trainscale.analysis.plan import Plan, plan_table
from trainscale.analysis.report import Report, fmt, mib
from trainscale.analysis.tta_report import TTASection


def print_report(rep: Report, console) -> None:
    t = Table(title=f"{rep.environment['workload']} / {rep.environment['parallel']}: {rep.mode} scaling")
    for col in ("world", "throughput", "95% CI", "speedup", "efficiency", "step p50 ms", "p99 ms",
                "exposed comm %"):
        t.add_column(col, justify="right")
    for r in rep.rows:
        t.add_row(str(r.world_size), f"{r.throughput:.1f}", f"[{fmt(r.ci_low, '.1f')}, {fmt(r.ci_high, '.1f')}]",
                  fmt(r.speedup, ".2f"), fmt(r.efficiency, ".2f"), f"{r.step_p50_s * 1e3:.1f}",
                  f"{r.step_p99_s * 1e3:.1f}", fmt(r.comm.get("exposed_pct_of_step") if r.comm else None, ".1f"))
    for f in rep.failed:
        t.add_row(str(f["world_size"]), Text("failed", "red"), "", "", "", "", "", "")
    if rep.rows or not rep.strategies:
        console.print(t)
    if rep.tta:
        console.print(tta_table(rep.tta))
    if rep.strategies:
        s = Table(title="parallel strategies")
        for col in ("strategy", "layout", "world", f"{rep.sample_unit}/s", "peak mem MiB", "state MiB",
                    "comm MiB/step", "bubble (theory)", "MFU"):
            s.add_column(col, justify="right")
        for r in rep.strategies:
            bubble = "-" if r.bubble_measured is None else f"{r.bubble_measured:.2f} ({r.bubble_theoretical:.2f})"
            s.add_row(r.parallel, r.layout, str(r.world_size), f"{r.throughput:.1f}", mib(r.peak_memory_bytes),
                      mib(r.optimizer_state_bytes), mib(r.comm_payload_bytes), bubble,
                      r.mfu_text)
        console.print(s)
    for w in rep.warnings:
        console.print(styled("warning:", "yellow", f" {w}"))
    for f in rep.failed:
        console.print(styled("failed", "red", f" {f['run']} (world {f['world_size']}): {f['reason']}"))


CONSOLE_COLUMNS = (0, 1, 2, 4, 5, 9, 10, 11, 12, 13, 14)  # of plan_table: the rest is in plan.md


def print_plan(plan: Plan, console) -> None:
    header, rows = plan_table(plan)
    t = Table(title=f"capacity plan ({plan.mode} scaling, {plan.inputs.gpus_per_node} device(s)/node)")
    for i in CONSOLE_COLUMNS:
        t.add_column(header[i], justify="right")
    for r, row in zip(rows, plan.rows):
        style = "bold green" if plan.best is row else ("yellow" if row.below_threshold else None)
        t.add_row(*[r[i] for i in CONSOLE_COLUMNS], style=style)
    console.print(t)
    console.print(f"model (fitted): {plan.model.describe()}")
    if plan.validation:
        for p in plan.validation.points:
            line = (f"validation: fitted on {plan.validation.fitted_worlds}, world {p.world_size}: measured "
                    f"{p.measured_throughput:.4g}, predicted {p.predicted_throughput:.4g} ({p.error_pct:+.1f}%)")
            if p.comm_error_pct is not None:
                line += (f"; in collectives measured {p.measured_comm_s * 1e3:.1f} ms, predicted "
                         f"{p.predicted_comm_s * 1e3:.1f} ms ({p.comm_error_pct:+.1f}%)")
            console.print(line)
    console.print(f"recommendation: {f'{plan.best.nodes} node(s)' if plan.best else 'none'} ({plan.best_reason})")
    if plan.engines:
        console.print(engines_table(plan))
    for w in plan.warnings:
        console.print(styled("warning:", "yellow", f" {w}"))


def engines_table(plan: Plan) -> Table:
    """Modelled goodput per recovery engine and planned size (analysis/engine_goodput.py)."""
    engines = [c.engine for c in plan.inputs.engines]
    t = Table(title="recovery engines: modelled goodput under failures")
    for col in ("nodes", "GPUs", "job MTBF h", *engines, "better"):
        t.add_column(col, justify="right")
    for r in plan.engines:
        t.add_row(str(r.nodes), str(r.gpus), f"{r.job_mtbf_hours:.3g}",
                  *["n/a (one group)" if r.goodput[e] is None else f"{r.goodput[e]:.6f}" for e in engines], r.better)
    return t


def tta_table(sec: TTASection) -> Table:
    t = Table(title=f"time to accuracy (target {sec.target:g})" if sec.target is not None else "time to accuracy")
    for col in ("world", "runs", "INVALID", "headline TTA s", "median s", "95% CI", "TTA eff.", "throughput eff."):
        t.add_column(col, justify="right")
    for row in sec.rows:
        s = row.summary
        t.add_row(str(row.world_size), str(s.n), str(s.invalid),
                  fmt(s.headline, ".2f") if s.headline is not None else Text("INVALID", "red"), fmt(s.median, ".2f"),
                  f"{fmt(s.ci_low, '.2f')}-{fmt(s.ci_high, '.2f')}" if s.ci_low is not None else "-",
                  fmt(row.efficiency, ".2f"), fmt(sec.throughput_efficiency.get(row.world_size), ".2f"))
    return t
