"""Ray's own overhead against the torchrun path, on the same workload, alternated in one run:

    python benchmarks/ray_overhead.py [--nproc 2] [--rounds 3] [--steps 40] [--warmup 10]

Each round runs the same spec through `--launcher local` (torchrun) and `--launcher ray` (Ray Train
TorchTrainer on a local Ray started for the run), same threads per rank. Per launcher it reports
  launch wall   time from the launch to the last process gone (start-up, training, shutdown),
  init          process start / Ray worker start to the end of model and data set-up (per rank max),
  in-window     throughput over the measured steps only (warmup excluded),
and the ratios ray / torchrun (medians). The difference of launch walls minus the difference of
training time is Ray's start-up and teardown cost; the in-window ratio is its steady-state cost.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args()

    from trainscale.scaling.orchestration.runner import execute
    from trainscale.scaling.resolve import resolve

    sets = ["model.width=0.25", "model.resolution=64", "model.num_classes=100"]
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        specs = {name: resolve(flags={"launcher": name, "nproc": a.nproc, "steps": a.steps, "warmup": a.warmup,
                                      "batch_size": a.batch_size, "out": tmp}, sets=sets)
                 for name in ("local", "ray")}
        threads: dict[str, int] = {}
        print(f"ResNet-50 width 0.25, 64x64, batch {a.batch_size}/rank, {a.nproc} gloo ranks, "
              f"{a.steps - a.warmup} measured steps, {a.rounds} alternated rounds")
        for r in range(a.rounds):
            for name, spec in specs.items():
                outcome = execute(spec)
                if not outcome.ok:
                    sys.exit(f"{name} run failed: {outcome.summary['reason']}")
                s = outcome.summary
                row = results.setdefault(name, {"wall": [], "init": [], "train": [], "xput": []})
                row["wall"].append(s["wall_s"])
                row["init"].append(s["init_s"])
                row["train"].append(s["metrics"]["window_s"])
                row["xput"].append(s["metrics"]["throughput"]["global_samples_per_s"])
                threads[name] = s["launch"]["threads_per_rank"]
                print(f"round {r} {name:>5}: launch wall {s['wall_s']:6.1f} s, init {s['init_s']:5.2f} s, "
                      f"in-window {row['xput'][-1]:7.1f} img/s")
    med = {name: {k: statistics.median(v) for k, v in row.items()} for name, row in results.items()}
    t, y = med["local"], med["ray"]
    print(f"threads per rank: torchrun {threads['local']}, ray {threads['ray']}")
    print(f"median launch wall: torchrun {t['wall']:.1f} s, ray {y['wall']:.1f} s "
          f"-> Ray adds {y['wall'] - t['wall']:.1f} s per launch")
    print(f"median in-window throughput: torchrun {t['xput']:.1f}, ray {y['xput']:.1f} img/s "
          f"-> ratio ray/torchrun {y['xput'] / t['xput']:.3f}")
    print(f"start-up and teardown outside the measured window: torchrun {t['wall'] - t['train']:.1f} s, "
          f"ray {y['wall'] - y['train']:.1f} s")


if __name__ == "__main__":
    main()
