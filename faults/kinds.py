"""The fault kinds a rank injects into itself (``fault.kind``, ``trainscale drill --fault``), one class
each: what it does when it fires, what it needs of the run, and its capability row.

  exception     the rank raises (a software crash: the error text reaches the run record)
  kill-rank     the rank SIGKILLs itself (a hard crash: no error text, only the signal)
  kill-node     every rank of node fault.node SIGKILLs itself at the same step (a node lost; its agent lives)
  lose-node     (emulated clusters) node fault.node is gone for good: its torchrun agent and every rank on
                it are SIGKILLed; the job goes on with the nodes left (an elastic --nnodes MIN:N rendezvous)
                and restores the checkpoint at the smaller world size
  hang          the rank SIGSTOPs itself: it stays alive but never answers; its peers find out only
                when a collective times out (fault.detect_timeout_s sets the process group's timeout)
  partition     (emulated clusters) the rank takes its node's link down (inside the node's namespace)
                for fault.partition_s seconds; a detached process brings it up again. Its peers'
                collectives time out (fault.detect_timeout_s) and the group restarts once the link is back
  slow          a straggler: from the fault on, the rank sleeps (slow_factor - 1) x its own compute
                time after each step's forward/backward, as a device slow_factor times slower would
  ckpt-corrupt  the rank truncates the newest complete checkpoint, then SIGKILLs itself: the restart
                must fall back to the checkpoint before

The injector (faults/inject.py) decides when a fault fires and records it; the kind does the rest.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from trainscale.scaling.results.registry import Registry

if TYPE_CHECKING:
    from trainscale.faults.inject import FaultInjector
    from trainscale.scaling.spec import RunSpec

NO_FAULT = "none"
ALL_ENGINES = ("torchrun", "ray", "slurm")  # the restart engines of drills (launchers' `engine`, Slurm requeue)
TORCHFT = "torchft"  # per-step fault tolerance: a lost replica group restarts and heals from a live one


class InjectedFault(RuntimeError):
    pass


class FaultKind:
    name: str = ""
    summary: str = ""
    targets_node: bool = False  # every rank of fault.node fires (else the rank fault.rank)
    stops_rank: bool = True  # the rank is gone: the job restarts and recovers (the recovery timeline)
    straggler: bool = False  # the rank goes on, slower: the drill measures it as a straggler
    detect_timeout_s: float = 0.0  # a drill's default collective timeout (0: the process group's own)
    engines: tuple[str, ...] = ALL_ENGINES  # recovery engines that can recover it
    shrinks_world: bool = False  # the job goes on with fewer nodes (an elastic rendezvous)

    def validate(self, spec: RunSpec) -> None:
        """ValueError naming the value when the run cannot have this fault."""
        f = spec.fault
        if not 0 <= f.rank < spec.world_size:
            raise ValueError(f"fault.rank must be a rank of the run (0..{spec.world_size - 1}), got {f.rank}")
        if spec.is_tta:
            if f.at_step < 0:
                raise ValueError(f"fault.at_step must be 0 or more, got {f.at_step}")
        elif not 0 <= f.at_step < spec.steps:
            raise ValueError(f"fault.at_step must be a step of the run (0..{spec.steps - 1}), got {f.at_step}")

    def engine_refusal(self, spec: RunSpec, engine: str) -> str | None:
        """Why `engine`, though in this kind's engines row, cannot recover it in this run's shape
        (None: it can)."""
        return None

    def ready(self, injector: FaultInjector) -> bool:
        """Whether the fault can fire now that it is due (else it fires at the first step it can)."""
        return True

    def prepare(self, injector: FaultInjector, step: int) -> dict[str, Any]:
        """Done before the fault is logged; what the ts_fault event records beyond kind, rank and step."""
        return {}

    def fire(self, injector: FaultInjector, step: int) -> None:
        raise NotImplementedError

    def after_compute(self, injector: FaultInjector, step: int, compute_s: float) -> float:
        """Seconds slept after a step's compute that took compute_s (stragglers only)."""
        return 0.0


def _signal_self(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)


class RaiseException(FaultKind):
    name = "exception"
    engines = (*ALL_ENGINES, TORCHFT)
    summary = "a rank raises"

    def fire(self, injector, step):
        raise InjectedFault(f"injected exception on rank {injector.rank} at step {step}")


class KillRank(FaultKind):
    name = "kill-rank"
    engines = (*ALL_ENGINES, TORCHFT)
    summary = "SIGKILL a rank"

    def fire(self, injector, step):
        _signal_self(signal.SIGKILL)


class KillNode(FaultKind):
    name = "kill-node"
    summary = "every rank of one node SIGKILLs itself (its agent lives)"
    targets_node = True
    engines = (*ALL_ENGINES, TORCHFT)  # torchft: on an emulated cluster, where each node is a replica group

    def validate(self, spec):
        super().validate(spec)
        if not 0 <= spec.fault.node < spec.nodes:
            raise ValueError(f"fault.node must be a node of the run (0..{spec.nodes - 1}), got {spec.fault.node}")

    def engine_refusal(self, spec, engine):
        if engine == TORCHFT and spec.nodes == 1:
            return ("--launcher torchft on this machine has every replica group on node 0: a kill-node fault "
                    "would leave no live group to heal from (run it on an emulated cluster, --nodes 2 or more)")
        return None

    def fire(self, injector, step):
        _signal_self(signal.SIGKILL)


class LoseNode(FaultKind):
    name = "lose-node"
    summary = "a node is gone: its agent and ranks SIGKILLed; the job goes on with fewer nodes"
    targets_node = True
    engines = ("torchrun",)  # torchrun's elastic rendezvous (--nnodes MIN:N); Ray and Slurm replace the node
    shrinks_world = True

    def validate(self, spec):
        super().validate(spec)
        if spec.nodes < 2:
            raise ValueError(f"fault.kind 'lose-node' takes a node away for good: it needs --nodes 2 or more, "
                             f"got --nodes {spec.nodes}")
        if not 1 <= spec.fault.node < spec.nodes:
            raise ValueError(f"fault.kind 'lose-node': fault.node must be 1..{spec.nodes - 1} (node 0's agent hosts "
                             f"the rendezvous, without which no node can go on), got {spec.fault.node}")
        if not spec.checkpoint.enabled:
            raise ValueError("fault.kind 'lose-node' needs checkpoints (checkpoint.every_steps or every_s): "
                             "the nodes left restore one")
        from trainscale.scaling.strategies.registry import STRATEGIES

        if STRATEGIES.get(spec.parallel).native_checkpoints:
            raise ValueError(f"fault.kind 'lose-node' restores at a smaller world size, which parallel "
                             f"{spec.parallel!r} (DeepSpeed's own checkpoints) cannot")

    def fire(self, injector, step):
        # The worker's parent is its node's torchrun agent. The node's other ranks die with it
        # (their parent-death signal), as they would with the machine.
        os.kill(os.getppid(), signal.SIGKILL)
        _signal_self(signal.SIGKILL)


class Hang(FaultKind):
    name = "hang"
    summary = "SIGSTOP a rank (found by the collective timeout)"
    detect_timeout_s = 10.0
    engines = ("torchrun", "slurm")  # Ray Train has no stopped-worker handling here

    def fire(self, injector, step):
        _signal_self(signal.SIGSTOP)


class Partition(FaultKind):
    name = "partition"
    summary = "a rank takes its emulated node's link down for --partition-s"
    detect_timeout_s = 10.0
    engines = (*ALL_ENGINES, TORCHFT)

    def validate(self, spec):
        super().validate(spec)
        if spec.nodes < 2:
            raise ValueError(f"fault.kind 'partition' cuts a node's link: it needs an emulated cluster (--nodes > 1), "
                             f"got --nodes {spec.nodes}")
        if spec.fault.partition_s <= 0:
            raise ValueError(f"fault.partition_s must be positive, got {spec.fault.partition_s}")

    def prepare(self, injector, step):
        return {"interface": os.environ.get("GLOO_SOCKET_IFNAME", ""), "partition_s": injector.fault.partition_s}

    def fire(self, injector, step):
        iface = os.environ.get("GLOO_SOCKET_IFNAME", "")
        if not iface:
            raise InjectedFault("partition needs an emulated cluster node (no GLOO_SOCKET_IFNAME)")
        # The healer outlives this rank (its own session: the agent's kill of the group misses it); its
        # arguments name the run folder, so the launch's supervisor stops it when the launch ends (and
        # then brings the links up itself).
        heal = ("import subprocess, sys, time; time.sleep(float(sys.argv[1])); "
                "subprocess.run(['ip', 'link', 'set', 'dev', sys.argv[2], 'up'])")
        subprocess.Popen([sys.executable, "-c", heal, str(float(injector.fault.partition_s)), iface,
                          str(injector.run_dir)], start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "set", "dev", iface, "down"], check=True, timeout=10)


class Slow(FaultKind):
    name = "slow"
    summary = "a straggler rank, slower by --slow-factor from the fault on (no restart)"
    stops_rank = False
    straggler = True
    engines = ("torchrun", "ray")  # nothing to recover: a Slurm requeue drill needs a fault that stops the run

    def validate(self, spec):
        super().validate(spec)
        if spec.fault.slow_factor < 1:
            raise ValueError(f"fault.slow_factor must be at least 1, got {spec.fault.slow_factor}")

    def fire(self, injector, step):
        injector.slow_from = step

    def after_compute(self, injector, step, compute_s):
        if injector.slow_from is None or step < injector.slow_from or injector.fault.slow_factor <= 1:
            return 0.0
        delay = (injector.fault.slow_factor - 1.0) * compute_s
        time.sleep(delay)
        return delay


class CheckpointCorrupt(FaultKind):
    name = "ckpt-corrupt"
    summary = "truncate the newest checkpoint, then SIGKILL"

    def validate(self, spec):
        super().validate(spec)
        c, f = spec.checkpoint, spec.fault
        if not c.enabled:
            raise ValueError("fault.kind 'ckpt-corrupt' needs checkpoints (checkpoint.every_steps or checkpoint.every_s)")
        if c.keep < 2:
            raise ValueError(f"fault.kind 'ckpt-corrupt' needs checkpoint.keep >= 2 to fall back, got {c.keep}")
        # It corrupts a checkpoint that exists: one must be written before the step it fires at.
        if f.at_time_s >= 0 or not c.every_steps:
            raise ValueError("fault.kind 'ckpt-corrupt' fires at a step (--at-step) after the first checkpoint by "
                             "steps (checkpoint.every_steps): a time cannot be checked against when checkpoints exist")
        if f.at_step < c.every_steps:
            raise ValueError(f"fault.kind 'ckpt-corrupt' at step {f.at_step} fires before the first checkpoint "
                             f"(written after step {c.every_steps}, checkpoint.every_steps): no checkpoint to corrupt")

    def ready(self, injector):
        """An asynchronous save may complete a little after its step: the fault waits for it."""
        from trainscale.faults.checkpoint_store import newest_complete

        return injector.checkpoint_root is not None and newest_complete(injector.checkpoint_root) is not None

    def prepare(self, injector, step):
        from trainscale.faults.checkpoint_store import corrupt_newest

        return {"corrupted": corrupt_newest(injector.checkpoint_root)}

    def fire(self, injector, step):
        _signal_self(signal.SIGKILL)


FAULT_KINDS: Registry[FaultKind] = Registry("fault.kind", [
    RaiseException(), KillRank(), KillNode(), LoseNode(), Slow(), Hang(), CheckpointCorrupt(), Partition()])
