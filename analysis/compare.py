"""Compare two results folders (run, sweep or folder of runs): per world size found on both sides,
the A/B test of analysis/stats_ab.py on time-to-accuracy when every run of both sides has a target,
else on throughput, behind docs/method.md's fair-comparison guard.

Metrics: ``tta_s`` (seconds to the target, lower is better; INVALID runs count as the slowest),
``throughput`` (global samples/s over the measured window, higher is better, recomputed from the
samples). When a side has a single run at a world size, throughput falls back to that run's measured
global step times (``step_time_s``): steps within one run are not independent runs, which is said.

Fair-comparison guard: the two sides must agree on GUARD_KEYS unless the user allows a difference
by name (``--allow-difference KEY``); an allowed difference is reported with the result.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from trainscale.analysis.report import find_runs
from trainscale.analysis.runs import Run, load_run
from trainscale.analysis.stats_ab import ABResult, compare_values
from trainscale.analysis.tta import load_tta

METRIC_TTA, METRIC_THROUGHPUT, METRIC_STEP_TIME = "tta_s", "throughput", "step_time_s"
METRICS = ("auto", METRIC_TTA, METRIC_THROUGHPUT)
# what a fair comparison holds equal (docs/method.md), plus what makes the metric itself comparable
GUARD_KEYS = ("precision", "global_batch", "hardware", "data_kind", "workload", "backend", "target", "world_size")
DEFAULT_PRECISION = "fp32"  # what a run spec without a precision setting trains in


class CompareError(ValueError):
    """The comparison cannot be made (bad folders, refused by the guard); one line for the user."""


@dataclass
class Difference:
    key: str
    a: list[str]
    b: list[str]
    allowed: bool


@dataclass
class WorldComparison:
    world_a: int
    world_b: int
    metric: str
    unit: str
    higher_is_better: bool
    basis: str  # what one value is (a run, or a step of one run)
    runs_a: list[str]
    runs_b: list[str]
    values_a: list[float | None]
    values_b: list[float | None]
    result: ABResult

    @property
    def label(self) -> str:
        return f"world {self.world_a}" if self.world_a == self.world_b else f"world {self.world_a} vs {self.world_b}"


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    metric_reason: str
    worlds: list[WorldComparison]
    differences: list[Difference]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for w, obj in zip(d["worlds"], self.worlds):
            w["label"] = obj.label
        return d


def hardware(run: Run) -> str:
    """CPU model and cores of every rank's host, and the GPU models (from provenance)."""
    prov = run.provenance
    cpus = {f"{r['cpu_model']} ({r.get('cores')} cores)" for r in prov.get("ranks", []) if r.get("cpu_model")}
    if not cpus and prov.get("orchestrator_host"):
        host = prov["orchestrator_host"]
        cpus = {f"{host.get('cpu_model')} ({host.get('cores')} cores)"}
    gpu = prov.get("gpu", {})
    gpus = {d.get("name", "?") for d in gpu.get("devices", [])} if gpu.get("available") else {"no GPU"}
    return "; ".join(sorted(cpus) + sorted(gpus))


def run_facts(run: Run) -> dict[str, str]:
    c = run.config
    return {
        "precision": str(c.get("precision", DEFAULT_PRECISION)),
        "global_batch": str(run.summary.get("global_batch", int(c["batch_size"]) * run.world_size)),
        "hardware": hardware(run),
        "data_kind": str(c.get("data", {}).get("kind")),
        "workload": str(c.get("workload")),
        "backend": str(c.get("backend")),
        "target": str(c.get("target_accuracy")),
        "world_size": str(run.world_size),
    }


def load_side(folder: Path) -> list[Run]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CompareError(f"results folder not found: {folder}")
    paths = find_runs(folder)
    if not paths:
        raise CompareError(f"no runs found under {folder} (a run folder has a config.json)")
    return [load_run(p) for p in paths]


def _by_world(runs: list[Run]) -> dict[int, list[Run]]:
    out: dict[int, list[Run]] = {}
    for r in runs:
        if r.ok:
            out.setdefault(r.world_size, []).append(r)
    return out


def choose_metric(a: list[Run], b: list[Run], wanted: str) -> tuple[str, str]:
    ok = [r for r in a + b if r.ok]
    with_target = [r for r in ok if r.config.get("target_accuracy") is not None]
    if wanted == METRIC_TTA:
        if len(with_target) != len(ok):
            raise CompareError("--metric tta: some runs have no target_accuracy (throughput runs)")
        return METRIC_TTA, "chosen by the user"
    if wanted == METRIC_THROUGHPUT:
        return METRIC_THROUGHPUT, "chosen by the user"
    if ok and len(with_target) == len(ok):
        return METRIC_TTA, "every run on both sides is a time-to-accuracy run"
    return METRIC_THROUGHPUT, "not every run has a quality target, so time to accuracy is not comparable"


def _values(runs: list[Run], metric: str) -> tuple[list[float | None], list[str]]:
    values, names = [], []
    for r in runs:
        try:
            if metric == METRIC_TTA:
                t = load_tta(r.path)
                values.append(t.tta_s if t.valid else None)
            else:
                values.append(r.metrics()["throughput"]["global_samples_per_s"])
        except (ValueError, OSError, KeyError) as e:
            raise CompareError(f"run {r.path}: no {metric} value: {e}") from None
        names.append(r.path.name)
    return values, names


def _guard(members_a: list[Run], members_b: list[Run], allow: set[str], metric: str,
           label: str) -> list[Difference]:
    diffs = []
    for key in GUARD_KEYS:
        if key == "target" and metric != METRIC_TTA:
            continue
        va = sorted({run_facts(r)[key] for r in members_a})
        vb = sorted({run_facts(r)[key] for r in members_b})
        if va != vb:
            if key not in allow:
                raise CompareError(
                    f"refusing to compare {label}: {key} differs (A: {', '.join(va)}; B: {', '.join(vb)}); "
                    f"pass --allow-difference {key} if that difference is the point")
            diffs.append(Difference(key=key, a=va, b=vb, allowed=True))
    return diffs


def compare_folders(folder_a: Path, folder_b: Path, allow: set[str] | None = None, metric: str = "auto",
                    test: str = "auto", alpha: float = 0.05, min_effect: float = 0.0) -> Comparison:
    allow = set(allow or ())
    unknown = sorted(allow - set(GUARD_KEYS))
    if unknown:
        raise CompareError(f"unknown --allow-difference key {unknown[0]!r} (known: {', '.join(GUARD_KEYS)})")
    if metric not in METRICS:
        raise CompareError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    runs_a, runs_b = load_side(folder_a), load_side(folder_b)
    metric, metric_reason = choose_metric(runs_a, runs_b, metric)
    by_a, by_b = _by_world(runs_a), _by_world(runs_b)
    if not by_a or not by_b:
        raise CompareError(f"no successful runs in {folder_a if not by_a else folder_b}")
    notes = []
    failed = [r.path.name for r in runs_a + runs_b if not r.ok]
    if failed:
        notes.append(f"{len(failed)} failed run(s) left out (they measured nothing): {', '.join(failed)}")
    common = sorted(set(by_a) & set(by_b))
    if common:
        pairs = [(w, w) for w in common]
        extra = sorted(set(by_a) ^ set(by_b))
        if extra:
            notes.append(f"world sizes on one side only, not compared: {', '.join(map(str, extra))}")
    elif "world_size" in allow and len(by_a) == 1 and len(by_b) == 1:
        pairs = [(next(iter(by_a)), next(iter(by_b)))]
    else:
        raise CompareError(f"no world size in common (A: {sorted(by_a)}, B: {sorted(by_b)}); with one world size a "
                           "side, --allow-difference world_size compares them")

    worlds, differences = [], []
    for wa, wb in pairs:
        label = f"world {wa}" if wa == wb else f"world {wa} vs {wb}"
        for d in _guard(by_a[wa], by_b[wb], allow, metric, label):
            if all(d.key != x.key for x in differences):
                differences.append(d)
        if metric == METRIC_THROUGHPUT and len(by_a[wa]) == 1 and len(by_b[wb]) == 1:
            used_metric, unit, higher = METRIC_STEP_TIME, "s", False
            basis = ("measured global step times of one run a side (steps within a run are not independent "
                     "runs: this says nothing about run-to-run variation; use --repeats 3 or more)")
            va = by_a[wa][0].reduction().global_step_s.tolist()
            vb = by_b[wb][0].reduction().global_step_s.tolist()
            names_a, names_b = [by_a[wa][0].path.name], [by_b[wb][0].path.name]
        else:
            used_metric = metric
            unit, higher, basis = _describe(metric, by_a[wa][0])
            va, names_a = _values(by_a[wa], metric)
            vb, names_b = _values(by_b[wb], metric)
        result = compare_values(va, vb, higher_is_better=higher, test=test, alpha=alpha, min_effect=min_effect)
        worlds.append(WorldComparison(world_a=wa, world_b=wb, metric=used_metric, unit=unit, higher_is_better=higher,
                                      basis=basis, runs_a=names_a, runs_b=names_b, values_a=va, values_b=vb,
                                      result=result))
    return Comparison(a=str(folder_a), b=str(folder_b), metric=metric, metric_reason=metric_reason, worlds=worlds,
                      differences=differences, notes=notes)


def _describe(metric: str, run: Run) -> tuple[str, bool, str]:
    if metric == METRIC_TTA:
        return "s", False, "one run = one value: seconds from run_start to the target (INVALID = slowest)"
    unit = run.summary.get("sample_unit", "samples")
    return f"{unit}/s", True, "one run = one value: global throughput over its measured window"


def summary_line(values: list[float | None]) -> str:
    """n, invalid count and mean of the valid values, for tables."""
    valid = [v for v in values if v is not None]
    inv = len(values) - len(valid)
    mean = f"{np.mean(valid):.4g}" if valid else "-"
    return f"n={len(values)}" + (f" ({inv} INVALID)" if inv else "") + f", mean {mean}"
