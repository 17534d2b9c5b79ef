"""Timing the gradient collectives of a training step, per rank.

A CollectiveTimer keeps, for the current step, one interval per collective: from its launch to its
completion. The step's "time in collectives" is the union of those intervals (time during which at
least one gradient collective was in flight), so buckets queued behind each other are not counted
twice. On CPU the clock is the rank's monotonic perf_counter; on CUDA the ends are CUDA events on
the streams the collective runs on, read after the step's synchronize.

Strategies plug in by creating a timer and calling launched()/completed() around their collectives:
DDP through a comm hook (timed_allreduce_hook below); an FSDP strategy can do the same from its
own hooks. The loop reads the timer through scaling.comm_probe.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.distributed as dist


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping [start, end] intervals."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


class CollectiveTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._intervals: list = []
        self._buffer_syncs: list = []  # DDP's broadcast of module buffers from rank 0, at forward start
        self._ref = None

    def _mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def begin_step(self) -> None:
        self._intervals = []
        self._buffer_syncs = []
        self._ref = self._mark() if self.cuda else None

    def launched(self):
        """A token for a collective launched now (on CUDA: an event on the current stream)."""
        return self._mark()

    def completed(self, token) -> None:
        """The collective launched with token has completed (called from its completion callback;
        on CUDA the callback runs with the collective's stream current, so the event marks its end)."""
        self._intervals.append((token, self._mark()))  # list.append is atomic: callbacks may run on another thread

    def buffer_sync_done(self, token) -> None:
        """DDP's buffer broadcast launched with token has returned (it is not a gradient collective)."""
        self._buffer_syncs.append((token, self._mark()))

    def _seconds(self, intervals: list) -> list[tuple[float, float]]:
        if self.cuda:
            ref = self._ref
            return [(ref.elapsed_time(s) / 1e3, ref.elapsed_time(e) / 1e3) for s, e in intervals]
        return intervals

    def end_step(self) -> tuple[float, int, float]:
        """(seconds with a gradient collective in flight, gradient collectives, seconds in buffer
        broadcasts) of the step; call after the step's device synchronize, when every collective of the
        step has completed."""
        return (union_length(self._seconds(self._intervals)), len(self._intervals),
                union_length(self._seconds(self._buffer_syncs)))


def time_buffer_syncs(ddp_model, timer: CollectiveTimer) -> bool:
    """Time DDP's broadcast of module buffers (BatchNorm statistics) from rank 0 at each forward's
    start: there rank 0 waits for the slowest rank, outside any gradient collective. Wraps DDP's
    _sync_buffers (a private method, present since torch 1.x); False when this torch has none."""
    original = getattr(ddp_model, "_sync_buffers", None)
    if original is None:
        return False

    def timed(*args, **kwargs):
        token = timer.launched()
        out = original(*args, **kwargs)
        timer.buffer_sync_done(token)
        return out

    ddp_model._sync_buffers = timed
    return True


def emulated_delay(delay_s: float, device: torch.device) -> Callable[[], None]:
    """Makes a collective complete delay_s later, as a slower link would. CPU: the completing thread
    sleeps (gloo completes collectives on its own thread, so later collectives queue behind it, as on
    a slow link; backward compute goes on). CUDA: a spin kernel of that length on the stream."""
    if device.type != "cuda":
        return lambda: time.sleep(delay_s)
    cycles_per_s = _cuda_cycles_per_second(device)
    cycles = int(delay_s * cycles_per_s)
    return lambda: torch.cuda._sleep(cycles)


def _cuda_cycles_per_second(device: torch.device) -> float:
    """torch.cuda._sleep counts GPU clock cycles; measure how many make a second on this device."""
    probe = 10_000_000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.cuda.device(device):
        torch.cuda._sleep(probe)  # warm-up
        start.record()
        torch.cuda._sleep(probe)
        end.record()
        torch.cuda.synchronize(device)
    return probe / (start.elapsed_time(end) / 1e3)


def timed_allreduce_hook(timer: CollectiveTimer | None, delay_s: float, device: torch.device):
    """A DDP comm hook doing what DDP's built-in one does (average the bucket with one all_reduce),
    timing each bucket from launch to completion, optionally completing it delay_s later."""
    delay = emulated_delay(delay_s, device) if delay_s > 0 else None

    # No annotations: DDP checks them against dist.GradBucket, and this module's are strings.
    def hook(group, bucket):
        tensor = bucket.buffer().div_(dist.get_world_size(group))
        token = timer.launched() if timer is not None else None
        fut = dist.all_reduce(tensor, group=group, async_op=True).get_future()

        def done(f: torch.futures.Future) -> torch.Tensor:
            value = f.value()[0]
            if delay is not None:
                delay()
            if timer is not None:
                timer.completed(token)
            return value

        return fut.then(done)

    return hook
