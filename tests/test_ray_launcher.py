"""The Ray launcher for real: Ray Train's TorchTrainer with 2 workers running trainscale's per-rank
loop on a local Ray, writing the same results folder as the torchrun path."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trainscale.scaling.results import schema
from .conftest import TINY_RESNET, read_json, run_cli

pytestmark = pytest.mark.slow

ARGS = ["--nproc", "2", "--steps", "6", "--warmup", "2", "--batch-size", "4", *TINY_RESNET]


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)}


def _header(path: Path) -> list[str]:
    with open(path) as f:
        return next(csv.reader(f))


def test_ray_run_with_two_workers_writes_the_torchrun_schema(tmp_path: Path):
    ray = run_cli("run", "--launcher", "ray", *ARGS, "--out", str(tmp_path / "ray"), timeout=540)
    assert ray.returncode == 0, ray.stderr[-3000:]
    local = run_cli("run", "--launcher", "local", *ARGS, "--out", str(tmp_path / "local"), timeout=300)
    assert local.returncode == 0, local.stderr
    ray_dir = Path(ray.stdout.strip().splitlines()[-1])
    local_dir = Path(local.stdout.strip().splitlines()[-1])

    s_ray, s_local = read_json(ray_dir / schema.SUMMARY), read_json(local_dir / schema.SUMMARY)
    assert s_ray["status"] == "ok" and s_ray["launcher"] == "ray" and s_ray["world_size"] == 2
    assert s_ray["launch"]["num_workers"] == 2 and s_ray["launch"]["resources_per_worker"]["CPU"] >= 1
    assert s_ray["launch"]["ray_address"].startswith("local")
    # Same schema: the same files (logs aside), the same summary, metric, sample and rank-info fields.
    assert _files(ray_dir) - {"logs/ray-driver.log"} == _files(local_dir) - {"logs/agent.log"}
    assert set(s_ray) == set(s_local) and set(s_ray["metrics"]) == set(s_local["metrics"])
    for rank in (0, 1):
        assert _header(schema.samples_path(ray_dir, rank)) == _header(schema.samples_path(local_dir, rank))
        assert set(read_json(schema.rank_info_path(ray_dir, rank))) == \
            set(read_json(schema.rank_info_path(local_dir, rank)))
    assert s_ray["metrics"]["measured_steps"] == s_local["metrics"]["measured_steps"] == 4
    events = (ray_dir / schema.EVENTS).read_text()
    assert '"key": "run_stop"' in events and '"status": "success"' in events
    prov = read_json(ray_dir / schema.PROVENANCE)
    assert prov["versions"]["ray"] and {r["rank"] for r in prov["ranks"]} == {0, 1}
    # The local Ray started for the run is gone, and its session folder with it.
    assert s_ray["launch"]["leftover_ray_processes_stopped"] == 0


def test_ray_run_on_an_existing_ray_cluster_by_address(tmp_path: Path):
    """--ray-address: the run joins a Ray head started beforehand (as on a real Ray cluster)."""
    import os
    import socket
    import subprocess
    import sys

    from trainscale.launchers.ray_train import _stop_session_processes

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = Path(f"/tmp/ts-ray-test-{os.getpid()}")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = Path(sys.executable).parent / "ray"
    try:
        head = subprocess.run([str(ray_cli), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                               "--num-cpus=2", f"--temp-dir={session}", "--include-dashboard=false"],
                              capture_output=True, text=True, env=env, timeout=240)
        assert head.returncode == 0, head.stderr[-2000:]
        proc = run_cli("run", "--launcher", "ray", "--ray-address", f"127.0.0.1:{port}", *ARGS,
                       "--out", str(tmp_path), timeout=540)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = read_json(Path(proc.stdout.strip().splitlines()[-1]) / schema.SUMMARY)
        assert summary["status"] == "ok" and summary["launch"]["ray_address"] == f"127.0.0.1:{port}"
        assert summary["world_size"] == 2 and summary["metrics"]["measured_steps"] == 4
    finally:
        _stop_session_processes(session)  # only the processes of this head (its session folder)
        import shutil

        shutil.rmtree(session, ignore_errors=True)
