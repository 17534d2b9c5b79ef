"""The scaling report: tables, warnings and plots from a results folder.

Every figure is recomputed here from the raw per-step samples (runs.run_metrics), not copied from
summaries, so what the report shows is what the samples say.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from trainscale.analysis import gpu_telemetry, plots

from trainscale.scaling.results import schema
from trainscale.analysis.comm_overhead import combine_runs
from trainscale.scaling.results.files import ResultsError, read_json, write_json_atomic, write_text_atomic
from trainscale.scaling.results.records import SweepIndex, writer_alive
from trainscale.analysis.strategies import StrategyRow, comparison_warnings, strategy_rows
from trainscale.analysis.rank_views import (BOX_PLOT_MAX_RANKS, FULL_TABLE_MAX_RANKS, STRAGGLER_THRESHOLD, RankView,
                                            nodes_of, rank_view, rank_views_markdown, write_rank_csv)
from trainscale.analysis.reduction import RunReduction
from trainscale.analysis.runs import Run, load_run
from trainscale.analysis.scaling import STRONG, WEAK, scaling_points
from trainscale.analysis.stats import mad_outliers, summarize, t_confidence_interval
from trainscale.analysis.tta_report import TTASection, build_tta_section, tta_markdown

MIN_MEASURED_STEPS = 10
LOADER_BOUND_SHARE = 0.15  # data wait above this share of the step: the run measured its input pipeline


class NoRunsError(ValueError):
    pass


@dataclass
class SizeRow:
    world_size: int
    nodes: int
    nproc: int
    runs_ok: int
    runs_failed: int
    global_batch: float
    throughput: float  # global samples/s, mean over ok runs
    ci_low: float
    ci_high: float
    ci_basis: str
    per_device: float
    time_per_step_s: float  # measured window / steps (mean over ok runs)
    step_mean_s: float
    step_p50_s: float
    step_p95_s: float
    step_p99_s: float
    breakdown_s: dict[str, float]
    slowest_rank: int
    outlier_steps: int
    threads_per_rank: int | None = None
    oversubscribed: bool = False
    outlier_runs: list[str] = field(default_factory=list)  # runs whose throughput the MAD rule flags (kept)
    speedup: float | None = None
    efficiency: float | None = None
    karp_flatt: float | None = None
    comm: dict | None = None  # all-reduce overhead (analysis.comm_overhead.combine_runs); None if not recorded
    comm_delay_ms: float = 0.0  # an emulated comm delay the runs were made with (comm.delay_ms)


@dataclass
class Report:
    source: Path
    out_dir: Path
    mode: str
    mode_basis: str
    sample_unit: str
    rows: list[SizeRow]
    failed: list[dict]
    rank_views: dict[int, RankView]  # world size -> its first ok run's per-rank view
    warnings: list[str]
    environment: dict
    heatmaps: dict[int, RunReduction] = field(default_factory=dict)  # world size -> the run the heatmap shows
    tta: TTASection | None = None  # time-to-accuracy runs only
    plots: dict[str, Path] = field(default_factory=dict)
    markdown: Path | None = None
    rank_csv: Path | None = None  # every rank's figures (per_rank.csv)
    strategies: list[StrategyRow] = field(default_factory=list)  # memory, communication, bubble, MFU
    gpu: list[dict] = field(default_factory=list)  # per run: GPU telemetry, energy, threats, MFU (gpu_telemetry)
    sub_reports: dict[str, Path] = field(default_factory=dict)  # strategy -> its own scaling report
    runs: list[Run] = field(default_factory=list)  # the runs it was built from (damaged ones left out)


def find_runs(folder: Path) -> list[Path]:
    folder = Path(folder)
    index = folder / schema.SWEEP_INDEX
    if index.exists():
        runs = SweepIndex.from_dict(read_json(index), str(index)).runs
        return [folder / r.path for r in runs if (folder / r.path / schema.CONFIG).exists()]
    if (folder / schema.CONFIG).exists():
        return [folder]
    return sorted(p.parent for p in folder.rglob(schema.CONFIG) if not any(part.startswith(".") for part in p.parts))


def infer_mode(folder: Path, runs: list[Run]) -> tuple[str, str]:
    index = folder / schema.SWEEP_INDEX
    if index.exists():
        return SweepIndex.from_dict(read_json(index), str(index)).scaling, "declared by the sweep"
    globals_ = {r.summary.get("global_batch") for r in runs}
    per_rank = {r.config.get("batch_size") for r in runs}
    if len(per_rank) == 1:
        return WEAK, "inferred: same per-rank batch in every run"
    if len(globals_) == 1:
        return STRONG, "inferred: same global batch in every run"
    return WEAK, "inferred (mixed batches: treat with care)"


def build(folder: Path, out_dir: Path | None = None, paths: list[Path] | None = None,
          straggler_threshold: float | None = None) -> Report:
    """The report of the runs under folder (or of ``paths`` among them); straggler_threshold: the
    relative score that names a straggler (default rank_views.STRAGGLER_THRESHOLD)."""
    folder = Path(folder)
    paths = find_runs(folder) if paths is None else paths
    if not paths:
        raise NoRunsError(f"no runs found under {folder} (a run folder has a {schema.CONFIG})")
    runs, damaged = [], []
    for p in paths:  # a damaged run is left out with a warning naming it; the others are reported
        try:
            run = load_run(p)
            run.check_files()
            runs.append(run)
        except ResultsError as e:
            damaged.append(str(e))
    if not runs:
        raise NoRunsError(f"no usable run under {folder}: {damaged[0]}")
    mode, basis = infer_mode(folder, runs)
    failed = [{"run": r.path.name, "world_size": r.world_size, "reason": r.summary.get("reason")}
              for r in runs if not r.ok]

    groups: dict[tuple[int, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((int(r.config["nodes"]), int(r.config["nproc"])), []).append(r)

    rows, rank_views, heatmaps, units, no_window = [], {}, {}, set(), []
    for (nodes, nproc), members in sorted(groups.items(), key=lambda kv: kv[0][0] * kv[0][1]):
        ok, metrics, step_times = [], [], []
        for r in (r for r in members if r.ok):
            try:
                metrics.append(r.metrics())
            except ValueError:  # a TTA run that reached its target within its warmup steps
                no_window.append(r.path.name)
                continue
            ok.append(r)
            step_times.append(r.reduction().global_step_s)
            units.add(r.summary.get("sample_unit", "samples"))
        if not ok:
            continue
        world = nodes * nproc
        first = ok[0].reduction()
        rank_views[world] = rank_view(first, ok[0].path.name, nodes_of(ok[0].provenance),
                                      threshold=straggler_threshold or STRAGGLER_THRESHOLD)
        heatmaps[world] = first
        rows.append(_size_row(nodes, nproc, ok, metrics, step_times, len(members) - len(ok)))

    for row, point in zip(rows, scaling_points(mode, [r.world_size for r in rows], [r.time_per_step_s for r in rows],
                                               [r.throughput for r in rows])):
        row.speedup, row.efficiency, row.karp_flatt = point.speedup, point.efficiency, point.karp_flatt

    environment = _environment(runs)
    warnings = _warnings(runs, rows, environment)
    warnings += [f"Left out a damaged run: {d}" for d in damaged] + _sweep_warnings(folder)
    if no_window:
        warnings.append(f"{len(no_window)} run(s) reached the target within their warmup steps and have no "
                        f"throughput window: {', '.join(no_window)}")
    tta = build_tta_section(runs, {r.world_size: r.efficiency for r in rows}, mode)
    if tta:
        warnings += tta.warnings
    report = Report(source=folder, out_dir=Path(out_dir) if out_dir else folder / "report", mode=mode,
                    mode_basis=basis, sample_unit="/".join(sorted(units)) or "samples", rows=rows, failed=failed,
                    rank_views=rank_views, warnings=warnings, environment=environment,
                    heatmaps=heatmaps, tta=tta, runs=runs)
    report.strategies = strategy_rows(runs)
    report.warnings += comparison_warnings(report.strategies)
    report.gpu = gpu_telemetry.report_rows(runs)
    return report


def _size_row(nodes: int, nproc: int, ok: list[Run], metrics: list[dict], step_times: list[np.ndarray],
              failed: int) -> SizeRow:
    """One world size over its usable runs."""
    world = nodes * nproc
    # Throughput of a world size = global batch / mean time per step over its runs (the harmonic
    # mean of their rates, right for fixed work); its CI is the Student-t CI of that mean time,
    # inverted, exactly as within one run (runs.run_metrics): it cannot go below zero.
    tps = [m["time_per_step_s"] for m in metrics]
    gb = float(np.mean([m["global_batch"] for m in metrics]))
    throughput = gb / float(np.mean(tps))
    if len(tps) >= 2:
        t_lo, t_hi = t_confidence_interval(tps)
        lo, hi = gb / t_hi, (gb / t_lo if t_lo > 0 else float("inf"))
        ci_basis = f"Student-t 95% over {len(tps)} runs (of the time per step, inverted)"
    else:
        lo, hi = metrics[0]["throughput"]["ci_low"], metrics[0]["throughput"]["ci_high"]
        ci_basis = "Student-t 95% over steps of 1 run"
    pooled = summarize(np.concatenate(step_times))
    breakdown = {k: float(np.mean([m["breakdown_s"][k] for m in metrics])) for k in metrics[0]["breakdown_s"]}
    launch = ok[0].summary.get("launch", {})
    return SizeRow(
        world_size=world, nodes=nodes, nproc=nproc, runs_ok=len(ok), runs_failed=failed,
        global_batch=gb, throughput=throughput, ci_low=lo, ci_high=hi, ci_basis=ci_basis, per_device=throughput / world,
        time_per_step_s=float(np.mean(tps)), step_mean_s=pooled.mean, step_p50_s=pooled.p50,
        step_p95_s=pooled.p95, step_p99_s=pooled.p99, breakdown_s=breakdown, slowest_rank=metrics[0]["slowest_rank"],
        outlier_steps=len(pooled.outliers), threads_per_rank=launch.get("threads_per_rank"),
        oversubscribed=bool(launch.get("oversubscribed")), outlier_runs=[ok[i].path.name for i in mad_outliers(tps)],
        comm=combine_runs([m.get("comm") for m in metrics]),
        comm_delay_ms=max(float(r.config.get("comm", {}).get("delay_ms", 0.0)) for r in ok))


def _sweep_warnings(folder: Path) -> list[str]:
    """A sweep that did not run to its end: stopped (by a signal), or abandoned (its process is gone)."""
    path = folder / schema.SWEEP_INDEX
    if not path.exists():
        return []
    index = SweepIndex.from_dict(read_json(path), str(path))
    out = []
    if index.status == schema.STATUS_STOPPED:
        out.append(f"The sweep did not finish: {index.reason or 'stopped'}; the runs it made are reported.")
    elif index.status == "running" and writer_alive(index.orchestrator) is False:
        out.append(f"The sweep did not finish: its trainscale process ({index.orchestrator.get('pid')} on "
                   f"{index.orchestrator.get('host')}) ended in its run {len(index.runs)} without recording an "
                   "outcome (abandoned); the runs it made are reported.")
    if index.plan and index.status != "done":
        ended = {e.name for e in index.runs if e.status in (schema.STATUS_OK, schema.STATUS_FAILED)}
        missing = [p["name"] for p in index.plan if isinstance(p, dict) and p.get("name") not in ended]
        if missing:
            out.append(f"{len(missing)} of {len(index.plan)} planned point(s) have no result: {', '.join(missing)} "
                       f"(trainscale sweep --resume {folder} runs them).")
    return out


def _environment(runs: list[Run]) -> dict:
    hosts, cpus, versions = set(), set(), {}
    for r in runs:
        p = r.provenance
        hosts.update(p.get("hostnames", []))
        if p.get("orchestrator_host"):
            cpus.add(f"{p['orchestrator_host']['cpu_model']} ({p['orchestrator_host']['cores']} cores)")
        versions = versions or p.get("versions", {})
    git = next((r.provenance.get("git") for r in runs if r.provenance.get("git")), {})
    emulated = sorted({(e["physical_host"], e["bandwidth"] or "unshaped") for r in runs
                       if (e := r.provenance.get("emulated_cluster"))})
    return {"hosts": sorted(hosts), "cpus": sorted(cpus), "versions": versions, "git": git, "emulated": emulated,
            "backend": runs[0].config.get("backend"), "workload": runs[0].config.get("workload"),
            "parallel": runs[0].config.get("parallel"), "data_kind": runs[0].config.get("data", {}).get("kind")}


def _warnings(runs: list[Run], rows: list[SizeRow], env: dict) -> list[str]:
    w = []
    for host, link in env.get("emulated", []):
        w.append(f"Emulated nodes: network namespaces on one machine ({host}), links {link}. The nodes share "
                 "its cores and memory: this measures the network path, not real multi-node hardware.")
    if len(env["hosts"]) <= 1:
        w.append(f"All runs ran on one host ({', '.join(env['hosts']) or 'unknown'}): this is intra-node "
                 "scaling, not multi-node scaling.")
    if env["data_kind"] == "synthetic":
        w.append("Synthetic data: throughput leaves out real data loading and says nothing about accuracy.")
    for r in rows:
        if r.oversubscribed:
            w.append(f"World size {r.world_size} oversubscribes the CPU cores ({r.nproc} processes x "
                     f"{r.threads_per_rank} threads): its efficiency includes CPU contention.")
    for r in rows:
        share = r.breakdown_s.get("data_s", 0.0) / r.time_per_step_s if r.time_per_step_s > 0 else 0.0
        if share > LOADER_BOUND_SHARE:
            w.append(f"Loader-bound: at world size {r.world_size} the ranks waited for data in {share:.0%} of the step "
                     f"time (above {LOADER_BOUND_SHARE:.0%}): the run measured its input pipeline (data.loader_workers, "
                     "storage, decoding) as much as training.")
    delayed = sorted({r.comm_delay_ms for r in rows if r.comm_delay_ms > 0})
    if delayed:
        w.append(f"Runs made with an emulated communication delay (comm.delay_ms = {', '.join(f'{d:g}' for d in delayed)}"
                 " per gradient collective): communication figures and efficiency are not this machine's.")
    if rows and min(r.world_size for r in rows) > 1:
        w.append(f"No 1-process run: speedup and efficiency are relative to world size {rows[0].world_size}.")
    if rows and max(r.runs_ok for r in rows) < 2:
        w.append("One run per world size: CIs are over steps within a run, not across runs (use --repeats 3 or more).")
    few = sorted({int(r.summary["metrics"]["measured_steps"]) for r in runs if r.ok
                  and r.summary.get("metrics", {}).get("measured_steps", MIN_MEASURED_STEPS) < MIN_MEASURED_STEPS})
    if few:
        w.append(f"Few measured steps ({', '.join(map(str, few))}): percentiles and CIs are rough.")
    failed = [r for r in runs if not r.ok]
    if failed:
        w.append(f"{len(failed)} run(s) failed; see 'Failed runs'.")
    return w


def fmt(v: float | None, spec: str = ".3f") -> str:
    """A figure, or "-" when there is none: missing, NaN, or an unbounded interval side (inf)."""
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def to_markdown(rep: Report) -> str:
    u = rep.sample_unit
    env = rep.environment
    lines = [f"# trainscale scaling report: {env['workload']} / {env['parallel']}", "",
             f"Source: `{rep.source}`  ",
             f"Scaling: **{rep.mode}** ({rep.mode_basis}); "
             + ("E(N) = T(1) / (N T(N)), fixed global batch." if rep.mode == STRONG
                else "E(N) = X(N) / (N X(1)), fixed per-rank batch."), ""]
    if rep.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in rep.warnings] + [""]
    if rep.sub_reports:
        return _comparison_markdown(rep, lines)
    lines += ["## Throughput and efficiency", "",
              f"| world | nodes x procs | runs ok | global batch | throughput ({u}/s) | 95% CI | per device | "
              "speedup | efficiency | Karp-Flatt |",
              "|---:|:---:|---:|---:|---:|:---|---:|---:|---:|---:|"]
    for r in rep.rows:
        lines.append(f"| {r.world_size} | {r.nodes} x {r.nproc} | {r.runs_ok}/{r.runs_ok + r.runs_failed} | "
                     f"{r.global_batch:g} | {r.throughput:.2f} | [{fmt(r.ci_low, '.2f')}, {fmt(r.ci_high, '.2f')}] "
                     f"| {r.per_device:.2f} | {fmt(r.speedup, '.3f')} | {fmt(r.efficiency, '.3f')} | "
                     f"{fmt(r.karp_flatt, '.3f')} |")
    if rep.rows:
        lines += ["", f"CI basis: {rep.rows[0].ci_basis}."]
        unbounded = [str(r.world_size) for r in rep.rows if not np.isfinite(r.ci_high)]
        if unbounded:
            lines += [f"\"-\" as the upper CI bound (world {', '.join(unbounded)}): the time-per-step interval reaches "
                      "zero (few or noisy steps), so throughput has no finite upper bound."]
        flagged = [f"{name} (world {r.world_size})" for r in rep.rows for name in r.outlier_runs]
        if flagged:
            lines += [f"Outlier runs by the MAD rule (kept in every figure): {', '.join(flagged)}."]
    if rep.tta:
        lines += [""] + tta_markdown(rep.tta)
    lines += ["", "## Step time (global step = slowest rank)", "",
              "| world | mean ms | p50 ms | p95 ms | p99 ms | data ms | compute ms | optimizer ms | outlier steps (MAD) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rep.rows:
        b = r.breakdown_s
        lines.append(f"| {r.world_size} | {r.step_mean_s * 1e3:.1f} | {r.step_p50_s * 1e3:.1f} | "
                     f"{r.step_p95_s * 1e3:.1f} | {r.step_p99_s * 1e3:.1f} | {b.get('data_s', 0) * 1e3:.1f} | "
                     f"{b.get('compute_s', 0) * 1e3:.1f} | {b.get('optimizer_s', 0) * 1e3:.1f} | {r.outlier_steps} |")
    lines += rank_views_markdown(rep.rank_views, rep.rank_csv.name if rep.rank_csv else None)
    lines += _comm_markdown(rep)
    lines += _strategy_table(rep)
    lines += gpu_telemetry.section_markdown(rep.gpu)
    if rep.failed:
        lines += ["", "## Failed runs", "", "| run | world | reason |", "|---|---:|---|"]
        lines += [f"| {f['run']} | {f['world_size']} | {f['reason']} |" for f in rep.failed]
    if rep.plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({p.name})" for name, p in rep.plots.items()]
    lines += _environment_lines(env)
    return "\n".join(lines)


def _ms(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None or np.isnan(v) else format(v * 1e3, spec)


def _comm_markdown(rep: Report) -> list[str]:
    rows = [r for r in rep.rows if r.comm]
    if not rows:
        return []
    lines = ["", "## Communication inside training (all-reduce overhead)", "",
             "In collectives: time per step with a gradient collective in flight (comm hook, launch to completion). "
             "Exposed: compute time of the measured steps minus that of compute-only steps with gradient sync "
             "skipped (no_sync, run after the measured window, never in throughput). Overlap: share of the "
             "in-collective time hidden behind compute.", "",
             "| world | efficiency | step ms | in collectives ms | exposed comm ms | 95% CI | exposed % of step | "
             "overlap % | no_sync steps | slowest rank |",
             "|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|"]
    for r in rows:
        c = r.comm
        lines.append(f"| {r.world_size} | {fmt(r.efficiency, '.3f')} | {_ms(c['step_time_s'])} | {_ms(c['comm_s'])} | "
                     f"{_ms(c['exposed_comm_s'])} | [{_ms(c['exposed_ci_low'])}, {_ms(c['exposed_ci_high'])}] | "
                     f"{fmt(c['exposed_pct_of_step'], '.1f')} | {fmt(c['overlap_pct'], '.0f')} | "
                     f"{c['no_sync_steps']} | {'-' if c['slowest_rank'] is None else c['slowest_rank']} |")
    bases = sorted({r.comm["exposed_ci_basis"] for r in rows} | {r.comm["slowest_rank_basis"] for r in rows
                                                                   if r.comm["slowest_rank_basis"]})
    lines += ["", f"CI and slowest-rank basis: {'; '.join(bases)}."]
    undefined = [f"world {r.world_size}: {r.comm['undefined']}" for r in rows if r.comm.get("undefined")]
    if undefined:
        lines += ["", "\"-\": " + "; ".join(undefined) + "."]
    over = [str(r.world_size) for r in rows if r.comm["comm_s"] and r.comm["exposed_comm_s"] is not None
            and r.comm["exposed_comm_s"] > r.comm["comm_s"]]
    if over:
        lines += ["", f"At world size {', '.join(over)} the exposed time exceeds the in-collective time (negative "
                      "overlap): synchronisation also slows compute (on CPU, gloo's threads share the cores with "
                      "compute; DDP copies gradients into and out of its buckets), or the difference is within noise "
                      "(see the CI)."]
    small = [r for r in rows if r.world_size <= FULL_TABLE_MAX_RANKS]
    if len(small) < len(rows):
        lines += ["", f"Per rank at world sizes above {FULL_TABLE_MAX_RANKS}: the comm columns of "
                      f"{rep.rank_csv.name if rep.rank_csv else 'the per-rank CSV'}."]
    if not small:
        return lines
    lines += ["",
              "### Time in collectives per rank (straggler view)", "",
              "| world | rank | in collectives ms | p95 ms | compute ms | compute-only ms | exposed ms |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in small:
        for rank, v in sorted(r.comm["per_rank"].items(), key=lambda kv: int(kv[0])):
            mark = " (slowest)" if r.comm["slowest_rank"] is not None and int(rank) == r.comm["slowest_rank"] else ""
            lines.append(f"| {r.world_size} | {rank}{mark} | {_ms(v.get('comm_s'))} | {_ms(v.get('comm_p95_s'))} | "
                         f"{_ms(v.get('compute_s'))} | {_ms(v.get('compute_only_s'))} | {_ms(v.get('exposed_comm_s'))} |")
    return lines


def mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.2f}"


def _strategy_table(rep: Report) -> list[str]:
    rows = rep.strategies
    if not rows:
        return []
    u = rep.sample_unit
    lines = ["", "## Parallel strategies: throughput, memory, communication", "",
             f"| strategy | layout | world | global batch | throughput ({u}/s) | per device | peak memory MiB (max rank) "
             "| params+grads+opt state MiB (max rank) | comm payload MiB/step/rank | comm wire MiB/step/rank (model) "
             "| bubble measured | bubble theory | MFU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        mfu = r.mfu_text
        lines.append(f"| {r.parallel} | {r.layout} | {r.world_size} | {r.global_batch:g} | {r.throughput:.1f} | "
                     f"{r.per_device:.1f} | {mib(r.peak_memory_bytes)} | {mib(r.optimizer_state_bytes)} | "
                     f"{mib(r.comm_payload_bytes)} | {mib(r.comm_wire_bytes)} | {fmt(r.bubble_measured, '.3f')} | "
                     f"{fmt(r.bubble_theoretical, '.3f')} | {mfu} |")
    notes = sorted({r.mfu_note for r in rows if r.mfu_note})
    measures = sorted({r.memory_measure for r in rows if r.memory_measure})
    lines += ["", f"Peak memory: {'; '.join(measures) or 'not recorded'}. Params+grads+opt state: bytes of the "
              "parameters the optimizer updates on the rank, their gradients and its state tensors, counted on the "
              "tensors (DeepSpeed: its fp32 partitions). Communication: payloads of every collective of one probe "
              "step (the last warmup step), measured at the dispatcher; wire bytes are a ring-algorithm model on "
              "top of them. Bubble: 1 - stage compute / step time, against (p-1)/(m+p-1)."]
    lines += ["", "MFU: model FLOPs per sample counted with FlopCounterMode (forward and backward) at the run's "
                  "start; achieved FLOP/s against the datasheet peak of the device (when known) and against the "
                  "matmul FLOP/s the ranks measured at their start (square torch.mm, summed over ranks)."
              + (" Datasheet MFU " + "; ".join(notes) + "." if notes else "")]
    return lines


def _comparison_markdown(rep: Report, lines: list[str]) -> str:
    lines += _strategy_table(rep)[1:]
    lines += ["", "## Scaling report of each strategy", ""]
    lines += [f"- [{s}]({p.relative_to(rep.out_dir)})" for s, p in rep.sub_reports.items()]
    if rep.failed:
        lines += ["", "## Failed runs", "", "| run | world | reason |", "|---|---:|---|"]
        lines += [f"| {f['run']} | {f['world_size']} | {f['reason']} |" for f in rep.failed]
    if rep.plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({p.name})" for name, p in rep.plots.items()]
    lines += _environment_lines(rep.environment)
    return "\n".join(lines)


def _environment_lines(env: dict) -> list[str]:
    v = env.get("versions", {})
    return ["", "## Environment", "",
            f"- hosts: {', '.join(env['hosts']) or 'unknown'}; CPU: {', '.join(env['cpus']) or 'unknown'}",
            f"- backend: {env['backend']}; data: {env['data_kind']}",
            f"- trainscale {v.get('trainscale')} (commit {(env.get('git') or {}).get('commit')}), "
            f"torch {v.get('torch')}, python {v.get('python')}", ""]


def write_report(folder: Path, out_dir: Path | None = None, straggler_threshold: float | None = None) -> Report:
    """The report of a folder; a sweep comparing strategies gets a comparison report with one scaling
    report per strategy under it."""
    folder = Path(folder)
    paths = find_runs(folder)
    by_strategy: dict[str, list[Path]] = {}
    for p in paths:
        if (strategy := _strategy_of(p)) is not None:  # a damaged run is named by build()
            by_strategy.setdefault(strategy, []).append(p)
    if len(by_strategy) <= 1:
        return _write(build(folder, out_dir, paths, straggler_threshold))
    top = build(folder, out_dir, paths, straggler_threshold)
    for strategy, members in by_strategy.items():
        sub = _write(build(folder, top.out_dir / strategy, members, straggler_threshold))
        top.sub_reports[strategy] = sub.markdown
    top.rows, top.rank_views, top.heatmaps = [], {}, {}
    top.environment["parallel"] = ",".join(by_strategy)
    return _write(top)


def _strategy_of(run_dir: Path) -> str | None:
    """The run's strategy; None for a damaged config (build() then names the damage)."""
    try:
        config = read_json(run_dir / schema.CONFIG)
    except ResultsError:
        return None
    return config.get("parallel") if isinstance(config, dict) else None


def efficiency_ci(rows: list[SizeRow]) -> tuple[list[float], list[float]]:
    """Each efficiency's interval from its own throughput CI, the baseline's throughput held fixed: E is
    proportional to X(N) in both modes (weak: X(N) / (N X(1)); strong: T(1) / (N T(N)) at a fixed global
    batch), so its bounds are the throughput bounds times E / X(N)."""
    lows, highs = [], []
    for r in rows:
        scale = r.efficiency / r.throughput if r.efficiency is not None and r.throughput > 0 else float("nan")
        lows.append(r.ci_low * scale)
        highs.append(r.ci_high * scale)
    return lows, highs


def breakdown_parts(rows: list[SizeRow]) -> dict[str, list[float]]:
    """The breakdown plot's parts: data, forward + backward, optimizer; where the run measured exposed
    communication (compute-only steps), forward + backward split into its compute-only part and the
    exposed communication band."""
    parts = {k: [r.breakdown_s.get(k, 0.0) for r in rows] for k in rows[0].breakdown_s}
    exposed = [max(0.0, (r.comm or {}).get("exposed_comm_s") or 0.0) for r in rows]
    if "compute_s" in parts and any(exposed):
        compute = parts.pop("compute_s")
        optimizer = parts.pop("optimizer_s", None)
        parts["compute_only_s"] = [c - e for c, e in zip(compute, exposed)]
        parts["exposed_comm_s"] = exposed
        if optimizer is not None:
            parts["optimizer_s"] = optimizer
    return parts


def _write(rep: Report) -> Report:
    out = rep.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = rep.rows
    if rows:
        world = [r.world_size for r in rows]
        rep.plots["efficiency"] = plots.efficiency_curve(world, [r.efficiency for r in rows], rep.mode,
                                                         out / "efficiency.png", ci=efficiency_ci(rows))
        rep.plots["throughput"] = plots.throughput_curve(world, [r.throughput for r in rows],
                                                         [r.ci_low for r in rows], [r.ci_high for r in rows],
                                                         rep.sample_unit, out / "throughput.png")
        rep.plots["breakdown"] = plots.step_breakdown(world, breakdown_parts(rows), out / "breakdown.png")
        small = {f"world {w}": red for w, red in rep.heatmaps.items() if w <= BOX_PLOT_MAX_RANKS}
        if small:
            rep.plots["per_rank"] = plots.per_rank_step_times(
                {name: {rank: red.step_matrix[i] for i, rank in enumerate(red.ranks)} for name, red in small.items()},
                out / "per_rank_step_times.png")
        large = max((w for w in rep.heatmaps if w > BOX_PLOT_MAX_RANKS), default=None)
        if large is not None:
            rep.plots["rank_step_heatmap"] = plots.rank_step_heatmap(rep.heatmaps[large], out / "rank_step_heatmap.png")
        if rep.rank_views:
            rep.rank_csv = write_rank_csv(rep.rank_views, out / "per_rank.csv")
        comm_rows = [r for r in rows if r.comm]
        if comm_rows:
            rep.plots["comm_overhead"] = plots.comm_overhead(
                [r.world_size for r in comm_rows], [r.comm["comm_s"] for r in comm_rows],
                [r.comm["exposed_comm_s"] for r in comm_rows], [r.comm["step_time_s"] for r in comm_rows],
                [r.efficiency for r in comm_rows], out / "comm_overhead.png")
    if rep.tta:
        rep.plots["tta_curves"] = plots.tta_curves(rep.tta.curves_by_world(), rep.tta.target, out / "tta_curves.png")
    if rep.strategies:
        rep.plots["strategies"] = plots.strategy_comparison([asdict(r) for r in rep.strategies], rep.sample_unit,
                                                            out / "strategies.png")
    rep.markdown = out / "report.md"
    write_text_atomic(rep.markdown, to_markdown(rep))
    write_json_atomic(out / "report.json", {
        "source": str(rep.source), "mode": rep.mode, "mode_basis": rep.mode_basis, "sample_unit": rep.sample_unit,
        "rows": [asdict(r) for r in rows], "failed": rep.failed, "warnings": rep.warnings,
        "tta": rep.tta.to_dict() if rep.tta else None,
        "strategies": [asdict(r) for r in rep.strategies],
        "gpu": rep.gpu,
        "sub_reports": {k: str(v.relative_to(out)) for k, v in rep.sub_reports.items()},
    })
    return rep
