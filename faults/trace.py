"""A failure trace: N faults drawn as a Poisson process in run time, each with a kind, a target and a
time; written as fault_trace.json in the run folder and replayed exactly from it (``--trace FILE``).

Draw: the gaps between faults are exponential with mean mtbf_s (a Poisson process of rate 1/mtbf_s),
the kinds come from a weighted mix, and the target of each fault is a uniform rank (rank faults) or
node (node faults); all from one numpy generator seeded with the trace's seed, in that order, so a
seed gives the same trace on any machine.

Default mix: the root causes of the 419 unexpected interruptions of Llama 3 405B pre-training (54 days
on 16,384 H100 GPUs; "The Llama 3 Herd of Models", Meta, 2024, table 5), mapped onto the fault kinds
this tool can inject (docs/failure-campaigns.md has the table and the mapping):

  kill-rank  268  GPU faults: faulty GPU 148, HBM3 memory 72, SRAM memory 19, system processor 17,
                  silent data corruption 6, thermal interface and sensor 6 (the GPU's process dies)
  kill-node   53  host faults: unplanned host maintenance 32, NIC 7, SSD 3, power supply 3, server
                  chassis 2, IO expansion board 2, CPU 2, system memory 2 (the whole node is lost)
  exception   56  software: software bugs 54, dependencies 2 (the rank raises)
  partition   35  network switches and cables (the node's link goes down; emulated clusters only,
                  else counted as kill-node: a node cut off from its peers is lost to the job)
  hang         7  NCCL watchdog timeouts (the rank stops answering; found by the collective timeout)
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from trainscale.scaling.spec import SpecError

TRACE_FILE = "fault_trace.json"
TRACE_KINDS = ("kill-rank", "kill-node", "exception", "partition", "hang")
NODE_KINDS = ("kill-node", "partition")
LLAMA3_MIX = {"kill-rank": 268.0, "kill-node": 53.0, "exception": 56.0, "partition": 35.0, "hang": 7.0}
LLAMA3_SOURCE = ("Llama 3 405B pre-training: 419 unexpected interruptions in 54 days on 16,384 H100 GPUs "
                 "(The Llama 3 Herd of Models, 2024, table 5)")


@dataclass
class TracedFault:
    kind: str
    at_time_s: float  # after the job's first run_start
    rank: int | None = None  # rank faults
    node: int | None = None  # node faults

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class FaultTrace:
    faults: list[TracedFault]
    seed: int | None = None
    mtbf_s: float | None = None
    mix: dict[str, float] = field(default_factory=dict)
    world_size: int = 1
    nodes: int = 1
    source: str = ""

    def to_dict(self) -> dict:
        return {"faults": [f.to_dict() for f in self.faults], "seed": self.seed, "mtbf_s": self.mtbf_s,
                "mix": self.mix, "world_size": self.world_size, "nodes": self.nodes, "source": self.source}

    def write(self, path: Path) -> Path:
        from trainscale.scaling.results.files import write_json_atomic

        write_json_atomic(path, self.to_dict())
        return path

    def fits(self, world_size: int, nodes: int) -> None:
        """SpecError naming the first fault whose target is not in a run of this size."""
        for i, f in enumerate(self.faults):
            if f.kind in NODE_KINDS and not 0 <= (f.node if f.node is not None else -1) < nodes:
                raise SpecError(f"fault trace: fault {i} ({f.kind}) targets node {f.node}, the run has {nodes} "
                                f"node(s) (0..{nodes - 1})")
            if f.kind not in NODE_KINDS and not 0 <= (f.rank if f.rank is not None else -1) < world_size:
                raise SpecError(f"fault trace: fault {i} ({f.kind}) targets rank {f.rank}, the run has "
                                f"{world_size} rank(s) (0..{world_size - 1})")
            if f.kind == "partition" and nodes < 2:
                raise SpecError(f"fault trace: fault {i} is a partition, which needs an emulated cluster "
                                f"(--nodes > 1), got --nodes {nodes}")


def parse_mix(text: str) -> dict[str, float]:
    """``kill-rank=3,exception=1`` -> weights; SpecError naming the bad part."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, weight = part.partition("=")
        if not sep:
            raise SpecError(f"--fault-mix: {part!r} is not KIND=WEIGHT")
        if name not in TRACE_KINDS:
            raise SpecError(f"--fault-mix: unknown fault kind {name!r} (kinds: {', '.join(TRACE_KINDS)})")
        try:
            w = float(weight)
        except ValueError:
            raise SpecError(f"--fault-mix: weight {weight!r} of {name} is not a number") from None
        if not (math.isfinite(w) and w >= 0):
            raise SpecError(f"--fault-mix: weight of {name} must be finite and 0 or more, got {weight}")
        mix[name] = w
    if not mix or sum(mix.values()) <= 0:
        raise SpecError(f"--fault-mix: needs a positive weight, got {text!r}")
    return mix


def effective_mix(mix: dict[str, float], nodes: int) -> dict[str, float]:
    """The mix a run of this many nodes can inject: without an emulated cluster a partition is a lost
    node (kill-node)."""
    out = dict(mix)
    if nodes < 2 and out.get("partition"):
        out["kill-node"] = out.get("kill-node", 0.0) + out.pop("partition")
    return {k: v for k, v in out.items() if v > 0}


def draw(n: int, mtbf_s: float, seed: int, world_size: int, nodes: int,
         mix: dict[str, float] | None = None) -> FaultTrace:
    if n < 1:
        raise SpecError(f"--faults must be 1 or more, got {n}")
    if not (math.isfinite(mtbf_s) and mtbf_s > 0):
        raise SpecError(f"--mtbf-s must be positive, got {mtbf_s:g}")
    weights = effective_mix(mix or LLAMA3_MIX, nodes)
    kinds = sorted(weights)
    p = np.array([weights[k] for k in kinds]) / sum(weights.values())
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(mtbf_s, size=n))
    chosen = rng.choice(len(kinds), size=n, p=p)
    faults = []
    for t, k in zip(times, chosen):
        kind = kinds[int(k)]
        if kind in NODE_KINDS:
            faults.append(TracedFault(kind, float(t), node=int(rng.integers(nodes))))
        else:
            faults.append(TracedFault(kind, float(t), rank=int(rng.integers(world_size))))
    return FaultTrace(faults, seed=seed, mtbf_s=mtbf_s, mix=weights, world_size=world_size, nodes=nodes,
                      source=LLAMA3_SOURCE if mix is None else "--fault-mix")


def read(path: Path) -> FaultTrace:
    """A trace file, checked field by field (SpecError naming the file and the bad value)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read fault trace {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"fault trace {path} is not JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("faults"), list) or not raw["faults"]:
        raise SpecError(f"fault trace {path} has no list of faults under 'faults'")
    faults = []
    last = 0.0
    for i, f in enumerate(raw["faults"]):
        where = f"fault trace {path}: fault {i}"
        if not isinstance(f, dict) or f.get("kind") not in TRACE_KINDS:
            raise SpecError(f"{where} has kind {f.get('kind') if isinstance(f, dict) else f!r}, "
                            f"not one of {', '.join(TRACE_KINDS)}")
        t = f.get("at_time_s")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise SpecError(f"{where} has at_time_s {t!r}: must be a finite number of seconds, 0 or more")
        if t < last:
            raise SpecError(f"{where} at {t} s comes before the fault before it ({last} s): times must not decrease")
        last = float(t)
        key = "node" if f["kind"] in NODE_KINDS else "rank"
        target = f.get(key)
        if isinstance(target, bool) or not isinstance(target, int) or target < 0:
            raise SpecError(f"{where} ({f['kind']}) needs a '{key}' of 0 or more, got {target!r}")
        faults.append(TracedFault(f["kind"], float(t), **{key: target}))
    return FaultTrace(faults, seed=raw.get("seed"), mtbf_s=raw.get("mtbf_s"), mix=raw.get("mix") or {},
                      world_size=int(raw.get("world_size") or 1), nodes=int(raw.get("nodes") or 1),
                      source=str(raw.get("source") or path))
