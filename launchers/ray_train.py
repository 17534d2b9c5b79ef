"""Ray launcher: Ray Train's TorchTrainer runs the same per-rank loop (scaling/runtime/worker.py) on
num_workers = nodes x nproc Ray workers, in the process group Ray Train sets up, and the run writes
the same results folder as torchrun's.

The Ray driver (ray_driver.py) runs as a child process of the orchestrator, like torchrun's agent:
the same timeout, progress and failure handling apply. It connects to --ray-address, or starts a
local Ray whose session files live in a private temporary folder that is removed afterwards (with
any Ray process still using it). On a remote Ray cluster the results folder must be on a file
system the Ray nodes share.

Several nodes (--nodes N with --ray-address) place the workers across the cluster's nodes: one per
node exactly with --nproc 1 (Ray's STRICT_SPREAD placement), spread best-effort with more (SPREAD).
The record says where each rank ran (launch.placement: host -> ranks).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from typing import TYPE_CHECKING

from trainscale.launchers.base import LaunchResult, Launcher, ProgressCallback, core_facts, run_agent, threads_per_rank
from trainscale.scaling.spec import SpecError

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec

CONNECT_TIMEOUT_S = 3.0
IDENTITY_DIR = ".ray-workers"  # where each Ray worker says where it runs (see ray_driver.py)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.train") is not None


def parse_address(address: str) -> tuple[str, int] | None:
    """host and port of a Ray address ('HOST:PORT' or 'ray://HOST:PORT'); None for 'auto'."""
    if address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("ray", "ray-gcs") or not parts.hostname or port is None:
        raise SpecError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    return parts.hostname, port


def check_reachable(address: str) -> None:
    hostport = parse_address(address)
    if hostport is None:
        return
    try:
        with socket.create_connection(hostport, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise SpecError(f"--ray-address {address} is unreachable ({why}); is the Ray head running there?") from None


class RayLauncher(Launcher):
    name = "ray"
    summary = "Ray Train's TorchTrainer (a local Ray, or --ray-address)"
    engine, engine_label = "ray", "Ray Train FailureConfig(max_failures)"
    places_ranks_here = False  # Ray places its workers (and their GPUs)

    def validate(self, spec: RunSpec) -> None:
        super().validate(spec)
        if not ray_installed():
            raise SpecError("--launcher ray needs Ray Train: pip install 'trainscale[ray]' (with -c constraints.txt)")
        if spec.launch.ray_address:
            check_reachable(spec.launch.ray_address)
        elif spec.nodes > 1:
            raise SpecError(f"--launcher ray with --nodes {spec.nodes} needs --ray-address of a Ray cluster with "
                            f"{spec.nodes} or more nodes (a local Ray is one node)")

    def launch(self, spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
        threads = threads_per_rank(spec.threads_per_rank, spec.world_size)
        # Ray's session folder holds unix sockets (paths of at most 107 bytes): a short private folder.
        session = Path(tempfile.mkdtemp(prefix="ts-ray-"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 writes ~/.ray/auth_token otherwise
        cmd = [sys.executable, "-m", "trainscale.launchers.ray_driver", "--run-dir", str(run_dir),
               "--threads", str(threads), "--session-dir", str(session)]
        try:
            result = run_agent(cmd, env, run_dir, spec.timeout_s, on_progress, log_name="ray-driver.log")
        finally:
            leftovers = _stop_session_processes(session)
            shutil.rmtree(session, ignore_errors=True)
            where = placement(run_dir)
            shutil.rmtree(run_dir / IDENTITY_DIR, ignore_errors=True)  # read into failures.json already
        result.facts = {**core_facts(threads, spec.world_size),
                        "ray_address": spec.launch.ray_address or "local (started for this run)",
                        "num_workers": spec.world_size, "use_gpu": spec.backend == "nccl",
                        "resources_per_worker": resources_per_worker(spec, threads),
                        "placement_strategy": placement_strategy(spec), "placement": where,
                        "leftover_ray_processes_stopped": leftovers, "command": cmd}
        return result


def placement_strategy(spec: RunSpec) -> str:
    """Ray's placement of the worker group: one node's worth packed, one worker per node exactly, or spread."""
    if spec.nodes == 1:
        return "PACK"
    return "STRICT_SPREAD" if spec.nproc == 1 else "SPREAD"


def placement(run_dir: Path) -> dict[str, list[int]]:
    """host -> the ranks that ran there, from what each Ray worker wrote when it started."""
    from trainscale.scaling.results.files import ResultsError, read_json

    hosts: dict[str, list[int]] = {}
    for p in (run_dir / IDENTITY_DIR).glob("rank*.json"):
        try:
            info = read_json(p)
        except ResultsError:
            continue
        hosts.setdefault(str(info.get("host")), []).append(int(info.get("rank", -1)))
    return {h: sorted(r) for h, r in sorted(hosts.items())}


def resources_per_worker(spec: RunSpec, threads: int) -> dict[str, float]:
    res: dict[str, float] = {"CPU": threads}
    if spec.backend == "nccl":
        res["GPU"] = 1
    return res


def _stop_session_processes(session: Path) -> int:
    """Ray processes of this run's private session folder that outlived the driver (a driver killed
    at the timeout cannot shut its local Ray down), found by that folder in their command line."""
    needle = str(session).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
    return len(pids)
