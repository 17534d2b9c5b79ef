"""Live status on the terminal while runs go on (rich), and one line per finished run."""
from __future__ import annotations

import sys
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

# A job log (Slurm's .out file, `| tee`) is not a terminal: rich would cut tables to 80 columns there
# ("throug…"); there they are printed whole, at their own width. No markup: reasons, paths and
# remote error messages carry brackets ("[/path/pair.cc:152]") that rich would read as tags.
console = Console(stderr=True, highlight=False, markup=False, width=None if sys.stderr.isatty() else 1000)


def styled(word: str, style: str, rest: str = "") -> Text:
    """A coloured word, then plain text."""
    return Text.assemble((word, style), rest)


def outcome_line(label: str, summary: dict) -> Text:
    if summary.get("recorded_by_another_node"):  # a multi-node run seen from a node other than rank 0
        state = ("ok    ", "green") if summary.get("status") == "ok" else ("failed", "red")
        return styled(*state, f" {label}: this node's agent ended" + (f" ({summary['reason']})" if summary.get("reason")
                                                                       else "") + "; node rank 0 writes the run record")
    tta = summary.get("tta")
    if summary.get("status") == "ok" and tta:
        if tta["valid"]:
            return styled("ok", "green", f"     {label}: time to accuracy {tta['tta_s']:.2f} s (target {tta['target']:g} "
                    f"reached at epoch {tta['reached']['epoch_num']:g}, accuracy {tta['reached']['accuracy']:.4f})")
        best = max((e["accuracy"] for e in tta["evals"]), default=float("nan"))
        return styled("INVALID", "red", f" {label}: target {tta['target']:g} not reached in {tta['epochs_run']} epochs "
                f"(best accuracy {best:.4f}); counts as the slowest run")
    if summary.get("status") == "ok" and not summary.get("metrics"):  # a launch without training figures
        return styled("ok", "green", f"     {label}" + (f" ({summary['wall_s']:.1f} s)" if summary.get("wall_s") else ""))
    if summary.get("status") == "ok":
        m = summary["metrics"]
        unit = summary.get("sample_unit", "samples")
        t = m["throughput"]
        return styled("ok", "green", f"     {label}: {t['global_samples_per_s']:.1f} {unit}/s "
                f"(95% CI {t['ci_low']:.1f}-{t['ci_high']:.1f}), step p50 {m['step_time_s']['p50'] * 1e3:.1f} ms")
    return styled("failed", "red", f" {label}: {summary.get('reason')}")


class LiveProgress:
    """A progress bar per run (steps of rank 0) under an optional overall bar for a sweep; the
    orchestration's RunObserver (scaling/orchestration/runner.py)."""

    def __init__(self, total_runs: int | None = None) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), console=console)
        self.total_runs = total_runs
        self.overall = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "LiveProgress":
        self.progress.__enter__()
        if self.total_runs:
            self.overall = self.progress.add_task("sweep", total=self.total_runs, phase="runs")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def run_started(self, label: str, steps: int) -> Callable[[dict], None]:
        task = self.progress.add_task(label, total=steps, phase="starting")
        self._tasks[label] = task

        def on_progress(p: dict) -> None:
            self.progress.update(task, completed=p.get("step", 0), total=p.get("steps") or steps,
                                 phase=p.get("phase", ""))

        return on_progress

    def run_finished(self, label: str, summary: dict) -> None:
        self.progress.remove_task(self._tasks.pop(label))
        self.progress.console.print(outcome_line(label, summary))
        if self.overall is not None:
            self.progress.advance(self.overall)
