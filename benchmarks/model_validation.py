"""Model validation: fit the step-time model on small world sizes, predict a larger measured one.

    python benchmarks/model_validation.py [--bandwidth 20mbit] [--nodes 1,2,4] [--repeats 2]     # needs root
    python benchmarks/model_validation.py --local [--nproc 1,2,4]                               # one machine

With --bandwidth (default): `trainscale cluster up --nodes N --bandwidth B` (emulated nodes, every link
shaped to B with tbf; the cluster adds its unreachable guard route before any namespace exists), a
weak-scaling sweep with one rank per node (`sweep --launcher local --cluster ...`), `cluster down`
whatever happens, then `trainscale plan --link-bandwidth B`: fitted on all but the largest world size,
it predicts the largest; the script prints measured vs predicted throughput and the time in
collectives predicted by a ring over links of B against the time measured inside them.
With --local: the same on local processes (no shaped link; the ring term is fitted on the runs).
Numbers taken on a shared or small machine include its CPU contention (more ranks than cores is
flagged as oversubscribed in the plan's warnings): re-measure on a quiet one.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from trainscale_cli import emulated_sweep, sweep_folder, trainscale

WORKLOAD = ["--workload", "resnet50", "--set", "model.width=0.125", "--set", "model.resolution=32",
            "--set", "model.num_classes=10", "--set", "threads_per_rank=1", "--target-accuracy", "none"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bandwidth", default="20mbit", help="link rate of the emulated nodes")
    p.add_argument("--local", action="store_true", help="local processes instead of emulated nodes")
    p.add_argument("--nodes", default="1,2,4", help="emulated node counts (one rank each)")
    p.add_argument("--nproc", default="1,2,4", help="process counts with --local")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="results folder (default: a temporary one, kept)")
    a = p.parse_args()

    from trainscale.scaling.results.files import read_json

    out = Path(a.out or tempfile.mkdtemp(prefix="trainscale-validation-"))
    env = {**os.environ, "TRAINSCALE_STATE_DIR": str(out / ".state")}
    common = ["--scaling", "weak", "--repeats", str(a.repeats), "--steps", str(a.steps), "--warmup", str(a.warmup),
              "--batch-size", str(a.batch_size), "--out", str(out / "sweep"), *WORKLOAD]
    if a.local:
        sweep_dir = sweep_folder(trainscale("sweep", "--nproc", a.nproc, *common, env=env))
    else:
        sweep_dir = emulated_sweep("validation", a.nodes, a.bandwidth, common, env)
    worlds = [r["world_size"] for r in read_json(sweep_dir / "report" / "report.json")["rows"]]
    link = [] if a.local else ["--link-bandwidth", a.bandwidth]
    trainscale("plan", str(sweep_dir), "--nodes", ",".join(map(str, worlds)), *link, "--out", str(out / "plan"),
               env=env)
    plan = read_json(out / "plan" / "plan.json")
    v = plan["validation"]
    if not v:
        sys.exit(f"no validation: fewer than 3 measured world sizes ({worlds})")
    where = "local processes" if a.local else f"emulated nodes, links shaped to {a.bandwidth}"
    print(f"\nResNet-50 (width 0.125, 32x32, batch {a.batch_size}/rank), weak scaling on {where}, {a.repeats} run(s) "
          f"per size; step-time model fitted on world sizes {', '.join(map(str, v['fitted_worlds']))}")
    print(f"model: {v['model']['formula']}")
    print(f"{'world':>5} | {'measured img/s':>14} | {'predicted':>9} | {'error':>7} | {'in collectives ms':>17} | "
          f"{'predicted ms':>12} | {'error':>7}")
    for pt in v["points"]:
        comm = (f"{pt['measured_comm_s'] * 1e3:>17.1f} | {pt['predicted_comm_s'] * 1e3:>12.1f} | "
                f"{pt['comm_error_pct']:>+6.1f}%" if pt.get("comm_error_pct") is not None else f"{'-':>17} | {'-':>12} | {'-':>7}")
        print(f"{pt['world_size']:>5} | {pt['measured_throughput']:>14.2f} | {pt['predicted_throughput']:>9.2f} | "
              f"{pt['error_pct']:>+6.1f}% | {comm}")
    for w in plan["warnings"]:
        if w.startswith(("World size", "Measured on one host")):
            print(f"warning: {w}")
    print(f"sweep: {sweep_dir}\nplan: {out / 'plan' / 'plan.md'}")


if __name__ == "__main__":
    main()
