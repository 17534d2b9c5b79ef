"""trainscale's harness overhead: the same DDP workload through `trainscale run` and through a
minimal hand-written torch DDP loop (plain_ddp.py), alternated in one run (each round starting with the
next arm), same threads per rank.
trainscale runs twice a round: as users run it (its comm hook times every gradient bucket) and with
comm.measure=false (DDP's built-in all-reduce, as the plain loop has), so the hook's own cost is a
figure of its own and the second ratio compares the same gradient path.

    python benchmarks/harness_overhead.py [--nproc 2] [--rounds 5] [--steps 40] [--warmup 10]

Prints each round and the ratios of medians: trainscale / plain (target >= 0.97 at 2 processes),
trainscale without the hook / plain, and with the hook / without it; then each ratio's geometric mean
over the rounds with its 95% Student-t interval, which says how much of a gap the noise allows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args()

    from trainscale.launchers.base import threads_per_rank
    from trainscale.scaling.orchestration.runner import execute
    from trainscale.scaling.resolve import resolve

    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve(flags={"nproc": a.nproc, "steps": a.steps, "warmup": a.warmup, "batch_size": a.batch_size,
                              "out": tmp},
                       sets=["model.width=0.25", "model.resolution=64", "model.num_classes=100"])
        threads = threads_per_rank(spec.threads_per_rank, spec.nproc)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        unhooked = dataclasses.replace(spec, comm=dataclasses.replace(spec.comm, measure=False))
        ours, bare, plain = [], [], []
        print(f"ResNet-50 width 0.25, 64x64, batch {a.batch_size}/rank, {a.nproc} gloo processes x {threads} "
              f"threads, {a.steps - a.warmup} measured steps")
        def run_trainscale(run_spec, values: list[float], r: int) -> None:
            outcome = execute(run_spec)
            if not outcome.ok:
                sys.exit(f"trainscale run failed: {outcome.summary['reason']}")
            values.append(outcome.summary["metrics"]["throughput"]["global_samples_per_s"])

        def run_plain(_spec, values: list[float], r: int) -> None:
            out = Path(tmp) / f"plain{r}.json"
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            f"--nproc-per-node={a.nproc}", str(HERE / "plain_ddp.py"), "--steps", str(a.steps),
                            "--warmup", str(a.warmup), "--batch-size", str(a.batch_size), "--out", str(out)],
                           check=True, env=env, capture_output=True)
            values.append(json.loads(out.read_text())["samples_per_s"])

        arms = [(run_trainscale, spec, ours), (run_trainscale, unhooked, bare), (run_plain, None, plain)]
        for r in range(a.rounds):
            # Each round starts with the next arm, so no arm always runs first or right after another.
            for run, run_spec, values in arms[r % 3:] + arms[:r % 3]:
                run(run_spec, values, r)
            print(f"round {r}: trainscale {ours[-1]:8.1f}   without hook {bare[-1]:8.1f}   plain DDP {plain[-1]:8.1f} "
                  f"img/s   ratios {ours[-1] / plain[-1]:.3f}, {bare[-1] / plain[-1]:.3f}")
    mo, mb, mp = statistics.median(ours), statistics.median(bare), statistics.median(plain)
    print(f"median img/s: trainscale {mo:.1f}, without hook {mb:.1f}, plain {mp:.1f}; "
          f"trainscale/plain = {mo / mp:.3f}, without hook/plain = {mb / mp:.3f}, hook cost: with/without = {mo / mb:.3f}")
    # How far the per-round ratios let the figure be trusted: the 95% interval of their geometric mean.
    for name, a_, b_ in (("trainscale/plain", ours, plain), ("without hook/plain", bare, plain),
                         ("with/without hook", ours, bare)):
        logs = np.log(np.array(a_) / np.array(b_))
        if len(logs) > 1:
            half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
            print(f"  {name}: geometric mean {np.exp(logs.mean()):.3f}, "
                  f"95% CI {np.exp(logs.mean() - half):.3f}-{np.exp(logs.mean() + half):.3f} over {len(logs)} rounds")


if __name__ == "__main__":
    main()
