"""A run's event log through MLPerf's own compliance checker (mlperf-logging's compliance_checker).

Every ruleset's common.yaml (the rules every benchmark shares) ends its submission_division rule by
queueing the division's rules, ``{division}_common.yaml``, which accept only that round's MLPerf
benchmarks as submission_benchmark and queue the benchmark's own rules. So a run of a workload MLPerf
does not have (digits, gpt) fails there whatever it logs. The common-only check runs the checker on
the installed common.yaml with that one queueing call removed and nothing else changed (written by
``common_only_config``, passed with ``--config``): every common rule as the package ships it, and no
other. A ResNet-50 run on ImageNet (submission_benchmark "resnet") can take the full chain instead,
under RESNET_RULESET, the last training ruleset with that benchmark.

    python -m trainscale.analysis.mlperf_compliance RUN/events.log [--ruleset 5.0.0] [--full]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlperf_logging.compliance_checker as compliance_checker

USAGE = "training"
RULESET = "5.0.0"
RESNET_RULESET = "4.0.0"
COMMON = "common.yaml"
SUCCESS, FAILED = "SUCCESS", "FAILED"  # the checker's last log line
# In submission_division's POST: enqueue_config('training_5.0.0/{}_common.yaml'.format(v['value']));
_QUEUE_DIVISION = re.compile(r"enqueue_config\('[^']*/\{\}_common\.yaml'\.format\(v\['value'\]\)\)\s*;?\s*")


def rules_dir(ruleset: str = RULESET, usage: str = USAGE) -> Path:
    path = Path(compliance_checker.__file__).parent / f"{usage}_{ruleset}"
    if not path.is_dir():
        raise ValueError(f"mlperf-logging {version('mlperf-logging')} has no {usage} ruleset {ruleset}")
    return path


def common_only_rules(ruleset: str = RULESET, usage: str = USAGE) -> str:
    """The text of the installed common.yaml less the call that queues the division's rules."""
    text = (rules_dir(ruleset, usage) / COMMON).read_text()
    rules, found = _QUEUE_DIVISION.subn("", text)
    if found != 1:
        raise ValueError(f"{usage}_{ruleset}/{COMMON}: expected one call queueing the division's rules, "
                         f"found {found}")
    return rules


def common_only_config(directory: Path, ruleset: str = RULESET, usage: str = USAGE) -> Path:
    path = Path(directory) / f"{usage}_{ruleset}_common_only.yaml"
    path.write_text(common_only_rules(ruleset, usage))
    return path


def checker_command(events_log: Path, log_output: Path, ruleset: str = RULESET, usage: str = USAGE,
                    config: Path | None = None) -> list[str]:
    """The checker's command line; config None: its own chain (common, division, benchmark)."""
    return [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", usage, "--ruleset", ruleset,
            *(["--config", str(config)] if config is not None else []),
            "--log_output", str(log_output), str(events_log)]


def run_checker(events_log: Path, ruleset: str = RULESET, usage: str = USAGE,
                common_only: bool = True) -> subprocess.CompletedProcess:
    """The checker's run (its messages are on stderr, the last one SUCCESS or FAILED)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = common_only_config(Path(tmp), ruleset, usage) if common_only else None
        command = checker_command(Path(events_log), Path(tmp) / "compliance_checker.log", ruleset, usage, config)
        return subprocess.run(command, capture_output=True, text=True)


def passed(proc: subprocess.CompletedProcess) -> bool:
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 0 and bool(lines) and lines[-1].endswith(SUCCESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainscale.analysis.mlperf_compliance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events_log", type=Path)
    parser.add_argument("--ruleset", default=RULESET)
    parser.add_argument("--full", action="store_true",
                        help="the checker's own chain (common, division, benchmark rules) instead of the common "
                             "rules only: passes only for an MLPerf benchmark of that ruleset")
    args = parser.parse_args(argv)
    proc = run_checker(args.events_log, args.ruleset, common_only=not args.full)
    sys.stderr.write(proc.stderr)
    return 0 if passed(proc) else 1


if __name__ == "__main__":
    sys.exit(main())
