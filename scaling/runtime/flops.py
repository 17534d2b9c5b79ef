"""What MFU is made of, measured in the rank: the model's FLOPs per sample, counted, and the matmul
FLOP/s this rank's device, threads and dtype achieve (docs/method.md "MFU").

- Counted FLOPs: one training step (forward, loss, backward) of the unwrapped model on two items of
  its own data set, under torch.utils.flop_counter.FlopCounterMode, with parameters, buffers and
  inputs on the meta device: shapes only, so nothing is computed, copied or updated. FlopCounterMode
  counts the ops that have a FLOP formula (matrix products, convolutions, attention); elementwise ops
  are left out, as in the field's MFU. Per sample = the count / (2 items x samples per item).
- Measured matmul peak: square torch.mm of MATMUL_N[device type] in the run's dtype, timed for about
  PEAK_PROBE_S after a warm-up; FLOP/s = 2 n^3 x repetitions / seconds. All ranks measure at once, so
  ranks that share a CPU's cores also share them here, as in training.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

MATMUL_N = {"cpu": 512, "cuda": 8192}
PEAK_PROBE_S = 0.25
COUNT_ITEMS = 2
PEAK_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty_like(x, device="meta")
    if isinstance(x, (list, tuple)):
        return type(x)(_meta(v) for v in x)
    return x


def count_training_flops(model: torch.nn.Module, loss_fn, dataset, samples_per_item: int) -> dict:
    """{"flops_per_sample", "forward_flops_per_sample", "basis"} or {"flops_per_sample": None, "reason"}."""
    try:
        items = [dataset[i] for i in range(COUNT_ITEMS)]
        inputs = _meta(torch.stack([torch.as_tensor(x) for x, _ in items]))
        targets = _meta(torch.stack([torch.as_tensor(y) for _, y in items]))
        params = {n: torch.empty_like(p, device="meta").requires_grad_(p.requires_grad)
                  for n, p in model.named_parameters()}
        buffers = {n: torch.empty_like(b, device="meta") for n, b in model.named_buffers()}
        was_training = model.training
        model.train()
        with FlopCounterMode(display=False) as forward:
            out = functional_call(model, {**params, **buffers}, (inputs,), tie_weights=True)
            loss = loss_fn(out, targets)
        with FlopCounterMode(display=False) as backward:
            loss.backward()
        model.train(was_training)
    except Exception as e:  # a model the meta device cannot run (data-dependent shapes, .item() ...)
        return {"flops_per_sample": None, "reason": f"not counted: {type(e).__name__}: {str(e)[:200]}"}
    per = COUNT_ITEMS * samples_per_item
    fwd, bwd = forward.get_total_flops(), backward.get_total_flops()
    return {"flops_per_sample": (fwd + bwd) / per, "forward_flops_per_sample": fwd / per,
            "basis": "torch.utils.flop_counter.FlopCounterMode over forward, loss and backward on the meta device "
                     f"({COUNT_ITEMS} items; ops with a FLOP formula: matmuls, convolutions, attention)"}


def measure_matmul_peak(device: torch.device, precision: str, threads: int) -> dict:
    """The achieved FLOP/s of square matmuls on this rank's device, threads and dtype."""
    dtype = PEAK_DTYPES.get(precision, torch.float32)
    n = MATMUL_N.get(device.type, 512)
    rng = torch.Generator(device=device).manual_seed(0)  # the run's own random streams stay untouched
    a = torch.rand(n, n, device=device, dtype=dtype, generator=rng)
    b = torch.rand(n, n, device=device, dtype=dtype, generator=rng)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        torch.mm(a, b)
    sync()
    reps, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        reps += 1
        if reps % 4 == 0:
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= PEAK_PROBE_S:
                break
    flops = 2.0 * n ** 3 * reps / elapsed
    return {"flops_per_s": flops, "n": n, "dtype": str(dtype).removeprefix("torch."), "threads": threads,
            "repetitions": reps, "seconds": elapsed, "device": str(device),
            "definition": f"torch.mm of two {n}x{n} {str(dtype).removeprefix('torch.')} matrices, 2 n^3 FLOPs each, "
                          f"repeated for {PEAK_PROBE_S} s after 3 warm-up products, all ranks at once"}
