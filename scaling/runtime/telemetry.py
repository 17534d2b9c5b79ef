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
from pathlib import Path
from typing import Any, Iterable

from trainscale.scaling.results.records import GpuSample

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _uuid_key(uuid: Any) -> str:
    return _text(uuid).lower().removeprefix("gpu-")


def nvml_indices(cuda_devices: Iterable[int]) -> list[int]:
    """NVML's index of each CUDA device of this process. CUDA numbers the visible GPUs from 0
    (CUDA_VISIBLE_DEVICES) in CUDA_DEVICE_ORDER, NVML all of the node's GPUs in PCI order: matched by
    UUID, else through torch's own CUDA_VISIBLE_DEVICES parsing."""
    import torch

    nv = _nvml()
    nv.nvmlInit()
    try:
        by_uuid = {_uuid_key(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))): i
                   for i in range(nv.nvmlDeviceGetCount())}
    finally:
        nv.nvmlShutdown()
    out = []
    for d in cuda_devices:
        key = _uuid_key(torch.cuda.get_device_properties(d).uuid)
        out.append(by_uuid[key] if key in by_uuid else torch.cuda._get_nvml_device_index(d))
    return out


class GpuTelemetry:
    """Background sampler of the node's GPUs (all NVML sees, or the NVML indices given); sample and
    mark ``gpu`` fields count those GPUs from 0 in the given order."""

    def __init__(self, interval_s: float = 0.1, indices: list[int] | None = None) -> None:
        self.interval_s = interval_s
        self.samples: list[GpuSample] = []
        self.marks: list[Mark] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nv = _nvml()
        self._nv.nvmlInit()
        if indices is None:
            indices = list(range(self._nv.nvmlDeviceGetCount()))
        self.indices = list(indices)
        self._handles = [self._nv.nvmlDeviceGetHandleByIndex(i) for i in self.indices]

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
        self.devices_snapshot = self.devices()  # names, limits; read before NVML is shut down at stop()
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

    def processes(self) -> list[dict[str, Any]]:
        """Compute and graphics processes on the sampled GPUs, as NVML reports them."""
        self._nv.nvmlInit()
        try:
            found = []
            for i, h in enumerate(self._handles):
                for query in (self._nv.nvmlDeviceGetComputeRunningProcesses,
                              self._nv.nvmlDeviceGetGraphicsRunningProcesses):
                    for p in _try(query, h, default=[]) or []:
                        found.append({"gpu": i, "pid": p.pid, "used_memory_bytes": p.usedGpuMemory})
            return found
        finally:
            self._nv.nvmlShutdown()

    def other_processes(self, our_pids: set[int]) -> list[dict[str, Any]]:
        """Processes on our GPUs that are not ours: a threat to the measurement."""
        return [p for p in self.processes() if p["pid"] not in our_pids]

    def devices(self) -> list[dict[str, Any]]:
        nv = self._nv
        return [{"gpu": i, "nvml_index": self.indices[i], "name": _text(_try(nv.nvmlDeviceGetName, h, default="?")),
                 "uuid": _text(_try(nv.nvmlDeviceGetUUID, h, default="?")),
                 "power_limit_w": (lambda w: w / 1000.0 if w is not None else None)(
                     _try(nv.nvmlDeviceGetPowerManagementLimit, h)),
                 "max_sm_clock_mhz": _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
                 "energy_counter": self._energy(h) is not None}
                for i, h in enumerate(self._handles)]

    def to_dict(self) -> dict[str, Any]:
        return {"samples": [asdict(s) for s in self.samples], "marks": [asdict(m) for m in self.marks]}


class NodeTelemetry:
    """One run's GPU telemetry on one node: local rank 0 samples the GPUs of the node's ranks (CUDA
    devices 0..local_world_size-1), marks the run's edges (run_start, window_start, run_stop) with the
    energy counters and the GPU processes, and at the end writes telemetry/nodeNNNNN.csv (every sample)
    and telemetry/nodeNNNNN.json (GPUs, marks, processes, energy per window and throttling from
    trainscale.analysis.gpu_telemetry). Without a GPU it writes the JSON saying "no GPU telemetry" and
    why. Other local ranks do nothing."""

    def __init__(self, writer: bool, node_rank: int, reason: str = "", sampler: GpuTelemetry | None = None,
                 interval_s: float = 0.0) -> None:
        self.writer, self.node_rank, self.reason, self.sampler = writer, node_rank, reason, sampler
        self.interval_s = interval_s
        self.processes: dict[str, list[dict[str, Any]]] = {}
        self.started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    @classmethod
    def start(cls, spec, ctx) -> "NodeTelemetry":
        if ctx.local_rank != 0:
            return cls(False, ctx.node_rank)
        cfg = spec.telemetry
        if not cfg.enabled:
            return cls(True, ctx.node_rank, "no GPU telemetry: telemetry.enabled is false")
        if ctx.device.type != "cuda":
            return cls(True, ctx.node_rank, f"no GPU telemetry: backend {ctx.backend} runs on CPUs")
        st = status()
        if not st["available"]:
            return cls(True, ctx.node_rank, st["reason"])
        try:
            sampler = GpuTelemetry(cfg.interval_s, nvml_indices(range(ctx.local_world_size))).start()
        except Exception as e:  # NVML answered status() but not the set-up: record why, keep training
            return cls(True, ctx.node_rank, f"no GPU telemetry: NVML set-up failed ({e})")
        return cls(True, ctx.node_rank, "", sampler, cfg.interval_s)

    @property
    def active(self) -> bool:
        return self.sampler is not None

    def mark(self, label: str) -> None:
        if self.sampler is not None:
            self.sampler.mark(label)
            self.processes[label] = self.sampler.processes()

    def finish(self, run_dir: Path) -> None:
        """Stop sampling and write this node's files (local rank 0 only)."""
        if not self.writer:
            return
        import socket

        from trainscale.analysis import gpu_telemetry

        from trainscale.scaling.results import schema
        from trainscale.scaling.results.files import write_json_atomic

        record: dict[str, Any] = {"node_rank": self.node_rank, "hostname": socket.gethostname(),
                                  "available": self.active, "reason": self.reason, "started_utc": self.started_utc}
        csv_path, json_path = schema.telemetry_paths(run_dir, self.node_rank)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        if self.sampler is not None:
            self.sampler.stop()
            rows = [asdict(s) for s in self.sampler.samples]
            gpu_telemetry.write_samples(csv_path, rows)
            record.update(interval_s=self.interval_s, gpus=self.sampler.devices_snapshot,
                          marks=[asdict(m) for m in self.sampler.marks], processes=self.processes,
                          samples_file=csv_path.name)
            record.update(gpu_telemetry.node_figures(record, gpu_telemetry.columns(rows)))
        write_json_atomic(json_path, record)
