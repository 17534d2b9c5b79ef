"""The ``trainscale`` command. Exit codes: 0 success, 1 a run failed, 2 bad input (one line)."""
from __future__ import annotations

import importlib
import signal
import sys

from trainscale.scaling.cli.common import EXIT_USAGE, HelpFormatter, OneLineParser, UsageError

# command name -> module with register(subparsers); each module's handler returns the exit code
COMMANDS = {
    "run": "trainscale.scaling.cli.run",
    "sweep": "trainscale.scaling.cli.sweep",
    "report": "trainscale.scaling.cli.report",
    "compare": "trainscale.scaling.cli.compare",
    "cluster": "trainscale.scaling.cli.cluster",
    "slurm": "trainscale.scaling.cli.slurm",
    "comm": "trainscale.scaling.cli.comm",
    "plan": "trainscale.scaling.cli.plan",
    "export": "trainscale.scaling.cli.export",
    "drill": "trainscale.scaling.cli.drill",
}


def build_parser(only: str | None = None) -> OneLineParser:
    """The parser; with ``only``, just that command gets its flags (their help texts come from the
    registries, which import torch), the others are listed by name and help line."""
    parser = OneLineParser(prog="trainscale", formatter_class=HelpFormatter,
                           description="Distributed-training scaling benchmarks: throughput, time-to-accuracy, "
                                       "communication, recovery.",
                           epilog="example: trainscale run --workload resnet50 --nproc 2 --steps 20")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        if only is None or only == name:
            module.register(sub)
        else:
            sub.add_parser(name, help=module.HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    args.argv = list(argv)  # as typed (trainscale run --dry-run repeats it)
    prog = f"trainscale {args.command}"
    from trainscale.scaling.errors import SpecError

    from trainscale.launchers.ownership import Stopped, stop_on_signals
    from trainscale.scaling.results.files import ResultsError

    try:
        # SIGUSR2: Slurm's warning before a job's time limit (--signal); stopped cleanly like the others.
        with stop_on_signals((signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)):
            return int(args.handler(args))
    except (UsageError, SpecError, ResultsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Stopped as e:  # its processes are stopped and its records say so
        print(f"{prog}: stopped by {e.name}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
