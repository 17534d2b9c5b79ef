"""Time and peak memory of `trainscale report`, `plan` and `compare` against ranks.

    python benchmarks/analysis_scale.py [--ranks 1024,4096,16384] [--steps 1000] [--template RUN_DIR]
                                        [--csv-ranks 1024] [--work DIR]

Makes one real run (a tiny CPU ResNet-50, 2 ranks; or takes --template), then synthesizes run folders
of each rank count x --steps measured steps from it in the real schema (tests/scaled_results.py: per-node
Parquet files, 8 ranks a node, one straggling rank) and times each command as a fresh process, with
its peak resident memory (the child's ru_maxrss). --csv-ranks also times report on the per-rank CSV
layout older runs wrote. Prints one row per command and size, and the growth exponent of time against
ranks (1.0 = linear).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scaled_results import synthesize  # noqa: E402

CLI = [sys.executable, "-m", "trainscale.scaling"]


def timed(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one command, run as its own process."""
    t0 = time.monotonic()
    proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"analysis_scale: {' '.join(args[:2])} failed ({proc.returncode}): {err.strip()[-500:]}")
    return wall, usage.ru_maxrss * 1024 / 1e9


def make_template(work: Path) -> Path:
    out = work / "template"
    subprocess.run(CLI + ["run", "--workload", "resnet50", "--parallel", "ddp", "--nproc", "2", "--steps", "24",
                          "--warmup", "4", "--batch-size", "4", "--set", "model.width=0.125", "--set",
                          "model.resolution=32", "--set", "model.num_classes=10", "--set", "telemetry.enabled=false",
                          "--out", str(out)], check=True, capture_output=True, timeout=600)
    return next(p for p in out.iterdir() if p.is_dir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="1024,4096,16384")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--template", type=Path)
    ap.add_argument("--csv-ranks", default="1024", help="sizes also timed on per-rank CSV files ('' for none)")
    ap.add_argument("--work", type=Path, help="keep the folders here (default: a temporary folder, removed)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.ranks.split(",")]
    csv_sizes = {int(x) for x in a.csv_ranks.split(",") if x}
    work = a.work or Path(tempfile.mkdtemp(prefix="analysis-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        template = a.template or make_template(work)
        print(f"template: {template}; {a.steps} measured steps a rank; 8 ranks a node", flush=True)
        print(f"{'ranks':>6} {'layout':>8} {'command':>8} {'seconds':>8} {'peak GB':>8} {'data MB':>8}", flush=True)
        results: dict[str, list[tuple[int, float]]] = {}
        for n in sizes:
            layouts = [("parquet", True)] + ([("csv", False)] if n in csv_sizes else [])
            for layout, packed in layouts:
                a_dir = synthesize(template, work / f"r{n}-{layout}-a", n, a.steps, packed=packed,
                                   stragglers={n // 3: (1.5, a.steps // 2)}, seed=1)
                size_mb = sum(p.stat().st_size for p in a_dir.rglob("*") if p.is_file()) / 1e6
                commands = {"report": ["report", str(a_dir), "--out", str(work / f"report-{n}-{layout}")]}
                if packed:
                    b_dir = synthesize(template, work / f"r{n}-{layout}-b", n, a.steps, packed=True, seed=2)
                    commands["plan"] = ["plan", str(a_dir), "--nodes", f"{n // 4},{n // 2}", "--out",
                                        str(work / f"plan-{n}")]
                    commands["compare"] = ["compare", str(a_dir), str(b_dir)]
                for name, args in commands.items():
                    wall, peak = timed(args)
                    results.setdefault(f"{name} ({layout})", []).append((n, wall))
                    print(f"{n:>6} {layout:>8} {name:>8} {wall:>8.1f} {peak:>8.2f} {size_mb:>8.0f}", flush=True)
                for d in (a_dir, work / f"r{n}-{layout}-b"):
                    shutil.rmtree(d, ignore_errors=True)
        for name, points in results.items():
            if len(points) >= 2:
                x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
                print(f"{name}: time grows as ranks^{np.polyfit(x, y, 1)[0]:.2f} over {points[0][0]}-{points[-1][0]} ranks")
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
