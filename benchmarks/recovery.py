"""Recovery benchmark: one kill-rank drill (torchrun elastic restart from a DCP checkpoint), then the
disk's sequential write speed measured in the same run on the same folder.

Prints: detection time after SIGKILL (target under 2 s), the recovery timeline and its total, the
checkpoint save time and throughput (bytes / synchronous save time) next to the disk's sequential
write+fsync throughput for the same bytes (one stream, and split over 2 files written at once as the
2 ranks do; medians of 3), and the ratio to the latter.

    python benchmarks/recovery.py [--workload gpt --preset small-cpu --seq-len 64] [--async-ckpt] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DETECTION_TARGET_S = 2.0


def _write_fsync(path: Path, size: int, block: int) -> None:
    chunk = os.urandom(block)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[:min(block, left)])
            left -= block
        f.flush()
        os.fsync(f.fileno())


def disk_write_bytes_per_s(folder: Path, size: int, streams: int = 1, block: int = 4 << 20) -> float:
    """Write `size` bytes in all, split over `streams` files written at once (as the ranks of a save
    write theirs), 4 MiB blocks of random data, each file fsynced: bytes per second."""
    paths = [folder / f".disk-speed-probe-{i}" for i in range(streams)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda p: _write_fsync(p, size // streams, block), paths))
    elapsed = time.monotonic() - t0
    for path in paths:
        path.unlink()
    return size / elapsed


def disk_rates(folder: Path, size: int, streams: int, repeats: int = 3) -> list[float]:
    return [disk_write_bytes_per_s(folder, size, streams) for _ in range(repeats)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small-cpu", help="gpt model.preset (small-cpu: ~14M parameters)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--at-step", type=int, default=6)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--async-ckpt", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: a temporary one)")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    cmd = [sys.executable, "-m", "trainscale.scaling", "drill", "--fault", "kill-rank", "--at-step", str(args.at_step),
           "--ckpt-every", str(args.ckpt_every), "--rank", "1", "--workload", "gpt", "--parallel", "ddp",
           "--nproc", "2", "--steps", str(args.steps), "--warmup", "2", "--batch-size", "4",
           "--set", f"model.preset={args.preset}", "--set", f"model.seq_len={args.seq_len}", "--out", str(out),
           "--timeout", "500", *(["--async-ckpt"] if args.async_ckpt else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=560)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    s = json.loads((run_dir / "summary.json").read_text())
    (r,) = s["recovery"]
    c = s["checkpoint"]
    print(f"drill: {s['drill']['fault']} rank 1 at step {r['step']}, gpt {args.preset} (seq {args.seq_len}), "
          f"ddp x2 gloo, recovered by {s['drill']['engine']}; run {run_dir}")
    verdict = "meets" if r["detection_s"] < DETECTION_TARGET_S else "MISSES"
    print(f"detection after SIGKILL : {r['detection_s']:.3f} s  ({verdict} the {DETECTION_TARGET_S:g} s target)")
    for key in ("restart_s", "rendezvous_s", "restore_s", "lost_work_s", "other_s"):
        print(f"  {key:<22}: {r[key]:.3f} s")
    print(f"total recovery          : {r['total_s']:.3f} s  (failure -> end of step {r['step']} after the restart, "
          f"resumed at step {r['resumed_step']})")
    size = c["bytes"]
    sync_saves = c["save_s_samples"] if not c["async"] else c["complete_s_samples"]
    save_s = sum(sync_saves) / len(sync_saves)
    one_stream = disk_rates(run_dir / "checkpoints", size, 1)
    per_rank = disk_rates(run_dir / "checkpoints", size, 2)  # the drill's 2 ranks write their files at once
    disk = statistics.median(per_rank)
    ckpt_rate = size / save_s
    print(f"checkpoint              : {size / 1e6:.1f} MB, {len(sync_saves)} saves, "
          f"{'async (complete)' if c['async'] else 'sync'} save {save_s:.3f} s mean "
          f"[{', '.join(f'{x:.3f}' for x in sync_saves)}]")
    if c["async"]:
        print(f"  loop blocked per save : {c['save_s_mean']:.3f} s mean (staging)")
    print(f"checkpoint save rate    : {ckpt_rate / 1e6:.1f} MB/s")
    print(f"disk sequential write   : {statistics.median(one_stream) / 1e6:.1f} MB/s one stream, "
          f"{disk / 1e6:.1f} MB/s as 2 parallel streams (write + fsync of {size / 1e6:.1f} MB in all, same "
          f"folder; medians of 3: {', '.join(f'{x / 1e6:.0f}' for x in one_stream)} | "
          f"{', '.join(f'{x / 1e6:.0f}' for x in per_rank)})")
    print(f"save rate / disk rate   : {ckpt_rate / disk:.2f} (against 2 parallel streams)")
    print(f"ETTR {s['goodput']['ettr']:.3f}; Young interval at MTBF 3600 s: {s['intervals']['young_s']:.1f} s, "
          f"Daly {s['intervals']['daly_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
