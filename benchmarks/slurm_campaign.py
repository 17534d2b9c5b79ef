"""Wall time of a scaling campaign as one sbatch job against the same points as separate sbatch jobs,
alternated round by round on a running Slurm (a real cluster, or tools/slurm-up.sh --nodes 4 here):

    source /tmp/trainscale-slurm/env     # SLURM_CONF of a Slurm with at least max(--nodes) nodes
    python benchmarks/slurm_campaign.py [--nodes 1,2,4] [--rounds 2] [--keep DIR] [-- RENDER_ARGS ...]

A: `trainscale slurm render --sweep-nodes 1,2,4 ...`, one job.
B: `trainscale slurm render --nodes N ...` for each N, submitted one after the other, each after the
   previous one ended (the same points, one job each, as before campaigns existed), then `trainscale
   report` over their results (the campaign writes its report inside the job).
Both use the same run settings (RENDER_ARGS; default: a tiny CPU ResNet-50, 8 steps). Prints each
round's wall seconds and the median of A / B. On a shared cluster B also waits in the queue once per
point; on an idle local Slurm only the per-job start and end costs differ, so the ratio here is a lower
bound on what one job saves.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--gpus-per-node", "0", "--nproc-per-node", "1", "--cpus-per-task", "1", "--time", "00:20:00",
        "--steps", "8", "--warmup", "3", "--batch-size", "4", "--set", "model.width=0.125",
        "--set", "model.resolution=32", "--set", "model.num_classes=10"]


def render(folder: Path, name: str, size_args: list[str], render_args: list[str]) -> Path:
    script = folder / f"{name}.sh"
    subprocess.run([sys.executable, "-m", "trainscale.scaling", "slurm", "render", "--workload", "resnet50",
                    *size_args, "--job-name", f"bench-{name}", *render_args, "--output", str(script)],
                   check=True, capture_output=True, text=True)
    return script


def job_state(job: str) -> tuple[str, str]:
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    fields = dict(w.split("=", 1) for w in show.split() if "=" in w)
    return fields.get("JobState", ""), fields.get("ExitCode", "")


def submit_and_wait(script: Path, results: Path) -> float:
    """Seconds from sbatch to the job's end, polled every 0.2 s (`sbatch --wait` polls at growing
    intervals, up to 32 s, and would round every job up to its next poll)."""
    t0 = time.monotonic()
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, cwd=script.parent,
                         env={**os.environ, "RESULTS_DIR": str(results)}, timeout=60)
    job = out.stdout.strip().split(";")[0]
    if not job.isdigit():
        raise SystemExit(f"slurm_campaign: sbatch refused {script.name}: {out.stderr.strip()}")
    while (state := job_state(job))[0] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", ""):
        if time.monotonic() - t0 > 3600:
            raise SystemExit(f"slurm_campaign: job {job} ({script.name}) did not end within an hour")
        time.sleep(0.2)
    if state != ("COMPLETED", "0:0"):
        raise SystemExit(f"slurm_campaign: job {job} ({script.name}) ended {state[0]} with exit code {state[1]}")
    return time.monotonic() - t0


def main() -> None:
    argv = sys.argv[1:]
    render_args = TINY
    if "--" in argv:
        render_args, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="1,2,4")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep", type=Path, help="keep the scripts and results here (default: a temporary folder)")
    a = p.parse_args(argv)
    if not os.environ.get("SLURM_CONF") and shutil.which("sbatch") is None:
        raise SystemExit("slurm_campaign: no Slurm here (tools/slurm-up.sh --nodes 4, then source DIR/env)")
    nodes = [int(n) for n in a.nodes.split(",")]
    folder = a.keep or Path(tempfile.mkdtemp(prefix="ts-campaign-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    campaign = render(folder, "campaign", ["--sweep-nodes", a.nodes], render_args)
    singles = [render(folder, f"point{n}", ["--nodes", str(n)], render_args) for n in nodes]
    print(f"A: sbatch {campaign}")
    print("B: " + ", then ".join(f"sbatch {s}" for s in singles) + ", then trainscale report")
    ratios = []
    for r in range(a.rounds):
        t_a = submit_and_wait(campaign, folder / f"results-a{r}")
        t0 = time.monotonic()
        for single in singles:
            submit_and_wait(single, folder / f"results-b{r}")
        # The campaign ends with its report; the separate jobs' results get theirs afterwards.
        subprocess.run([sys.executable, "-m", "trainscale.scaling", "report", str(folder / f"results-b{r}")],
                       check=True, capture_output=True, timeout=600)
        t_b = time.monotonic() - t0
        ratios.append(t_a / t_b)
        print(f"round {r}: one campaign job {t_a:.1f} s, {len(singles)} separate jobs {t_b:.1f} s, A/B {t_a / t_b:.3f}",
              flush=True)
    print(f"median A/B over {a.rounds} round(s): {statistics.median(ratios):.3f}")
    if a.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
