"""trainscale compare: a statistical A/B comparison of two results folders, with a plain verdict."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.common import UsageError
from trainscale.scaling.cli.progress import console, styled

DESCRIPTION = """\
Compares B against A per world size found on both sides (run folders, sweep folders or folders of
runs). The metric is time to accuracy when every run of both sides has a target, else throughput
(--metric forces one). Each run is one value; INVALID runs (target missed) count as the slowest.

Test (--test auto): Welch's t-test on the log values (ratio of geometric means with its 95% CI), or
Mann-Whitney U (Hodges-Lehmann ratio, exact CI) when a side has INVALID runs or a skewed sample
(D'Agostino's test, n >= 8). The ratio is B's speedup over A: > 1 means B is better.

Fair-comparison guard: refuses (exit 2) when the sides differ in precision, global batch,
hardware, data kind, workload, backend, target or world size, unless --allow-difference names it."""


HELP = "statistical A/B comparison of two results folders, with a verdict"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "compare", HELP,
        "trainscale compare results/baseline-sweep results/candidate-sweep --allow-difference global_batch",
        description=DESCRIPTION)
    p.add_argument("a", metavar="RESULTS_A", help="the baseline: a run, sweep or folder of runs")
    p.add_argument("b", metavar="RESULTS_B", help="the candidate, compared against A")
    p.add_argument("--allow-difference", dest="allow", action="append", default=[], metavar="KEY",
                   help="a difference that is the point of the comparison (repeatable): precision, global_batch, "
                        "hardware, data_kind, workload, backend, target, world_size")
    p.add_argument("--metric", default="auto", help="auto, tta_s or throughput")
    p.add_argument("--test", default="auto", help="auto, welch or mann-whitney")
    p.add_argument("--alpha", type=cli_common.finite_float, default=0.05, help="significance level")
    p.add_argument("--min-effect", dest="min_effect", type=cli_common.finite_float, default=0.0,
                   help="relative change below which a significant difference is not called a speedup or "
                        "slowdown, e.g. 0.05 for 5%% (set it to the run-to-run noise of the machine)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON on stdout")
    p.set_defaults(handler=handle)


def _json_safe(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_safe(v) for v in o]
    return o


def handle(args: argparse.Namespace) -> int:
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.min_effect < 0:
        raise UsageError(f"--min-effect must be 0 or more, got {args.min_effect}")

    from rich.table import Table

    from trainscale.analysis.compare import CompareError, compare_folders, summary_line
    from trainscale.analysis.stats_ab import TESTS, format_p

    if args.test not in TESTS:
        raise UsageError(f"--test must be one of {', '.join(TESTS)}, got {args.test!r}")
    try:
        cmp = compare_folders(Path(args.a), Path(args.b), set(args.allow), args.metric, args.test, args.alpha,
                              args.min_effect)
    except CompareError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(_json_safe(cmp.to_dict()), indent=2))
        return 0

    table = Table(title=f"B vs A: {cmp.metric} ({cmp.metric_reason})")
    for col in ("world", "A", "B", "test", "p", "speedup of B", "95% CI", "effect size"):
        table.add_column(col, justify="right")
    for w in cmp.worlds:
        r = w.result
        table.add_row(w.label, summary_line(w.values_a), summary_line(w.values_b), r.test,
                      format_p(r.p_value) if r.p_value is not None else "-",
                      f"{r.ratio:.3f}" if r.ratio is not None else "-",
                      f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else "-",
                      f"{r.effect_size:+.2f} ({r.effect_size_name})" if r.effect_size is not None else "-")
    console.print(table)
    for d in cmp.differences:
        console.print(styled("marked:", "yellow", f" {d.key} differs (A: {', '.join(d.a)}; B: {', '.join(d.b)}), "
                                                  "allowed by --allow-difference"))
    for note in cmp.notes:
        console.print(f"note: {note}")
    for w in cmp.worlds:
        console.print(f"{w.label}: {w.metric} ({w.unit}, {'higher' if w.higher_is_better else 'lower'} is better); "
                      f"{w.basis}; test: {w.result.test} because {w.result.test_reason}")
    # The verdicts, one line per world size, on stdout.
    for w in cmp.worlds:
        print(f"{w.label}: {w.result.verdict}")
    return 0
