"""The clock of a training step's parts (data, compute, optimizer), honest on every device.

CPU: the rank's monotonic host clock at each edge; the device is synchronous, so host readings are the
parts' durations. CUDA: kernels run asynchronously, so a host reading between parts would measure only
how fast they were enqueued (or force a synchronisation per part that changes what is measured). Each
edge is instead a CUDA event (``enable_timing``) recorded on the current stream; the events are read
once, after the step's end synchronisation (one per step), as GPU-timeline durations between the
edges. The host clock is read at the first edge and after that synchronisation, so the step's time
and its start are host times that other host times (the window, run_start) can be set against.
"""
from __future__ import annotations

import time

import torch

clock = time.monotonic


class PhaseClock:
    def __init__(self, device: torch.device, edges: int) -> None:
        self.cuda = device.type == "cuda"
        self.edges = edges
        self._host = [0.0] * edges
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(edges)] if self.cuda else []
        self._n = 0

    def mark(self) -> float:
        """An edge between two parts (the first call of a step is its start); returns the host time."""
        now = clock()
        if self.cuda:
            self._events[self._n].record()
        self._host[self._n] = now
        self._n += 1
        return now

    def since_last(self) -> float:
        """Seconds from the last edge to now (synchronises on CUDA: used by the slow-rank fault only)."""
        if self.cuda:
            now = torch.cuda.Event(enable_timing=True)
            now.record()
            now.synchronize()
            return self._events[self._n - 1].elapsed_time(now) / 1e3
        return clock() - self._host[self._n - 1]

    def finish(self) -> tuple[list[float], float, float]:
        """(durations between consecutive edges, host time of the first edge, host time of the end): on
        CUDA after synchronising on the last edge's event. Resets for the next step."""
        n, self._n = self._n, 0
        if self.cuda:
            self._events[n - 1].synchronize()
            end = clock()
            parts = [self._events[i].elapsed_time(self._events[i + 1]) / 1e3 for i in range(n - 1)]
        else:
            end = self._host[n - 1]
            parts = [self._host[i + 1] - self._host[i] for i in range(n - 1)]
        return parts, self._host[0], end
