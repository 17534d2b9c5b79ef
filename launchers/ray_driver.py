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

from trainscale.launchers.ownership import PARENT_PID_ENV
from trainscale.launchers.ownership import die_with_parent
from trainscale.launchers.ray_train import IDENTITY_DIR

FORWARDED_ENV = ("GLOO_", "NCCL_", "TORCH_NCCL_")  # prefixes of the variables every Ray worker gets


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


def controller_failure(message: str) -> dict:
    """A failure of the run as a whole (no rank), in the agent's record layout."""
    return {"rank": -1, "local_rank": None, "pid": None, "exitcode": None, "signal": None, "message": message,
            "timestamp": int(time.time()), "host": "ray controller"}


def failure_records(run_dir: Path, err: Exception) -> list[dict]:
    from ray.train import WorkerGroupError

    identities = {}
    for p in (run_dir / IDENTITY_DIR).glob("rank*.json"):
        info = read_json(p)
        identities[info["rank"]] = info
    if not isinstance(err, WorkerGroupError):
        return [controller_failure(f"{type(err).__name__}: "
                                   f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}")]
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

    from trainscale.launchers.ray_train import placement_strategy, resources_per_worker
    from trainscale.launchers.base import order_failures
    from trainscale.scaling.spec import from_dict
    from trainscale.scaling.provenance import usable_cores

    run_dir: Path = args.run_dir.resolve()
    spec = from_dict(read_json(run_dir / schema.CONFIG))
    t0 = time.monotonic()
    # The workers start from their Ray node's environment, not this one: the network settings of the
    # collectives (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME, NCCL_IB_HCA ...) given here go with them.
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    runtime_env = {"env_vars": forwarded} if forwarded else None
    if spec.launch.ray_address:
        ray.init(address=spec.launch.ray_address, include_dashboard=False, runtime_env=runtime_env)
    else:
        ray.init(_temp_dir=str(args.session_dir), include_dashboard=False, runtime_env=runtime_env,
                 num_cpus=max(usable_cores(), spec.world_size * args.threads))
    print(f"trainscale: ray.init took {time.monotonic() - t0:.2f} s; cluster resources {ray.cluster_resources()}",
          flush=True)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) < spec.nodes:
        message = (f"the Ray cluster at {spec.launch.ray_address} has {len(alive)} alive node(s); "
                   f"--nodes {spec.nodes} needs {spec.nodes}")
        write_json_atomic(run_dir / schema.FAILURES, {"failures": [controller_failure(message)]})
        print(f"trainscale: {message}", file=sys.stderr, flush=True)
        ray.shutdown()
        return 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_dir": str(run_dir), "threads": args.threads},
        scaling_config=ScalingConfig(num_workers=spec.world_size, use_gpu=spec.backend == "nccl",
                                     resources_per_worker=resources_per_worker(spec, args.threads),
                                     placement_strategy=placement_strategy(spec)),
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
