"""Results to TensorBoard event files: one TensorBoard run per run folder, its scalars read back from
the run's own records, never re-measured.

Per measured step (TensorBoard step = the step number in the samples):
  loss             mean over the ranks that recorded one (pipeline stages but the last record none)
  step_time_s      global step time: the slowest rank's step_s
  throughput/step  samples of all ranks in that step / its global step time
Per run (TensorBoard step = the world size, so the runs of a sweep line up as a scaling curve):
  the summary's throughput, time per step, step-time p50/p99 and world size; MFU, TFLOP/s and peak
  memory where the run measured them, under torchtitan's names where the quantity is the same.
TensorBoard keeps scalars as float32. TensorBoard is an optional extra (pip install 'trainscale[tensorboard]').
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainscale.analysis.runs import Run, load_run
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import ResultsError
from trainscale.scaling.results.sample_files import read_rank_infos

INSTALL = "pip install -c constraints.txt 'trainscale[tensorboard]'"
GIB = 2**30  # torchtitan's memory figures are GiB
EVENT_FILES = "events.out.tfevents.*"


class ExportError(ValueError):
    pass


@dataclass
class RunScalars:
    """What one TensorBoard run holds."""
    name: str  # the TensorBoard run: a subfolder of the export folder
    source: Path
    steps: np.ndarray  # measured step numbers
    loss: np.ndarray  # per step, NaN where no rank recorded a loss
    step_time_s: np.ndarray
    step_throughput: np.ndarray
    world_size: int
    run_values: dict[str, float]  # tag -> value, logged at step = world size
    notes: str


@dataclass
class Skipped:
    name: str
    why: str


@dataclass
class ExportResult:
    out_dir: Path
    written: list[str] = field(default_factory=list)  # TensorBoard run names
    skipped: list[Skipped] = field(default_factory=list)


def check_installed() -> None:
    """ExportError (naming the pip command) when torch's TensorBoard writer cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ExportError(f"TensorBoard is not installed ({INSTALL})") from None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_name(folder: Path, run_dir: Path) -> str:
    """The run's path under the exported folder (unique within a sweep), or its own name."""
    folder, run_dir = Path(folder).resolve(), Path(run_dir).resolve()
    return run_dir.name if run_dir == folder else run_dir.relative_to(folder).as_posix()


# -- per step ---------------------------------------------------------------------------------------


def per_step(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(step numbers, mean loss, global step time, throughput) per measured step, from the run's
    reduction; ValueError when the ranks disagree on their measured steps, ResultsError when a samples
    file is damaged."""
    red = run.reduction()
    if red.step_numbers is None:
        raise ValueError("ranks disagree on the numbers of their measured steps")
    return red.step_numbers, red.loss_mean, red.global_step_s, red.samples_per_step / red.global_step_s


# -- per run ----------------------------------------------------------------------------------------


def summary_values(summary: dict) -> dict[str, float]:
    """The run's summary metrics, by tag."""
    m = summary["metrics"]
    tp, st, world = m["throughput"], m.get("step_time_s") or {}, m["world_size"]
    out = {"throughput/global": tp["global_samples_per_s"], "throughput/per_device": tp["per_device_samples_per_s"],
           "time_per_step_s": m.get("time_per_step_s"), "step_time_s/p50": st.get("p50"),
           "step_time_s/p99": st.get("p99"), "world_size": world}
    if summary.get("sample_unit") == "tokens":  # torchtitan's tps: tokens per second per device
        out["throughput(tps)"] = tp["per_device_samples_per_s"]
    mfu = (summary.get("parallelism") or {}).get("mfu") or {}
    if _finite(mfu.get("value")) and not any("over 100%" in f for f in mfu.get("flags") or []):
        out["mfu(%)"] = 100 * mfu["value"]  # an MFU over 100% is a wrong FLOP count or peak: left out
    if _finite(mfu.get("achieved_flops_per_s")):  # torchtitan's tflops: achieved model TFLOP/s per device
        out["tflops"] = mfu["achieved_flops_per_s"] / world / 1e12
    return {k: float(v) for k, v in out.items() if _finite(v)}


def memory_values(infos: dict[int, dict]) -> tuple[dict[str, float], str]:
    """Peak memory over the ranks, by tag (only what the ranks measured), and how it was measured.
    peak_reserved_bytes is CUDA's max_memory_reserved (torchtitan's max_reserved); peak_bytes on CUDA is
    max_memory_allocated, which is not torchtitan's max_active, so it keeps its own name."""
    memories = [i.get("memory") for i in infos.values() if isinstance(i.get("memory"), dict)]

    def peak(key: str) -> float | None:
        values = [m[key] for m in memories if _finite(m.get(key))]
        return max(values) / GIB if values else None

    cuda = any("peak_reserved_bytes" in m for m in memories)
    out = {"memory/max_reserved(GiB)": peak("peak_reserved_bytes"),
           "memory/max_allocated(GiB)": peak("peak_bytes") if cuda else None,
           "memory/max_rss(GiB)": peak("peak_rss_bytes")}
    how = "; ".join(sorted({_measure(m) for m in memories}))
    return {k: v for k, v in out.items() if v is not None}, how


def _measure(memory: dict) -> str:
    text = str(memory.get("measure", "measure not recorded"))
    window = memory.get("peak_rss_window")
    return f"{text}; peak RSS over the {window}" if window and window not in text else text


def run_scalars(run: Run, name: str) -> RunScalars:
    """A loaded run (analysis.runs.Run) as TensorBoard scalars."""
    steps, loss, step_s, step_x = per_step(run)
    summary = run.summary if run.summary.get("metrics") else {**run.summary, "metrics": run.metrics()}
    try:
        values = summary_values(summary)
    except (KeyError, TypeError) as e:
        raise ResultsError(f"{run.path / schema.SUMMARY}: metrics incomplete ({type(e).__name__}: {e})") from None
    memory, how = memory_values(read_rank_infos(run.path))
    values.update(memory)
    notes = "\n\n".join(f"**{k}**: {v}" for k, v in (
        ("run folder", run.path.resolve()), ("workload", run.config.get("workload")),
        ("parallel", run.config.get("parallel")), ("sample unit", summary.get("sample_unit", "samples")),
        ("memory measure", how or "not recorded"),
        ("MFU flags", "; ".join(((summary.get("parallelism") or {}).get("mfu") or {}).get("flags") or []) or "none")))
    return RunScalars(name=name, source=run.path, steps=steps, loss=loss, step_time_s=step_s, step_throughput=step_x,
                      world_size=int(summary["metrics"]["world_size"]), run_values=values, notes=notes)


def collect(folder: Path) -> tuple[list[RunScalars], list[Skipped]]:
    """Every run under folder read and reduced, before anything is written: ResultsError naming the
    file when one is damaged; runs that did not finish ok are skipped, with the reason."""
    from trainscale.analysis.report import NoRunsError, find_runs

    folder = Path(folder)
    paths = find_runs(folder)
    if not paths:
        raise NoRunsError(f"no runs found under {folder} (a run folder has a {schema.CONFIG})")
    runs, skipped = [], []
    for path in paths:
        name = run_name(folder, path)
        run = load_run(path)
        if not run.ok:
            skipped.append(Skipped(name, f"{run.summary.get('status')}: {run.summary.get('reason') or 'no reason recorded'}"))
            continue
        try:
            runs.append(run_scalars(run, name))
        except ResultsError:
            raise
        except ValueError as e:  # ranks that disagree on their steps: no per-step series to write
            skipped.append(Skipped(name, str(e)))
    return runs, skipped


# -- writing ----------------------------------------------------------------------------------------


def write_run(out_dir: Path, r: RunScalars) -> Path:
    """One TensorBoard run's event file; event files an earlier export left there are replaced."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(out_dir) / r.name
    earlier = sorted(log_dir.glob(EVENT_FILES)) if log_dir.is_dir() else []
    with SummaryWriter(log_dir=str(log_dir)) as w:
        for step, loss, t, x in zip(r.steps.tolist(), r.loss.tolist(), r.step_time_s.tolist(),
                                    r.step_throughput.tolist()):
            if math.isfinite(loss):
                w.add_scalar("loss", loss, step)
            w.add_scalar("step_time_s", t, step)
            w.add_scalar("throughput/step", x, step)
        for tag, value in r.run_values.items():
            w.add_scalar(tag, value, r.world_size)
        w.add_text("trainscale", r.notes, r.world_size)
    for p in earlier:
        p.unlink(missing_ok=True)
    return log_dir


def write(out_dir: Path, runs: list[RunScalars], skipped: list[Skipped]) -> ExportResult:
    check_installed()
    result = ExportResult(out_dir=Path(out_dir), skipped=list(skipped))
    for r in runs:
        write_run(out_dir, r)
        result.written.append(r.name)
    return result


def export(folder: Path, out_dir: Path) -> ExportResult:
    """Every ok run under folder as a TensorBoard run under out_dir."""
    check_installed()
    return write(out_dir, *collect(folder))


def summary_lines(result: ExportResult) -> list[str]:
    lines = [f"skipped {s.name}: {s.why}" for s in result.skipped]
    return lines + [f"TensorBoard: {len(result.written)} run(s) written to {result.out_dir} "
                    f"(view: tensorboard --logdir {result.out_dir})"]
