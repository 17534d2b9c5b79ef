"""Checkpoint I/O against the disk, side by side in one run: trainscale's Checkpointer (DCP) saving and
restoring 100 MB to 1 GB of model + optimizer state, next to the disk's own write+fsync and read of the
same bytes in the same folder.

    python benchmarks/checkpoint_io.py [--sizes-mb 100,300,1000] [--repeats 3] [--threads 0] [--dir DIR]

Per size, medians of --repeats (in turn: sync save, disk write, disk read, async save, restore; the
page cache's dirty pages are flushed before each write, so none pays for the one before):
  disk write   random 4 MiB blocks as one file per write thread of the save, written at once and
               fsynced (the reference for saves: the same shape of I/O)
  sync save    Checkpointer.save, synchronous: until the checkpoint is complete (marker, rename)
  async stall  Checkpointer.save with dcp.async_save: what the training loop waits (staging), for the
               run's first save (its staging buffers are allocated) and later ones (copied into)
  async total  until that checkpoint is complete on disk
  step slowdown  a stand-in training step (a 512 x 512 fp32 matmul) run while the background write is
               in flight, against the same number run after it: median per-step time ratio
  disk read    those files read back at once after their pages are dropped from the page cache
  restore      Checkpointer.restore after the checkpoint's pages are dropped
and the ratios save / disk write, restore / disk read, async stall / sync save, plus the sync save's
breakdown (state dict, plan, write, metadata, completion). One process (gloo, world size 1); the state is
SGD with momentum over a stack of square fp32 Linear layers (parameters + momentum = the size).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist

from trainscale.faults.checkpoint_store import Checkpointer, complete_checkpoints, default_write_threads

BLOCK = 4 << 20
WIDTH = 2048  # a Linear(2048, 2048) holds 16.8 MB of fp32 weights + bias; with momentum 33.6 MB


def drop_cache(folder: Path) -> None:
    """Evict the folder's files from the page cache (clean pages only: they were fsynced)."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _write_one(path: Path, size: int, chunk: bytes) -> None:
    with open(path, "wb") as f:
        for _ in range(max(1, size // BLOCK)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def disk_write(folder: Path, size: int, streams: int) -> float:
    """Seconds to write `size` bytes as `streams` files at once, each fsynced: the same shape of I/O as
    a save with that many write threads."""
    chunk = os.urandom(BLOCK)
    t0 = time.monotonic()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda i: _write_one(folder / f"disk-probe-{i}", size // streams, chunk), range(streams)))
    return time.monotonic() - t0


def disk_read(folder: Path, streams: int) -> float:
    drop_cache(folder)
    t0 = time.monotonic()

    def read(i: int) -> None:
        with open(folder / f"disk-probe-{i}", "rb", buffering=0) as f:
            while f.read(BLOCK):
                pass
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(read, range(streams)))
    return time.monotonic() - t0


def steps_while(going, between=lambda: None) -> list[float]:
    """Seconds of each stand-in training step run while going() is true; between() after each."""
    a = torch.randn(512, 512)
    times = []
    while going():
        t0 = time.perf_counter()
        torch.mm(a, a)
        times.append(time.perf_counter() - t0)
        between()
    return times


def make_state(size_mb: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    layers = max(1, round(size_mb * 1e6 / (2 * 4 * (WIDTH * WIDTH + WIDTH))))
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, WIDTH)).sum().backward()
    opt.step()  # momentum buffers exist: the optimizer state is as large as the parameters
    return model, opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="100,300,1000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="checkpoint.write_threads (0: the default)")
    ap.add_argument("--dir", type=Path, help="folder on the disk to measure (default: a temporary folder)")
    a = ap.parse_args()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29611"), RANK="0",
                      WORLD_SIZE="1")
    dist.init_process_group("gloo")
    base = Path(tempfile.mkdtemp(prefix="ckpt-io-", dir=a.dir))
    try:
        print(f"folder {base}; medians of {a.repeats}; MB/s = 1e6 bytes/s; "
              f"write threads {a.threads or default_write_threads()}")
        print(f"{'state':>8} {'disk write':>11} {'sync save':>10} {'ratio':>6} {'1st stall':>10} {'stall':>8} "
              f"{'async total':>12} {'stall/save':>10} {'step slowdown':>13} {'disk read':>10} {'restore':>9} {'ratio':>6}")
        for size_mb in (int(x) for x in a.sizes_mb.split(",")):
            model, opt = make_state(size_mb)
            runs: dict[str, list[float]] = {k: [] for k in ("write", "sync", "stall", "total", "read", "restore",
                                                            "slowdown")}
            phases: list[dict] = []
            size = 0
            # One asynchronous checkpointer for all repeats, as in a run: its first save allocates the
            # staging buffers, the later ones reuse them. Saves go to one folder, keeping one.
            async_root = base / "async"
            asyncer = Checkpointer(async_root, model, opt, async_save=True, keep=1, write_threads=a.threads)
            first_stall = None
            for r in range(a.repeats + 1):
                if r == 0:
                    first_stall = asyncer.save(0).blocking_s
                    asyncer.wait()
                    continue
                sync_root = base / f"sync{r}"
                sync = Checkpointer(sync_root, model, opt, write_threads=a.threads)
                os.sync()  # each write starts with no dirty pages of the one before it still being flushed
                record = sync.save(1)
                size = record.bytes
                runs["sync"].append(record.total_s)
                phases.append(record.phases)
                probes = base / "disk"
                probes.mkdir()
                os.sync()
                runs["write"].append(disk_write(probes, size, sync.write_threads))
                runs["read"].append(disk_read(probes, sync.write_threads))
                shutil.rmtree(probes)
                os.sync()
                rec = asyncer.save(r)
                busy = steps_while(lambda: asyncer.in_flight, asyncer.poll)
                asyncer.wait()
                left = [len(busy)]
                quiet = steps_while(lambda: left[0] > 0, lambda: left.__setitem__(0, left[0] - 1))
                runs["stall"].append(rec.blocking_s)
                runs["total"].append(rec.total_s)
                if busy:
                    runs["slowdown"].append(statistics.median(busy) / statistics.median(quiet))
                drop_cache(sync_root)
                t0 = time.monotonic()
                restored = Checkpointer(sync_root, model, opt, write_threads=a.threads).restore()
                runs["restore"].append(time.monotonic() - t0)
                assert restored.step == 1 and complete_checkpoints(sync_root)
                shutil.rmtree(sync_root)
            shutil.rmtree(async_root)
            slowdowns = runs.pop("slowdown")
            slowdown = f"{statistics.median(slowdowns):.2f}x" if slowdowns else "-"
            m = {k: statistics.median(v) for k, v in runs.items()}
            mbps = {k: size / v / 1e6 for k, v in m.items()}
            print(f"{size / 1e6:>6.0f}MB {mbps['write']:>8.0f}/s {mbps['sync']:>7.0f}/s {mbps['sync'] / mbps['write']:>6.2f} "
                  f"{first_stall:>8.3f} s {m['stall']:>6.3f} s {m['total']:>10.3f} s {m['stall'] / m['sync']:>10.3f} "
                  f"{slowdown:>13} "
                  f"{mbps['read']:>7.0f}/s {mbps['restore']:>6.0f}/s {mbps['restore'] / mbps['read']:>6.2f}", flush=True)
            keys = sorted({k for p in phases for k in p})
            print("         sync save breakdown (median s): " +
                  ", ".join(f"{k.removesuffix('_s')} {statistics.median(p.get(k, 0.0) for p in phases):.3f}"
                            for k in keys), flush=True)
            del model, opt
    finally:
        shutil.rmtree(base, ignore_errors=True)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
