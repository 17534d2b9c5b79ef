"""What each rank measures about its strategy, beside the per-step timings:

- collectives: every torch.distributed collective and point-to-point call of one probe step, with its
  payload and group size, caught at the dispatcher (a TorchDispatchMode sees c10d ops from DDP's C++
  reducer, FSDP2, DTensor's functional collectives, pipelining's send/recv and DeepSpeed alike). The
  probe step is the last warmup step: its timing is never measured (every op goes through Python
  while it runs, which is why only one step is probed), and with two or more warmup steps the first
  step's one-off traffic (pipeline shape inference, DeepSpeed's set-up) is not in it; DDP still
  broadcasts its rebuilt bucket order (a few hundred bytes) in the second step.
- memory: on CUDA torch.cuda.max_memory_allocated/reserved over the training loop; on CPU the
  process's peak resident set size (VmHWM from /proc/self/status, reset at the loop start through
  /proc/self/clear_refs after freed heap memory is returned to the OS with malloc_trim), next to the
  resident size before the model was built. RSS includes the interpreter and libraries.
- optimizer-visible state: the bytes of the parameters the optimizer updates on this rank, their
  gradients and the optimizer's state tensors, counted on the tensors themselves (local shards of
  DTensors; DeepSpeed's fp32 partitions) right after the probe step's optimizer step (gradients are
  still there; state such as momentum exists from the first step on).
"""
from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

COLLECTIVE_NAMESPACES = ("c10d", "_c10d_functional", "c10d_functional", "_c10d_functional_autograd")
NOT_COMMUNICATION = ("wait_tensor", "_wrap_tensor_autograd", "barrier", "monitored_barrier_")

# Substring of a c10d operation's name -> collective kind; the first match wins (reduce_scatter and
# allreduce before reduce, allgather before gather).
KINDS = (("reduce_scatter", "reduce_scatter"), ("all_gather", "all_gather"), ("allgather", "all_gather"),
         ("allreduce", "all_reduce"), ("all_reduce", "all_reduce"), ("all_to_all", "all_to_all"),
         ("alltoall", "all_to_all"), ("broadcast", "broadcast"), ("reduce", "reduce"), ("recv", "recv"),
         ("send", "send"), ("gather", "gather"), ("scatter", "scatter"))


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o) for o in obj)
    return 0


def _group_size(args: tuple) -> int | None:
    for a in args:
        if isinstance(a, torch.ScriptObject):
            try:
                return dist.ProcessGroup.unbox(a).size()
            except (RuntimeError, TypeError, AttributeError):
                return None
    names = [a for a in args if isinstance(a, str)]
    if names:
        try:
            from torch.distributed.distributed_c10d import _resolve_process_group

            return _resolve_process_group(names[-1]).size()
        except (RuntimeError, ValueError, KeyError):
            return None
    return None


def classify(op: str) -> str | None:
    for needle, kind in KINDS:
        if needle in op:
            return kind
    return None


def payload_bytes(namespace: str, kind: str, args: tuple, group_size: int | None) -> int:
    """nccl-tests' message size: all_gather counts the gathered output, reduce_scatter the input
    before scattering, everything else the tensor(s) passed."""
    functional = namespace != "c10d"
    if kind == "all_gather":
        return _tensor_bytes(args[0]) * (group_size or 1) if functional else _tensor_bytes(args[0])
    if kind == "reduce_scatter" and not functional:
        return _tensor_bytes(args[1])
    return _tensor_bytes(args[0])


class CollectiveCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[tuple[str, str, int | None], dict[str, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace = func.namespace
        if namespace in COLLECTIVE_NAMESPACES:
            op = func.__name__.split(".")[0]
            kind = classify(op.removesuffix("_"))
            if kind and op not in NOT_COMMUNICATION:
                size = _group_size(args)
                entry = self.ops.setdefault((f"{namespace}.{op}", kind, size), {"calls": 0, "payload_bytes": 0})
                entry["calls"] += 1
                entry["payload_bytes"] += payload_bytes(namespace, kind, args, size)
        return func(*args, **(kwargs or {}))

    def records(self) -> list[dict]:
        return [{"op": op, "kind": kind, "group_size": size, **counts}
                for (op, kind, size), counts in sorted(self.ops.items(), key=lambda kv: kv[0][0])]


# -- memory ------------------------------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def return_freed_memory() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class MemoryWatch:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss_before_model = rss_bytes()
        self.rss_at_loop_start: int | None = None
        self.peak_reset = False

    def loop_starts(self) -> None:
        return_freed_memory()
        self.rss_at_loop_start = rss_bytes()
        self.peak_reset = reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def facts(self) -> dict:
        out: dict[str, Any] = {
            "peak_rss_bytes": _status_bytes("VmHWM"),
            "peak_rss_window": "training loop" if self.peak_reset else "process lifetime (clear_refs unavailable)",
            "rss_before_model_bytes": self.rss_before_model,
            "rss_at_loop_start_bytes": self.rss_at_loop_start,
        }
        if self.device.type == "cuda":
            out.update(measure="torch.cuda.max_memory_allocated over the training loop",
                       peak_bytes=torch.cuda.max_memory_allocated(self.device),
                       peak_reserved_bytes=torch.cuda.max_memory_reserved(self.device))
        else:
            out.update(measure="peak RSS (VmHWM) of the rank's process over the training loop",
                       peak_bytes=out["peak_rss_bytes"])
        return out


# -- optimizer-visible state ---------------------------------------------------------------------


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    seen: set[tuple[int, int]] = set()

    def count(t: torch.Tensor | None) -> int:
        """Bytes of the tensor's elements on this rank, each tensor once (tied weights share one)."""
        if not isinstance(t, torch.Tensor):
            return 0
        t = _local(t)
        key = (t.data_ptr(), t.numel())
        if key in seen:
            return 0
        seen.add(key)
        return t.numel() * t.element_size()

    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {
        "params": sum(count(p) for p in params),
        "grads": sum(count(p.grad) for p in params),
        "optimizer_state": sum(count(v) for p in params for v in optimizer.state.get(p, {}).values()),
    }


# -- per-rank glue for the worker ---------------------------------------------------------------


class StrategyProbe:
    """Counts collectives and optimizer-visible state over one step (begin/end around the step)."""

    def __init__(self, strategy: Any, probe_step: int | None, off_note: str | None = None) -> None:
        """off_note: why the probe is off (probe_step None) when it is not for lack of a warmup step."""
        self.strategy, self.probe_step, self.off_note = strategy, probe_step, off_note
        self.comm: list[dict] | None = None
        self.state: dict[str, int] | None = None
        self._counter: CollectiveCounter | None = None
        self._hook = None

    def begin(self, step: int) -> None:
        if step != self.probe_step:
            return
        optimizer = self.strategy.stepping_optimizer
        if isinstance(optimizer, torch.optim.Optimizer):
            def count_state(opt, _args, _kwargs) -> None:
                if self.state is None:
                    self.state = optimizer_state_bytes(opt)
            self._hook = optimizer.register_step_post_hook(count_state)
        self._counter = CollectiveCounter()
        self._counter.__enter__()

    def end(self, step: int) -> None:
        if step != self.probe_step or self._counter is None:
            return
        self._counter.__exit__(None, None, None)
        if self._hook is not None:
            self._hook.remove()
        self.comm, self._counter = self._counter.records(), None

    def facts(self) -> dict:
        if self.probe_step is None:
            note = self.off_note or "not measured: the probe runs in the last warmup step and this run has warmup 0"
            return {"comm": {"probe_step": None, "note": note}, "optimizer_state_bytes": None}
        return {"comm": {"probe_step": self.probe_step, "ops": self.comm or [],
                         "payload_bytes": sum(o["payload_bytes"] for o in self.comm or [])},
                "optimizer_state_bytes": self.state}


class BusyTimer:
    """Seconds a pipeline stage spends computing (forward, backward, loss) within a step: wraps the
    stage's own methods, so waiting for sends and receives is not counted."""

    def __init__(self) -> None:
        self.busy_s = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.busy_s += time.perf_counter() - t0
        return timed

    def take(self) -> float:
        busy, self.busy_s = self.busy_s, 0.0
        return busy
