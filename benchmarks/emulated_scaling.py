"""Scaling efficiency over 1, 2 and 4 emulated nodes with shaped links (needs root):

    python benchmarks/emulated_scaling.py [--bandwidth 1gbit,100mbit] [--nodes 1,2,4] [--repeats 2]

For each bandwidth: `trainscale cluster up --nodes 4 --bandwidth B`, then the README's sweep
(`trainscale sweep --launcher local --nodes 1,2,4 --nproc 1 --cluster NAME --scaling weak ...`, one
torchrun agent per node namespace, every rank 1 thread), its report (efficiency curve in
report/efficiency.png), and `cluster down`, whatever happens. Prints the efficiency table of each
bandwidth side by side: the gap between them is what the link costs. The nodes share this machine's
cores, so sizes whose ranks outnumber the cores are flagged by the report as oversubscribed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from trainscale_cli import emulated_sweep

WORKLOAD = ["--workload", "resnet50", "--set", "model.width=0.25", "--set", "model.resolution=64",
            "--set", "model.num_classes=100", "--set", "threads_per_rank=1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bandwidth", default="1gbit,100mbit", help="comma-separated link rates, one sweep each")
    p.add_argument("--nodes", default="1,2,4")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="results folder (default: a temporary one, kept)")
    a = p.parse_args()

    from trainscale.scaling.results.files import read_json

    out = Path(a.out or tempfile.mkdtemp(prefix="trainscale-emulated-"))
    env = {**os.environ, "TRAINSCALE_STATE_DIR": str(out / ".state")}
    tables = {}
    for bw in a.bandwidth.split(","):
        sweep_dir = emulated_sweep("bench", a.nodes, bw, [
            "--scaling", "weak", "--repeats", str(a.repeats), "--steps", str(a.steps), "--warmup", str(a.warmup),
            "--batch-size", str(a.batch_size), "--out", str(out / bw), *WORKLOAD], env)
        tables[bw] = (sweep_dir, read_json(sweep_dir / "report" / "report.json")["rows"])

    print(f"\nResNet-50 (width 0.25, 64x64, batch {a.batch_size}/rank), weak scaling over emulated nodes, "
          f"1 rank x 1 thread per node, {a.repeats} runs per size; E(N) = X(N) / (N X(1))")
    header = f"{'nodes':>5}" + "".join(f" | {bw + ' img/s':>14} {'E(N)':>6}" for bw in tables)
    print(header)
    print("-" * len(header))
    sizes = sorted({r["nodes"] for _, rows in tables.values() for r in rows})
    for n in sizes:
        line = f"{n:>5}"
        for _bw, (_d, rows) in tables.items():
            r = next((r for r in rows if r["nodes"] == n), None)
            line += f" | {r['throughput']:>14.1f} {r['efficiency']:>6.3f}" if r else f" | {'failed':>14} {'':>6}"
        print(line)
    for bw, (sweep_dir, _rows) in tables.items():
        print(f"{bw}: report {sweep_dir / 'report' / 'report.md'}, curve {sweep_dir / 'report' / 'efficiency.png'}")


if __name__ == "__main__":
    main()
