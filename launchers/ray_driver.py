"""The Ray driver of one run (started by ray_train.launch):

    python -m trainscale.launchers.ray_driver --run-dir DIR --threads T --session-dir S

Connects to the run's --ray-address or starts a local Ray (session files in S), fits a Ray Train
TorchTrainer whose workers run trainscale's per-rank loop, and on failure writes DIR/failures.json
in the same layout as torchrun's agent (rank, host, reason), taken from Ray's WorkerGroupError.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from pathlib import Path

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json, write_json_atomic

from trainscale.launchers.base import PARENT_PID_ENV
from trainscale.launchers.ownership import die_with_parent
from trainscale.launchers.ray_train import IDENTITY_DIR


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: the process group is Ray's; the loop is trainscale's."""
    t_main = time.monotonic()
    import ray.train
    import torch

    ctx = ray.train.get_context()
    run_dir = Path(config["run_dir"])
    # trainscale's rank context reads torchrun's variable names; Ray sets RANK/LOCAL_RANK/NODE_RANK.
    os.environ["GROUP_RANK"] = str(ctx.get_node_rank())
    os.environ["OMP_NUM_THREADS"] = str(config["threads"])
    torch.set_num_threads(int(config["threads"]))
    write_json_atomic(run_dir / IDENTITY_DIR / f"rank{ctx.get_world_rank()}.json", {
        "rank": ctx.get_world_rank(), "local_rank": ctx.get_local_rank(), "node_rank": ctx.get_node_rank(),
        "host": socket.gethostname(), "pid": os.getpid()})
    from trainscale.scaling.runtime.worker import run_rank

    run_rank(run_dir, t_main=t_main, startup_s=None)


def failure_records(run_dir: Path, err: Exception) -> list[dict]:
    from ray.train import WorkerGroupError

    identities = {}
    for p in (run_dir / IDENTITY_DIR).glob("rank*.json"):
        info = read_json(p)
        identities[info["rank"]] = info
    if not isinstance(err, WorkerGroupError):
        return [{"rank": -1, "local_rank": None, "pid": None, "exitcode": None, "signal": None,
                 "message": f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}",
                 "timestamp": int(time.time()), "host": "ray controller"}]
    records = []
    for rank, exc in sorted(err.worker_failures.items()):
        who = identities.get(rank, {})
        text = str(exc).strip()
        message = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
        records.append({"rank": int(rank), "local_rank": who.get("local_rank"), "pid": who.get("pid"),
                        "exitcode": None, "signal": None, "message": message, "timestamp": int(time.time()),
                        "host": who.get("host", "unknown ray node")})
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainscale.launchers.ray_driver")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--threads", required=True, type=int)
    parser.add_argument("--session-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    # The driver ends (and shuts its Ray down) when the trainscale process that started it does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if os.environ.get(PARENT_PID_ENV, "").isdigit():
        die_with_parent(signal.SIGTERM, int(os.environ[PARENT_PID_ENV]))

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainscale.launchers.ray_train import resources_per_worker
    from trainscale.launchers.base import order_failures
    from trainscale.scaling.spec import from_dict
    from trainscale.scaling.provenance import usable_cores

    run_dir: Path = args.run_dir.resolve()
    spec = from_dict(read_json(run_dir / schema.CONFIG))
    t0 = time.monotonic()
    if spec.launch.ray_address:
        ray.init(address=spec.launch.ray_address, include_dashboard=False)
    else:
        ray.init(_temp_dir=str(args.session_dir), include_dashboard=False,
                 num_cpus=max(usable_cores(), spec.world_size * args.threads))
    print(f"trainscale: ray.init took {time.monotonic() - t0:.2f} s; cluster resources {ray.cluster_resources()}",
          flush=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_dir": str(run_dir), "threads": args.threads},
        scaling_config=ScalingConfig(num_workers=spec.world_size, use_gpu=spec.backend == "nccl",
                                     resources_per_worker=resources_per_worker(spec, args.threads)),
        torch_config=TorchConfig(backend=spec.backend, timeout_s=int(min(spec.timeout_s, 1800))),
        run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir / ".ray"),
                             failure_config=FailureConfig(max_failures=spec.launch.max_restarts)),
    )
    try:
        trainer.fit()
        return 0
    except Exception as err:  # Ray's TrainingFailedError and friends: recorded, not re-raised
        write_json_atomic(run_dir / schema.FAILURES, {"failures": order_failures(failure_records(run_dir, err))})
        print(f"trainscale: Ray Train failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
