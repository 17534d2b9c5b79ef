"""busbw of `trainscale comm` all_reduce at large messages next to a minimal hand-written
torch.distributed loop (plain_allreduce.py), alternated in one run, same processes and threads.

    python benchmarks/comm_vs_plain.py [--nproc 2] [--rounds 4] [--sizes 16M,32M,64M] [-n 20] [-w 5]
                                       [--paired-rounds 10]

Part 1, end to end: the `trainscale comm` command's path (execute_comm: launch, per-rank benchmark,
results from the raw files) and plain_allreduce.py under torchrun, alternated launch by launch.
Part 2, paired: both measurements alternated inside the same processes (paired_allreduce.py), so
drift of a shared machine hits both alike. Prints every round and, per size, the median busbw of
each and the ratio trainscale / plain (target: within 5%, i.e. 0.95-1.05). gloo figures are taken
at 2 processes (more processes oversubscribe a 2-core machine).
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
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--sizes", default="16M,32M,64M")
    p.add_argument("-n", "--iters", type=int, default=20)
    p.add_argument("-w", "--warmup", type=int, default=5)
    p.add_argument("--paired-rounds", type=int, default=10, help="rounds of part 2; 0 skips it")
    a = p.parse_args()

    from trainscale.launchers.base import threads_per_rank
    from trainscale.scaling.comm.runner import execute_comm
    from trainscale.scaling.comm.spec import CommSpec, parse_size, validate

    sizes = [parse_size(s, "--sizes") for s in a.sizes.split(",")]
    ours: dict[int, list[float]] = {s: [] for s in sizes}
    plain: dict[int, list[float]] = {s: [] for s in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        spec = CommSpec(ops=["all_reduce"], min_bytes=min(sizes), max_bytes=max(sizes), step_factor=2,
                        iters=a.iters, warmup_iters=a.warmup, nproc=[a.nproc], out=tmp)
        validate(spec)
        threads = threads_per_rank(spec.threads_per_rank, a.nproc)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        print(f"all_reduce float32, {a.nproc} gloo processes x {threads} threads, {a.iters} timed + {a.warmup} "
              f"warmup iterations per size, {a.rounds} alternated rounds")
        for r in range(a.rounds):
            out = Path(tmp) / f"plain{r}.json"

            def run_plain() -> None:
                subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                f"--nproc-per-node={a.nproc}", str(HERE / "plain_allreduce.py"), "--sizes", a.sizes,
                                "--iters", str(a.iters), "--warmup", str(a.warmup), "--out", str(out)],
                               check=True, env=env, capture_output=True, timeout=600)

            if r % 2:  # alternate which goes first, so drift of the machine does not favour one side
                run_plain()
            outcome = execute_comm(spec)
            if not outcome.ok:
                sys.exit(f"trainscale comm failed: {outcome.summary['reason']}")
            if not r % 2:
                run_plain()
            rows = {row["bytes"]: row for row in outcome.results["results"]}
            theirs = json.loads(out.read_text())
            for s in sizes:
                ours[s].append(rows[s]["busbw_gbps"])
                plain[s].append(theirs[str(s)]["busbw_gbps"])
                print(f"round {r}  {s:>10d} B  trainscale comm {ours[s][-1]:.3f} GB/s   plain loop "
                      f"{plain[s][-1]:.3f} GB/s   ratio {ours[s][-1] / plain[s][-1]:.3f}")
        _summarise("end to end (separate launches)", sizes, ours, plain)
        if a.paired_rounds:
            out = Path(tmp) / "paired.json"
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            f"--nproc-per-node={a.nproc}", str(HERE / "paired_allreduce.py"), "--sizes", a.sizes,
                            "--rounds", str(a.paired_rounds), "--iters", str(a.iters), "--warmup", str(a.warmup),
                            "--out", str(out)], check=True, env=env, capture_output=True, timeout=1800)
            paired = json.loads(out.read_text())
            _summarise(f"paired (same processes, {a.paired_rounds} alternated rounds)", sizes,
                       {s: paired[str(s)]["trainscale"] for s in sizes}, {s: paired[str(s)]["plain"] for s in sizes})


def _summarise(title: str, sizes: list[int], ours: dict[int, list[float]], plain: dict[int, list[float]]) -> None:
    print(f"{title}: median busbw per size (GB/s, 1e9 B/s)")
    ratios = []
    for s in sizes:
        mo, mp = statistics.median(ours[s]), statistics.median(plain[s])
        paired = [o / p for o, p in zip(ours[s], plain[s])]
        ratios.append(mo / mp)
        print(f"  {s:>10d} B  trainscale comm {mo:.3f}   plain {mp:.3f}   ratio trainscale/plain = {mo / mp:.3f} "
              f"(per-round ratios {min(paired):.2f}-{max(paired):.2f})")
    overall = statistics.median(ratios)
    verdict = "within" if abs(overall - 1) <= 0.05 else "OUTSIDE"
    print(f"  median ratio over sizes: {overall:.3f} ({verdict} the 5% target)")


if __name__ == "__main__":
    main()
