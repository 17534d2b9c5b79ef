"""The time-to-accuracy part of a report: per world size the TTA over repeats (analysis/tta.py,
stats.summarize_repeats), TTA-based next to throughput-based efficiency, each run's result, and the
accuracy-versus-time curves."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trainscale.analysis.runs import Run
from trainscale.analysis.tta import DEFINITION, TTAResult, TTARow, load_tta, run_target, tta_rows


@dataclass
class TTASection:
    target: float | None  # None when the runs' targets differ (then a warning says so)
    rows: list[TTARow]
    results: dict[str, dict]  # run name -> TTAResult as a dict
    throughput_efficiency: dict[int, float | None]
    throughput_mode: str
    warnings: list[str] = field(default_factory=list)

    def curves_by_world(self) -> dict[int, list[dict]]:
        return {r.world_size: r.curves for r in self.rows}

    def to_dict(self) -> dict:
        return {"target": self.target, "definition": DEFINITION, "rows": [asdict(r) for r in self.rows],
                "runs": self.results, "throughput_efficiency": self.throughput_efficiency,
                "throughput_mode": self.throughput_mode}


def build_tta_section(runs: list[Run], throughput_efficiency: dict[int, float | None],
                      throughput_mode: str = "") -> TTASection | None:
    tta_runs = [r for r in runs if r.ok and run_target(r.config) is not None]
    if not tta_runs:
        return None
    warnings = []
    groups: dict[int, list[tuple[str, TTAResult]]] = {}
    results = {}
    for r in tta_runs:
        try:
            res = load_tta(r.path)
        except (ValueError, OSError, KeyError) as e:
            warnings.append(f"run {r.path.name}: event log unusable for time to accuracy ({e})")
            continue
        groups.setdefault(r.world_size, []).append((r.path.name, res))
        results[r.path.name] = res.to_dict()
    targets = sorted({run_target(r.config) for r in tta_runs})
    if len(targets) > 1:
        warnings.append(f"runs have different targets ({', '.join(map(str, targets))}): their TTAs are not comparable")
    rows = tta_rows(groups)
    invalid = sum(r.summary.invalid for r in rows)
    if invalid:
        warnings.append(f"{invalid} run(s) did not reach the target (INVALID): no TTA, counted as the slowest.")
    flagged = [f"{row.runs[i]} (world {row.world_size})" for row in rows for i in row.summary.outliers]
    if flagged:
        warnings.append(f"TTA outlier runs by the MAD rule (kept): {', '.join(flagged)}")
    if rows and rows[0].summary.headline is None:
        warnings.append(f"the smallest world size ({rows[0].world_size}) has an INVALID headline TTA: "
                        "no TTA-based speedup or efficiency")
    return TTASection(target=targets[0] if len(targets) == 1 else None, rows=rows, results=results,
                      throughput_efficiency=throughput_efficiency, throughput_mode=throughput_mode,
                      warnings=warnings)


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def tta_markdown(sec: TTASection) -> list[str]:
    target = f"{sec.target:g}" if sec.target is not None else "differs between runs"
    lines = ["## Time to accuracy", "",
             f"Target: top-1 validation accuracy >= {target}. TTA = {DEFINITION}; init is timed apart. "
             "A run that never reaches the target is INVALID: no TTA, counted as the slowest run. "
             "Headline: the olympic mean (best and worst dropped) from 5 runs, else the mean of all runs "
             "(INVALID if an invalid run is among them). TTA efficiency E(N) = TTA(N0) / ((N / N0) TTA(N)); "
             f"throughput efficiency is the {sec.throughput_mode or 'sweep'}-scaling figure of the table above.", "",
             "| world | runs | INVALID | headline TTA (s) | headline | mean of valid (s) | median (s) | "
             "95% CI of valid | outlier runs (MAD) | TTA speedup | TTA efficiency | throughput efficiency |",
             "|---:|---:|---:|---:|:---|---:|---:|:---|:---|---:|---:|---:|"]
    for row in sec.rows:
        s = row.summary
        ci = f"[{_f(s.ci_low)}, {_f(s.ci_high)}]" if s.ci_low is not None else "-"
        outliers = ", ".join(row.runs[i] for i in s.outliers) or "-"
        headline = _f(s.headline, ".3f") if s.headline is not None else "INVALID"
        lines.append(f"| {row.world_size} | {s.n} | {s.invalid} | {headline} | {s.headline_method} | "
                     f"{_f(s.mean, '.3f')} | {_f(s.median, '.3f')} | {ci} | {outliers} | {_f(row.speedup, '.3f')} | "
                     f"{_f(row.efficiency, '.3f')} | {_f(sec.throughput_efficiency.get(row.world_size), '.3f')} |")
    lines += ["", "| world | run | TTA (s) | reached at epoch | accuracy there | best accuracy | evaluations | "
              "evaluation time (s) |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in sec.rows:
        for name in row.runs:
            res = sec.results[name]
            reached = res["reached"]
            best = max((e["accuracy"] for e in res["evals"]), default=None)
            lines.append(f"| {row.world_size} | {name} | {_f(res['tta_s'], '.3f') if res['valid'] else 'INVALID'} | "
                         f"{reached['epoch_num'] if reached else '-'} | {_f(reached['accuracy'] if reached else None, '.4f')} | "
                         f"{_f(best, '.4f')} | {len(res['evals'])} | {_f(res['eval_s_total'], '.3f')} |")
    return lines
