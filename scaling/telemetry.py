"""GPU telemetry through NVML (nvidia-ml-py), sampled in a background thread, one sampler per node.

Samples utilisation, memory, power, clocks, temperature and clock-event (throttle) reasons of every
visible GPU; ``mark()`` reads the cumulative energy counters at a point in time (e.g. the edges of
the measured window) so energy per window comes from NVML's own counter. Without NVML (CPU runs)
nothing fails: ``status()`` says "no GPU telemetry" with the reason.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

THREAT_REASONS = {  # clock-event reasons that mean the GPU ran slower than it could
    "nvmlClocksEventReasonSwPowerCap": "software power cap",
    "nvmlClocksEventReasonHwSlowdown": "hardware slowdown",
    "nvmlClocksEventReasonSwThermalSlowdown": "software thermal slowdown",
    "nvmlClocksEventReasonHwThermalSlowdown": "hardware thermal slowdown",
    "nvmlClocksEventReasonHwPowerBrakeSlowdown": "hardware power brake",
}


@dataclass
class GpuSample:
    t: float  # monotonic seconds on this node
    gpu: int
    util_pct: float | None
    mem_util_pct: float | None
    mem_used_bytes: int | None
    power_w: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    temp_c: float | None
    clock_event_mask: int | None
    energy_mj: int | None  # NVML total energy since driver load; None where unsupported


@dataclass
class Mark:
    label: str
    t: float
    energy_mj: dict[int, int | None]


def _nvml():
    import pynvml

    return pynvml


def status() -> dict[str, Any]:
    """{"available": bool, "reason": str, "gpus": n}; never raises."""
    try:
        nv = _nvml()
    except ImportError:
        return {"available": False, "reason": "no GPU telemetry: nvidia-ml-py is not installed", "gpus": 0}
    try:
        nv.nvmlInit()
    except nv.NVMLError as e:
        return {"available": False, "reason": f"no GPU telemetry: NVML unavailable ({e})", "gpus": 0}
    try:
        n = nv.nvmlDeviceGetCount()
    finally:
        nv.nvmlShutdown()
    if n == 0:
        return {"available": False, "reason": "no GPU telemetry: NVML sees no GPU", "gpus": 0}
    return {"available": True, "reason": "", "gpus": n}


def _try(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:  # an unsupported query on this GPU: record None, keep sampling
        return default


class GpuTelemetry:
    """Background sampler of every GPU NVML sees on this node."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.samples: list[GpuSample] = []
        self.marks: list[Mark] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nv = _nvml()
        self._nv.nvmlInit()
        self._handles = [self._nv.nvmlDeviceGetHandleByIndex(i) for i in range(self._nv.nvmlDeviceGetCount())]

    def _energy(self, h) -> int | None:
        return _try(self._nv.nvmlDeviceGetTotalEnergyConsumption, h)

    def sample_once(self) -> None:
        nv, t = self._nv, time.monotonic()
        for i, h in enumerate(self._handles):
            util = _try(nv.nvmlDeviceGetUtilizationRates, h)
            mem = _try(nv.nvmlDeviceGetMemoryInfo, h)
            power = _try(nv.nvmlDeviceGetPowerUsage, h)
            self.samples.append(GpuSample(
                t=t, gpu=i,
                util_pct=util.gpu if util else None, mem_util_pct=util.memory if util else None,
                mem_used_bytes=mem.used if mem else None, power_w=power / 1000.0 if power is not None else None,
                sm_clock_mhz=_try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                mem_clock_mhz=_try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
                temp_c=_try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
                clock_event_mask=_try(nv.nvmlDeviceGetCurrentClocksEventReasons, h),
                energy_mj=self._energy(h),
            ))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(self.interval_s)

    def start(self) -> "GpuTelemetry":
        self._thread = threading.Thread(target=self._loop, name="trainscale-nvml", daemon=True)
        self._thread.start()
        return self

    def mark(self, label: str) -> Mark:
        m = Mark(label, time.monotonic(), {i: self._energy(h) for i, h in enumerate(self._handles)})
        self.marks.append(m)
        return m

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._nv.nvmlShutdown()

    def other_processes(self, our_pids: set[int]) -> list[dict[str, Any]]:
        """Compute processes on our GPUs that are not ours: a threat to the measurement."""
        self._nv.nvmlInit()
        try:
            found = []
            for i, h in enumerate(self._handles):
                for p in _try(self._nv.nvmlDeviceGetComputeRunningProcesses, h, default=[]) or []:
                    if p.pid not in our_pids:
                        found.append({"gpu": i, "pid": p.pid, "used_memory_bytes": p.usedGpuMemory})
            return found
        finally:
            self._nv.nvmlShutdown()

    def threat_reasons(self) -> dict[str, float]:
        """Share of samples in which each slowdown reason was active."""
        nv = self._nv
        masks = [s.clock_event_mask for s in self.samples if s.clock_event_mask is not None]
        out = {}
        for attr, label in THREAT_REASONS.items():
            bit = getattr(nv, attr, None)
            if bit and masks:
                share = sum(1 for m in masks if m & bit) / len(masks)
                if share > 0:
                    out[label] = share
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"samples": [asdict(s) for s in self.samples], "marks": [asdict(m) for m in self.marks]}
