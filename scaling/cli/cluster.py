"""trainscale cluster up|down|status: emulated nodes (network namespaces on a bridge, shaped links)."""
from __future__ import annotations

import argparse
import json

from trainscale.scaling.cli import common as cli_common
from rich.text import Text

from trainscale.scaling.cli.progress import console


HELP = "emulated nodes on this machine: network namespaces on a bridge with shaped links"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "cluster", HELP,
        "trainscale cluster up --nodes 4 --bandwidth 1gbit && trainscale run --nodes 4 --nproc 1 ... "
        "&& trainscale cluster down",
        description="Emulated nodes for multi-node runs on one machine (needs root and iproute2). Each node is "
                    "a network namespace with one veth link to a bridge; --bandwidth shapes both directions of "
                    "every link with tbf. A run with --launcher local --nodes N starts one torchrun agent per "
                    "node, joined by the c10d rendezvous on node 1. --latency needs the kernel's netem qdisc "
                    "and is refused where it is missing.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=cli_common.OneLineParser)
    actions.required = True
    up = cli_common.add_subcommand(actions, "up", "create the namespaces, links and shaping",
                                   "trainscale cluster up --nodes 2 --bandwidth 100mbit")
    up.add_argument("--nodes", type=int, required=True, help="number of emulated nodes")
    up.add_argument("--bandwidth", help="per-link rate in each direction, e.g. 100mbit, 1gbit (default: unshaped)")
    up.add_argument("--latency", help="one-way node-to-node delay, e.g. 1ms (needs netem in the kernel)")
    up.add_argument("--name", default="default", help="cluster name (several can be up at once)")
    up.set_defaults(handler=handle_up)
    down = cli_common.add_subcommand(actions, "down", "remove the namespaces, the guard route and the state file",
                                     "trainscale cluster down")
    down.add_argument("--name", default="default", help="cluster name")
    down.set_defaults(handler=handle_down)
    status = cli_common.add_subcommand(actions, "status", "the clusters that are up and their health",
                                       "trainscale cluster status --json")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=handle_status)


def handle_up(args: argparse.Namespace) -> int:
    from trainscale.launchers import emulated_cluster as cluster
    state = cluster.up(args.name, args.nodes, args.bandwidth, args.latency)
    console.print(f"up: {state.describe()}")
    for n in state.nodes:
        console.print(f"  node{n.index} (node rank {n.index - 1}): {n.address} in namespace {n.netns}")
    return 0


def handle_down(args: argparse.Namespace) -> int:
    from trainscale.launchers import emulated_cluster as cluster
    removed = cluster.down(args.name)
    if removed:
        console.print(f"down: cluster '{args.name}' removed ({len(removed)} namespaces)")
    else:
        console.print(f"cluster '{args.name}' is not up: nothing to remove")
    return 0


def handle_status(args: argparse.Namespace) -> int:
    from trainscale.launchers import emulated_cluster as cluster
    states = cluster.all_clusters()
    if args.json:
        print(json.dumps([{**s.to_dict(), "problems": cluster.health(s)} for s in states], indent=2))
        return 0
    if not states:
        console.print("no emulated cluster is up")
    for s in states:
        problems = cluster.health(s)
        console.print(Text.assemble(s.describe(), (f" BROKEN: {'; '.join(problems)}", "red") if problems else " (healthy)"))
        for n in s.nodes:
            console.print(f"  node{n.index}: {n.address} ({n.netns})")
    return 0
