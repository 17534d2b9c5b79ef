"""Provenance (docs/method.md): what made a result, recorded with every run.

``host_facts`` runs on every rank (hostnames, CPUs, memory per node); ``collect`` runs once in the
orchestrating process and adds versions, git commit, config, environment and time.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENV_PREFIXES = ("NCCL_", "GLOO_", "TORCH_", "SLURM_", "CUDA_", "RAY_", "TORCHELASTIC_")
ENV_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE",
             "LOCAL_WORLD_SIZE", "HOSTNAME")


def _version(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_addresses() -> list[str]:
    """IPv4 addresses of this host's interfaces (one per network namespace on emulated nodes)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=5)
        return sorted({line.split()[3].split("/")[0] for line in out.stdout.splitlines() if len(line.split()) > 3})
    except (OSError, subprocess.SubprocessError):
        return []


def gpu_facts() -> dict[str, Any]:
    """GPU model, driver, clocks and power limit through NVML; 'unavailable' with the reason if none."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return {"available": False, "reason": f"NVML unavailable: {e}"}
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            devices.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_bytes": pynvml.nvmlDeviceGetMemoryInfo(h).total,
                "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
                "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
            })
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {"available": True, "driver": driver.decode() if isinstance(driver, bytes) else driver,
                "devices": devices}
    except pynvml.NVMLError as e:
        return {"available": False, "reason": f"NVML query failed: {e}"}
    finally:
        pynvml.nvmlShutdown()


def host_facts() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        # Slurm's name for the node (several slurmd may share one host); else the hostname.
        "node_name": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "addresses": host_addresses(),
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_bytes": memory_bytes(),
    }


def relevant_env() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items())
            if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}


def git_commit() -> dict[str, Any]:
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def versions() -> dict[str, Any]:
    import torch

    nccl = None
    if torch.cuda.is_available():
        try:
            nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except (AttributeError, RuntimeError):
            nccl = None
    return {
        "trainscale": _version("trainscale"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl,
        "gloo": f"bundled with torch {torch.__version__}" if torch.distributed.is_gloo_available() else None,
        "numpy": _version("numpy"),
        "deepspeed": _version("deepspeed"),
        "ray": _version("ray"),
        "mlperf_logging": _version("mlperf-logging"),
    }


def collect(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "git": git_commit(),
        "config": config,
        "seed": config.get("seed"),
        "backend": config.get("backend"),
        "launcher": config.get("launcher"),
        "world_size": int(config["nproc"]) * int(config["nodes"]),
        "node_layout": {"nodes": config["nodes"], "procs_per_node": config["nproc"]},
        "data": {"kind": config["data"]["kind"], "path": config["data"]["path"] or None},
        "orchestrator_host": host_facts(),
        "gpu": gpu_facts(),
        "env": relevant_env(),
        "platform": platform.platform(),
    }
