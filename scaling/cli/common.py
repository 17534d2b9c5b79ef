"""What the commands share: one-line errors with exit code 2, help formatting, and the run-spec flags."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input found after parsing; printed as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with each default shown once: "(default: X)" is added to a flag's help unless the help
    text already says its default, or there is none to show (None, off, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default" in text.lower() or action.default is argparse.SUPPRESS
                or action.default in (None, False, [], "")):
            return text
        return f"{text} (default: %(default)s)"


# -- input checking, one rule everywhere: numbers are finite and in range (NaN and infinity refused by
# name), zero is either meaningful or refused, paths are checked before anything is written.

def finite_float(text: str) -> float:
    """argparse type: a finite number (nan and inf are refused, naming them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of 1 or more (0 is refused, never taken as 'the default')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def writable_folder(path: str | Path, flag: str) -> Path:
    """A folder the command may write into, checked before anything is written: an existing folder, or
    one that can be made there (its nearest existing parent is a writable folder)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} must be a folder, got a file: {path}")
    anchor = p
    while not anchor.exists():
        anchor = anchor.parent
    if not anchor.is_dir():
        raise UsageError(f"{flag} {path}: {anchor} is a file, not a folder")
    try:
        import tempfile

        tempfile.TemporaryDirectory(dir=anchor).cleanup()
    except OSError as e:
        raise UsageError(f"{flag} {path} cannot be written ({e.strerror or e})") from None
    return p


def results_folder(path: str | Path, flag: str = "results folder") -> Path:
    """A results folder to read: it exists and is a folder."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} not found: {path}")
    if not p.is_dir():
        raise UsageError(f"{flag} must be a folder, got a file: {path}")
    return p


def writable_file(path: str | Path, flag: str) -> Path:
    """A file the command may write, checked before anything is written: not a folder, in a folder that
    exists or can be made."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} must name a file, got a folder: {path}")
    writable_folder(p.parent if str(p.parent) else Path("."), flag)
    return p


def add_subcommand(sub, name: str, help: str, example: str, description: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter,
                          epilog=f"example:\n  {example}")


MODES_HELP = """\
Two kinds of run:
  throughput run        no quality target: --steps steps (the first --warmup of them outside the
                        measured window), then throughput, step times and efficiency.
  time-to-accuracy run  a target is set (--target-accuracy, or the workload's default: digits 0.97,
                        resnet50 0.759 on real data): trains epoch by epoch, evaluating every
                        eval.every_epochs epochs (or eval.every_steps steps), until the global
                        validation accuracy reaches the target (TTA = run_start to that evaluation,
                        MLPerf rules) or eval.max_epochs pass (INVALID: counted as the slowest run).
                        --steps does not apply; --warmup only keeps the first steps out of the
                        throughput figures reported beside the TTA. --target-accuracy none forces
                        a throughput run."""


def target_accuracy_arg(text: str) -> float | str:
    """A number, or 'none' (kept as text so that it overrides a workload's default target)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or 'none', got {text!r}") from None


def add_spec_flags(p: argparse.ArgumentParser, lists: bool = False) -> None:
    """The run-spec flags; defaults are None so that a config file's values are not overridden."""
    from trainscale.launchers.registry import LAUNCHERS
    from trainscale.scaling.spec import BACKENDS, PRECISIONS, RunSpec
    from trainscale.scaling.strategies.registry import STRATEGIES
    from trainscale.workloads.registry import WORKLOADS

    def default(key: str) -> str:
        """'default: X', with the workloads that prefer another value."""
        own = [f"{w.name} {w.spec_defaults[key]}" for w in WORKLOADS if key in w.spec_defaults]
        return f"default: {getattr(RunSpec, key)}" + (f"; {', '.join(own)}" if own else "")

    p.add_argument("--workload", help=f"{WORKLOADS.help()} (default: {RunSpec.workload})")
    p.add_argument("--parallel", help=f"parallel strategy: {STRATEGIES.help()} (default: {RunSpec.parallel})"
                   + ("; a comma-separated list makes one sweep comparing them" if lists else ""))
    p.add_argument("--launcher", help=f"how processes start: {LAUNCHERS.help()} (default: {RunSpec.launcher})")
    if lists:
        p.add_argument("--nproc", default="1,2,4", help="processes per node, comma-separated list")
        p.add_argument("--nodes", default="1", help="node counts, comma-separated list")
    else:
        p.add_argument("--nproc", type=int, help=f"processes per node ({default('nproc')})")
        p.add_argument("--nodes", type=int, help=f"number of nodes ({default('nodes')})")
    p.add_argument("--steps", type=int, help="throughput runs: total steps per run, warmup included "
                   f"(time-to-accuracy runs stop at the target or eval.max_epochs instead; {default('steps')})")
    p.add_argument("--warmup", type=int, help="first steps excluded from the throughput window "
                   f"(in a time-to-accuracy run they stay inside the TTA clock; {default('warmup')})")
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help=f"batch size per data-parallel rank ({default('batch_size')})")
    p.add_argument("--target-accuracy", dest="target_accuracy", type=target_accuracy_arg, metavar="A|none",
                   help="quality target (top-1 validation accuracy): makes the run a time-to-accuracy run; "
                        "default: the workload's (digits 0.97; resnet50 0.759 on real data, none on synthetic); "
                        "'none' forces a throughput run. Cadence and limit: --set eval.every_epochs=E, "
                        "eval.every_steps=S, eval.max_epochs=M")
    p.add_argument("--backend", choices=BACKENDS, help="torch.distributed backend (default: gloo)")
    p.add_argument("--seed", type=int, help=f"random seed ({default('seed')})")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="training precision (bf16/fp16: autocast; fp16 and tf32 need --backend nccl; default: fp32)")
    p.add_argument("--compile", action="store_const", const=True, default=None,
                   help="torch.compile the wrapped model (ddp, fsdp, tp)")
    p.add_argument("--channels-last", dest="channels_last", action="store_const", const=True, default=None,
                   help="resnet50: model and inputs in NHWC memory format (model.channels_last)")
    p.add_argument("--timeout", dest="timeout_s", type=finite_float,
                   help=f"seconds before a launch is killed and failed ({default('timeout_s')})")
    p.add_argument("--dp", type=int, help="data-parallel degree (default: what the world size leaves)")
    p.add_argument("--tp", type=int, help="tensor-parallel degree for --parallel tp (default: world size / dp)")
    p.add_argument("--pp", type=int, help="pipeline stages for --parallel pp (default: world size / dp)")
    p.add_argument("--microbatches", type=int, help="pipeline microbatches per step (pipeline.microbatches)")
    p.add_argument("--pp-schedule", dest="schedule", help="pipeline schedule: gpipe or 1f1b (pipeline.schedule)")
    p.add_argument("--config", help="TOML run-spec file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any spec value, e.g. --set model.width=0.25 (repeatable)")
    p.add_argument("--out", help="folder under which results are written (default: results)")


def add_launch_flags(p: argparse.ArgumentParser) -> None:
    """Launcher settings (the spec's [launch] table)."""
    g = p.add_argument_group("launchers")
    g.add_argument("--cluster", help="local: emulated cluster to run on (default 'default' when --nodes > 1)")
    g.add_argument("--rdzv-endpoint", dest="rdzv_endpoint", metavar="HOST:PORT",
                   help="torchrun: c10d rendezvous, hosted by node rank 0")
    g.add_argument("--node-rank", dest="node_rank", type=int,
                   help="torchrun: this node's rank (default: NODE_RANK or SLURM_NODEID)")
    g.add_argument("--local-addr", dest="local_addr",
                   help="torchrun: the address other nodes reach this node at (default: its hostname)")
    g.add_argument("--run-id", dest="run_id", help="results folder name under --out, shared by all nodes")
    g.add_argument("--max-restarts", dest="max_restarts", type=int, help="torchrun: agent restarts on failure")
    g.add_argument("--ray-address", dest="ray_address", help="ray: cluster address (default: start a local Ray)")


LAUNCH_FLAGS = ("cluster", "rdzv_endpoint", "node_rank", "local_addr", "run_id", "max_restarts", "ray_address")


SPEC_FLAGS = ("workload", "parallel", "launcher", "nproc", "nodes", "steps", "warmup", "batch_size",
              "target_accuracy", "backend", "seed", "timeout_s", "out", "precision", "compile")


# Flags that set a key of a spec section: flag -> (section, key).
SECTION_FLAGS = {"dp": ("mesh", "dp"), "tp": ("mesh", "tp"), "pp": ("mesh", "pp"),
                 "microbatches": ("pipeline", "microbatches"), "schedule": ("pipeline", "schedule"),
                 "channels_last": ("model", "channels_last"),
                 **{flag: ("launch", flag) for flag in LAUNCH_FLAGS}}


def spec_flags(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(args, k) for k in SPEC_FLAGS
                           if k not in skip and getattr(args, k, None) is not None}
    for flag, (section, key) in SECTION_FLAGS.items():
        if flag not in skip and getattr(args, flag, None) is not None:
            out.setdefault(section, {})[key] = getattr(args, flag)
    return out


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not values:
        raise UsageError(f"{what} is empty")
    bad = [v for v in values if v < 1]
    if bad:
        raise UsageError(f"{what} values must be at least 1, got {bad[0]}")
    return sorted(set(values))
