"""A replica group's loop under torchft (launchers/torchft_groups.py): per-step fault tolerance.

Each replica group is one process here (its own torchrun agent, its own world of one). Its Manager
asks the run's Lighthouse, before every step, which groups take part (the quorum); gradients are
averaged over the groups that do, through the Manager's fault-tolerant all-reduce on a gloo group
that the Manager reconfigures when the quorum changes. A step whose all-reduce failed (a peer died in
it) is not committed by anyone: the optimizer skips it and the step is run again by the groups left.
A group that restarts (its agent's --max-restarts) joins the next quorum and heals: it loads the
model, optimizer and step from a healthy peer over HTTP, then trains on.

The step count is the Manager's (committed steps), and each step's batch is chosen by it, so a healed
group reads the batches the others read at that step. Every step's row records who took part
(``participants``), whether it was committed, and whether this group healed before it; the drill's
record (faults/torchft_drill.py) reads these rows. Checkpoints are not written: recovery is from a
live peer.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from trainscale.faults.inject import FaultInjector, restart_count
from trainscale.scaling.results import schema
from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.runtime.events import EventLog, mlc
from trainscale.scaling.runtime.progress_file import ProgressFile
from trainscale.scaling.runtime.recorder import SampleRecorder
from trainscale.scaling.spec import RunSpec
from trainscale.scaling.strategies.base import make_optimizer
from trainscale.workloads.data import sharded_loader
from trainscale.workloads.registry import WORKLOADS

GROUP_ENV = "TRAINSCALE_REPLICA_GROUP"  # this process's replica group (0..GROUPS-1)
GROUPS_ENV = "TRAINSCALE_REPLICA_GROUPS"
ADDRESS_ENV = "TRAINSCALE_FT_ADDR"  # the address this group serves and advertises (its node's)
LIGHTHOUSE_ENV = "TORCHFT_LIGHTHOUSE"
START_BARRIER_S = 120.0
FINISH_WAIT_S = 60.0  # how long a finished group stays in the quorum for groups still restarting
EVENT_HEAL = "ts_torchft_heal"
COLUMNS = ("participants", "committed", "healed", "quorum_s")


def replica_group() -> tuple[int, int] | None:
    """(group, groups) when this process is a torchft replica group, else None."""
    if GROUP_ENV not in os.environ:
        return None
    return int(os.environ[GROUP_ENV]), int(os.environ[GROUPS_ENV])


def group_events_path(run_dir: Path, group: int) -> Path:
    return Path(run_dir) / f"events-group{group}.log"


def params_sha256(model: torch.nn.Module) -> str:
    """One hash of every parameter's bytes, in order: equal hashes are bitwise-equal parameters."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _http_transport(address: str, timeout: datetime.timedelta):
    """torchft's HTTP state transfer, advertising `address` instead of this machine's host name."""
    from torchft.checkpointing.http_transport import HTTPTransport

    class NodeAddressTransport(HTTPTransport):
        def address(self) -> str:
            return f"http://{address}:{self._server.socket.getsockname()[1]}/checkpoint/"

    return NodeAddressTransport(timeout=timeout, num_chunks=0)


def _comm_hook(manager, bucket):
    """The Manager's fault-tolerant all-reduce of one bucket. torchft's own hook asserts when gloo
    reports the peer gone in the middle of it, which kills the surviving group; here the failure is
    left to the Manager (it does not commit the step) and the bucket is handed back as it is."""
    buffer = bucket.buffer()
    manager.allreduce(buffer).wait()  # reports its own errors to the Manager
    done: torch.futures.Future = torch.futures.Future()
    done.set_result(buffer)
    return done


def _start_together(run_dir: Path, group: int, groups: int) -> None:
    """The first attempt of every group starts its first quorum together (the Lighthouse would
    otherwise give the first group a quorum of one and heal the rest from it)."""
    folder = Path(run_dir) / "torchft_ready"
    folder.mkdir(exist_ok=True)
    (folder / f"group{group}").touch()
    deadline = time.monotonic() + START_BARRIER_S
    while len(list(folder.glob("group*"))) < groups:
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica groups did not all start within {START_BARRIER_S:g} s")
        time.sleep(0.05)


def _stay_for_the_others(manager, run_dir: Path, group: int, groups: int) -> float:
    """A group that has finished stays in the quorum until every group has: a group restarting
    after a late fault heals from it to the last step (else it would find no peer and train from
    step 0 alone). At most FINISH_WAIT_S: a group whose agent ran out of restarts never comes."""
    folder = Path(run_dir) / "torchft_done"
    folder.mkdir(exist_ok=True)
    (folder / f"group{group}").touch()
    t0 = time.monotonic()
    while len(list(folder.glob("group*"))) < groups and time.monotonic() - t0 < FINISH_WAIT_S:
        manager.start_quorum()
        time.sleep(0.05)
    return time.monotonic() - t0


def train_replica_group(spec: RunSpec, ctx: DistContext, run_dir: Path, events: EventLog, t_main: float) -> dict:
    from torch.nn.parallel import DistributedDataParallel
    from torchft import Manager, ProcessGroupGloo
    from torchft.optim import OptimizerWrapper
    from torchft.process_group import ProcessGroupDummy

    group, groups = ctx.rank, ctx.world_size
    torch.manual_seed(spec.seed)
    built = WORKLOADS.get(spec.workload).build(spec.model_config(), spec.data, spec.seed,
                                               min_train_samples=spec.steps * spec.global_batch)
    loader = sharded_loader(built.train_set, spec.batch_size, group, groups, spec.seed,
                            workers=spec.data.loader_workers)
    model = built.model
    optimizer = make_optimizer(spec.optim, model.parameters())

    def state_dict() -> dict[str, Any]:
        return {"model": model.state_dict(), "optim": optimizer.state_dict()}

    def load_state_dict(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])

    address = os.environ.get(ADDRESS_ENV, "127.0.0.1")
    timeout = datetime.timedelta(seconds=spec.fault.detect_timeout_s or 30.0)
    store = torch.distributed.TCPStore(address, 0, is_master=True, wait_for_workers=False)
    manager = Manager(pg=ProcessGroupGloo(timeout=timeout), load_state_dict=load_state_dict, state_dict=state_dict,
                      min_replica_size=1, use_async_quorum=False, timeout=timeout, quorum_timeout=timeout * 2,
                      connect_timeout=timeout, rank=0, world_size=1, store_addr=address, store_port=store.port,
                      lighthouse_addr=os.environ[LIGHTHOUSE_ENV], replica_id=f"group{group}", hostname=address,
                      checkpoint_transport=_http_transport(address, timeout))
    # torchft's DDP set-up: a dummy group takes DDP's own start-up collectives; the buckets are
    # never rebuilt (a healed group's would differ); gradients go through the hook.
    ddp = DistributedDataParallel(model, process_group=ProcessGroupDummy(0, 1), find_unused_parameters=True)
    ddp.register_comm_hook(manager, _comm_hook)
    ft_optimizer = OptimizerWrapper(manager, optimizer)
    if restart_count() == 0:
        _start_together(run_dir, group, groups)
    init_s = time.monotonic() - t_main
    events.end(mlc.INIT_STOP)
    events.event(mlc.GLOBAL_BATCH_SIZE, spec.global_batch)
    events.event(mlc.SEED, spec.seed)

    run_start = events.start(mlc.RUN_START, metadata={"replica_group": group, "attempt": restart_count()})
    node = group if spec.nodes > 1 else 0  # on an emulated cluster group G runs on node G
    faults = FaultInjector(spec.fault, group, run_start, group_events_path(run_dir, group), node_rank=node)
    recorder = SampleRecorder(run_dir, group, COLUMNS)
    recorder.FLUSH_EVERY = 1  # a killed group's rows up to its fault are the drill's evidence
    progress = ProgressFile(run_dir, group == 0, spec.steps)
    stream, next_step, committed_steps, healed_at = None, -1, 0, None
    while manager.current_step() < spec.steps:
        t0 = time.monotonic()
        before = manager.current_step()
        ft_optimizer.zero_grad()  # the quorum; a group that joins heals here (synchronous quorum)
        t_quorum = time.monotonic()
        step = manager.current_step()
        healed = step != before
        if healed:
            events.event(EVENT_HEAL, step, metadata={"from_step": before, "quorum_s": t_quorum - t0,
                                                     "quorum_start_mono_s": t0})
            healed_at = step if healed_at is None else healed_at
        if step >= spec.steps:  # healed from a peer that had finished
            break
        faults.before_step(step)
        if step != next_step:  # the first step, a repeat of an uncommitted one, or after a heal
            position = loader.position(step)
            stream = (batch for _epoch, batch in loader.batches(position["epoch"], position["batch"]))
        inputs, targets = next(stream)
        t_data = time.monotonic()
        loss = built.loss_fn(ddp(inputs), targets)
        loss.backward()
        t_compute = time.monotonic()
        participants = manager.num_participants()
        committed = manager.should_commit()
        if committed:
            optimizer.step()
            committed_steps += 1
        t_end = time.monotonic()
        next_step = step + 1 if committed else -1  # an uncommitted step reads its batch again
        recorder.add(step=step, phase=schema.PHASE_WARMUP if step < spec.warmup else schema.PHASE_MEASURED,
                     t_start=t0 - run_start, data_s=t_data - t_quorum, compute_s=t_compute - t_data,
                     optimizer_s=t_end - t_compute, step_s=t_end - t0,
                     samples=len(targets) * built.samples_per_item if committed else 0, loss=loss.detach(),
                     participants=participants, committed=int(committed), healed=int(healed),
                     quorum_s=t_quorum - t0)
        progress.update(manager.current_step(), schema.PHASE_MEASURED)
    run_s = events.end(mlc.RUN_STOP, metadata={"status": "success", "replica_group": group}) - run_start
    recorder.close()
    progress.update(spec.steps, "done", force=True)
    final_sha = params_sha256(model)
    waited = _stay_for_the_others(manager, run_dir, group, groups)
    events.event("ts_torchft_finish_wait", metadata={"waited_s": waited, "replica_group": group})
    manager.shutdown(wait=False)
    return {"init_s": init_s, "run_s": run_s, "sample_unit": built.sample_unit, "device_name": socket.gethostname(),
            "first_step": healed_at or 0, "torchft": {
                "replica_group": group, "replica_groups": groups, "committed_steps": committed_steps,
                "healed_at_step": healed_at, "batches_committed": manager.batches_committed(),
                "final_params_sha256": final_sha, "attempt": restart_count()}}
