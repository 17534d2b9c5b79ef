"""trainscale's harness overhead: the same DDP workload through `trainscale run` and through a
minimal hand-written torch DDP loop (plain_ddp.py), alternated in one run, same threads per rank.

    python benchmarks/harness_overhead.py [--nproc 2] [--rounds 5] [--steps 40] [--warmup 10]

Prints each round and the ratio of medians trainscale / plain (target >= 0.97 at 2 processes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

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
        ours, plain = [], []
        print(f"ResNet-50 width 0.25, 64x64, batch {a.batch_size}/rank, {a.nproc} gloo processes x {threads} "
              f"threads, {a.steps - a.warmup} measured steps")
        for r in range(a.rounds):
            outcome = execute(spec)
            if not outcome.ok:
                sys.exit(f"trainscale run failed: {outcome.summary['reason']}")
            ours.append(outcome.summary["metrics"]["throughput"]["global_samples_per_s"])
            out = Path(tmp) / f"plain{r}.json"
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            f"--nproc-per-node={a.nproc}", str(HERE / "plain_ddp.py"), "--steps", str(a.steps),
                            "--warmup", str(a.warmup), "--batch-size", str(a.batch_size), "--out", str(out)],
                           check=True, env=env, capture_output=True)
            plain.append(json.loads(out.read_text())["samples_per_s"])
            print(f"round {r}: trainscale {ours[-1]:8.1f} img/s   plain DDP {plain[-1]:8.1f} img/s   "
                  f"ratio {ours[-1] / plain[-1]:.3f}")
    mo, mp = statistics.median(ours), statistics.median(plain)
    print(f"median: trainscale {mo:.1f} img/s, plain {mp:.1f} img/s, ratio trainscale/plain = {mo / mp:.3f}")


if __name__ == "__main__":
    main()
