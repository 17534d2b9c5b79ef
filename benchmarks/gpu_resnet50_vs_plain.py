"""ResNet-50 images/s of `trainscale run` next to a plain PyTorch training loop of the same model, batch,
precision, memory format and data, alternated in one invocation (one device call).

    python benchmarks/gpu_resnet50_vs_plain.py                      # one GPU: batch 256, bf16, channels_last
    python benchmarks/gpu_resnet50_vs_plain.py --device cpu         # CPU: a tiny ResNet-50, to exercise it

trainscale side: `trainscale run --workload resnet50 --backend nccl --nproc 1 --precision bf16
--channels-last` (gloo on --device cpu), its throughput (global images/s over the measured window) and
energy per image (NVML energy counter over the measured window, GPU board only) from summary.json.
Plain side (a child process, so the two never share the device at once): torch's ResNet-50 of
trainscale's model class, SGD(lr 0.01, momentum 0.9) as trainscale's default, the same synthetic data set
through a DataLoader with the same worker count (pinned memory, non-blocking copies on CUDA), autocast to
the same dtype; its window runs from a synchronisation after the warm-up steps to one after the last step,
and its energy is the NVML counter's difference over that window. A third figure, the plain loop on one
batch that stays on the device, shows what the data path costs both. Prints each round, the medians,
the ratio trainscale / plain (target >= 0.97) and the energy per image of each.
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
from pathlib import Path

TARGET = 0.97


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--batch-size", type=int, help="default: 256 on cuda, 8 on cpu")
    p.add_argument("--steps", type=int, help="steps per run, warm-up included (default: 80 on cuda, 12 on cpu)")
    p.add_argument("--warmup", type=int, help="default: 30 on cuda, 4 on cpu")
    p.add_argument("--width", type=float, help="channel multiplier (default: 1.0 on cuda, 0.125 on cpu)")
    p.add_argument("--resolution", type=int, help="default: 224 on cuda, 32 on cpu")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="bf16")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    p.add_argument("--loader-workers", type=int, help="DataLoader workers on both sides (default: 8 on cuda, 0 on cpu)")
    p.add_argument("--rounds", type=int, default=2, help="alternated trainscale / plain rounds")
    p.add_argument("--plain-worker", help=argparse.SUPPRESS)  # internal: run the plain loop, write JSON here
    a = p.parse_args()
    gpu = a.device == "cuda"
    for name, on_gpu, on_cpu in (("batch_size", 256, 8), ("steps", 80, 12), ("warmup", 30, 4), ("width", 1.0, 0.125),
                                 ("resolution", 224, 32), ("loader_workers", 8, 0)):
        if getattr(a, name) is None:
            setattr(a, name, on_gpu if gpu else on_cpu)
    if a.device == "cpu":
        a.classes = min(a.classes, 10)
    return a


# -- the plain loop (child process) ---------------------------------------------------------------


def energy_mj() -> int | None:
    """NVML's total energy counter of GPU 0 of this process, or None (no NVML, no counter)."""
    try:
        import pynvml as nv
        import torch

        nv.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            u = nv.nvmlDeviceGetUUID(h)
            u = u.decode() if isinstance(u, bytes) else u
            if u.lower().removeprefix("gpu-") == uuid.lower().removeprefix("gpu-"):
                return nv.nvmlDeviceGetTotalEnergyConsumption(h)
    except Exception:
        return None
    return None


def plain(a: argparse.Namespace) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from trainscale.workloads.data import SyntheticImages
    from trainscale.workloads.resnet import ResNet50

    cuda = a.device == "cuda"
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as trainscale's fp32/bf16
    torch.manual_seed(0)
    model = ResNet50(num_classes=a.classes, width=a.width).to(device)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step_model = torch.compile(model) if a.compile else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = torch.amp.GradScaler("cuda") if a.precision == "fp16" else None
    loss_fn = torch.nn.CrossEntropyLoss()
    data = SyntheticImages(a.steps * a.batch_size, a.resolution, a.classes, seed=0)
    loader = iter(DataLoader(data, batch_size=a.batch_size, shuffle=True, num_workers=a.loader_workers,
                             pin_memory=cuda, drop_last=True, generator=torch.Generator().manual_seed(0)))
    resident = None

    def step(x, y) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(step_model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    def batch():
        x, y = next(loader)
        return (x.to(device, non_blocking=True).contiguous(memory_format=memory_format),
                y.to(device, non_blocking=True))

    def window(get) -> tuple[float, int | None, int | None]:
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        e0, t0 = energy_mj() if cuda else None, time.perf_counter()
        for _ in range(a.steps - a.warmup):
            step(*get())
        sync()
        return time.perf_counter() - t0, e0, energy_mj() if cuda else None

    for _ in range(a.warmup):
        resident = batch()
        step(*resident)
    seconds, e0, e1 = window(batch)
    images = (a.steps - a.warmup) * a.batch_size
    res_seconds, _, _ = window(lambda: resident)
    return {"images_per_s": images / seconds, "resident_images_per_s": images / res_seconds,
            "joules_per_image": (e1 - e0) / 1000.0 / images if e0 is not None and e1 is not None else None}


# -- the comparison -------------------------------------------------------------------------------


def run_trainscale(a: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "trainscale.scaling", "run", "--workload", "resnet50", "--nproc", "1",
           "--backend", "nccl" if a.device == "cuda" else "gloo", "--precision", a.precision,
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--set", f"model.width={a.width}", "--set", f"model.resolution={a.resolution}",
           "--set", f"model.num_classes={a.classes}", "--set", f"data.loader_workers={a.loader_workers}",
           "--set", "comm.no_sync_steps=0", "--out", str(out)]
    cmd += ["--channels-last"] if a.channels_last else []
    cmd += ["--compile"] if a.compile else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"trainscale run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    gpu = summary.get("gpu") or {}
    energy = gpu.get("energy") or {}
    return {"images_per_s": summary["metrics"]["throughput"]["global_samples_per_s"],
            "joules_per_image": energy.get("per_sample_j"), "gpu_note": None if gpu.get("available") else
            gpu.get("reason"), "threats": gpu.get("threats", []), "run_dir": str(run_dir)}


def run_plain(a: argparse.Namespace, out: Path) -> dict:
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--plain-worker", str(out)], check=True, timeout=1800)
    return json.loads(out.read_text())


def fmt_j(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g} J"


def main() -> None:
    a = args()
    if a.plain_worker:
        Path(a.plain_worker).write_text(json.dumps(plain(a)))
        return
    print(f"resnet50 width {a.width} at {a.resolution}px, batch {a.batch_size}, {a.precision}, "
          f"{'channels_last' if a.channels_last else 'contiguous'}{', compiled' if a.compile else ''}, "
          f"{a.steps} steps ({a.warmup} warm-up), {a.loader_workers} loader workers, device {a.device}, "
          f"{a.rounds} alternated rounds")
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            t = run_trainscale(a, Path(tmp) / f"ts{r}")
            p = run_plain(a, Path(tmp) / f"plain{r}.json")
            ours.append(t)
            theirs.append(p)
            print(f"round {r + 1}: trainscale {t['images_per_s']:.1f} img/s ({fmt_j(t['joules_per_image'])}/img), "
                  f"plain {p['images_per_s']:.1f} img/s ({fmt_j(p['joules_per_image'])}/img), "
                  f"plain with a device-resident batch {p['resident_images_per_s']:.1f} img/s")
    med = lambda rows, k: statistics.median(x[k] for x in rows)  # noqa: E731
    med_j = lambda rows: (statistics.median(x["joules_per_image"] for x in rows)  # noqa: E731
                          if all(x["joules_per_image"] is not None for x in rows) else None)
    ts, pl = med(ours, "images_per_s"), med(theirs, "images_per_s")
    ratio = ts / pl
    print(f"trainscale: {ts:.1f} img/s (median), energy {fmt_j(med_j(ours))} per image (GPU board only)")
    print(f"plain loop: {pl:.1f} img/s (median), energy {fmt_j(med_j(theirs))} per image (GPU board only)")
    print(f"plain loop, device-resident batch: {med(theirs, 'resident_images_per_s'):.1f} img/s (median)")
    print(f"ratio trainscale / plain: {ratio:.3f} (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    if ours[-1]["gpu_note"]:
        print(f"trainscale telemetry: {ours[-1]['gpu_note']}")
    for threat in ours[-1]["threats"]:
        print(f"threat: {threat}")


if __name__ == "__main__":
    main()
