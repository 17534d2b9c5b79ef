"""Recovery engines compared for planning: each engine's recovery costs measured by its drills,
projected to goodput at each planned size under a per-GPU failure rate; the better engine per size.

Failure rate: every GPU fails at r per day (default the Llama 3 405B figure: 419 unexpected
interruptions in 54 days on 16,384 GPUs, about 7.8 a day per 16,384 GPUs); a job of N GPUs at N r,
so its MTBF is M = 1 / (N r). With --mtbf-hours (one node's MTBF) the plan's node rate is used instead.

Restart engines (torchrun, ray, slurm): a failure stops the whole job. Goodput is Daly's expected
wall time (analysis.reliability) with the engine's restart time R (mean detection + restart +
rendezvous + restore over its drills' recoveries) and checkpoint save time, checkpoints at Daly's
optimum interval for M.

torchft: a failure stops every replica group for the healthy groups' stall S, and the failed group
is missing until it is back, healed, J seconds after the fault; with G groups the job trains at
(G - 1) / G of its rate meanwhile. Each failure so costs c = S + J / G of whole-job time, and goodput
is exp(-c / M): Daly's form with no checkpoint term (a failure loses no work beyond the stall;
failures during a recovery compound as in Daly's). S and J are the means over the drills' faults; G is
the planned node count (one replica group per node, as the drills ran); at one node torchft has no
projection (a lone group has no live peer to heal from).

Both are models (labelled so). They carry the measured recovery costs unchanged to the planned size:
a restart of thousands of processes, a quorum of thousands of groups may take longer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainscale.analysis.drills import Drill, DrillError, checked_number, failure_inputs, find_drills, load_drill
from trainscale.analysis.reliability import DALY, expected_goodput
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json

LLAMA3_INTERRUPTIONS, LLAMA3_DAYS, LLAMA3_GPUS = 419, 54, 16_384
LLAMA3_GPU_FAILURES_PER_DAY = LLAMA3_INTERRUPTIONS / LLAMA3_DAYS / LLAMA3_GPUS  # 4.74e-4 per GPU-day
TORCHFT = "torchft"


@dataclass(frozen=True)
class EngineCosts:
    """One engine's measured recovery costs (seconds), from its drills."""
    engine: str
    drills: list[str]
    faults: int  # recoveries (restart engines) or faults (torchft) measured
    restart_s: float | None = None  # restart engines: detection + restart + rendezvous + restore
    save_s: float | None = None  # restart engines: one checkpoint save
    stall_s: float | None = None  # torchft: the healthy groups' stall per fault
    rejoin_s: float | None = None  # torchft: fault -> the failed group back, healed

    def to_dict(self) -> dict:
        return asdict(self)

    def goodput(self, mtbf_s: float, groups: int) -> float | None:
        """Modelled goodput at job MTBF mtbf_s (module docstring); groups: torchft's replica groups
        (None under torchft with one group: a lone group has no live peer to heal from)."""
        if self.engine == TORCHFT:
            if groups < 2:
                return None
            return math.exp(-(self.stall_s + self.rejoin_s / groups) / mtbf_s)
        return expected_goodput(mtbf_s, self.save_s, self.restart_s, method=DALY).goodput

    def describe(self) -> str:
        if self.engine == TORCHFT:
            return (f"stall S = {self.stall_s:.2f} s, failed group back J = {self.rejoin_s:.2f} s (means over "
                    f"{self.faults} fault(s))")
        return (f"restart R = {self.restart_s:.2f} s (mean over {self.faults} recovery(ies)), checkpoint save "
                f"{self.save_s:.2f} s")


@dataclass(frozen=True)
class EngineRow:
    nodes: int
    gpus: int
    job_mtbf_hours: float
    goodput: dict[str, float | None]
    better: str


def engine_of(summary: dict) -> str:
    """The recovery engine a drill ran under: torchft when it has a torchft record, else the record's
    engine_name, else (records made before it) the engine label's first word: "torchrun elastic
    agent", "Ray Train ...", "Slurm requeue ..."."""
    if "torchft" in summary:
        return TORCHFT
    drill = summary.get("drill") or {}
    if drill.get("engine_name"):
        return str(drill["engine_name"])
    return (str(drill.get("engine") or "unknown").split() or ["unknown"])[0].lower()


def torchft_costs(drills: list[tuple[Path, dict]]) -> EngineCosts:
    """torchft's stall and rejoin means over the faults of its drills ((folder, summary) each)."""
    stalls, rejoins = [], []
    for path, summary in drills:
        where = str(path / schema.SUMMARY)
        recovery = summary.get("recovery")
        if not isinstance(recovery, list):
            raise DrillError(f"{where}: 'recovery' must be a list of recoveries, got {recovery!r}")
        for i, r in enumerate(recovery):
            if not isinstance(r, dict):
                raise DrillError(f"{where}: recovery[{i}] must be an object")
            # A fault with no healthy group training (both were recovering) or whose victim never came
            # back inside the run has no stall or rejoin to plan with.
            if r.get("stall_s") is None or r.get("rejoin_s") is None:
                continue
            stalls.append(checked_number(r, "stall_s", f"{where} recovery[{i}]"))
            rejoins.append(checked_number(r, "rejoin_s", f"{where} recovery[{i}]"))
    names = [path.name for path, _summary in drills]
    if not stalls:
        raise DrillError(f"the torchft drills ({', '.join(names)}) recorded no fault with a healthy group's stall "
                         "and the failed group's return")
    return EngineCosts(TORCHFT, names, len(stalls), stall_s=float(np.mean(stalls)), rejoin_s=float(np.mean(rejoins)))


def engine_costs(folder: Path) -> tuple[list[EngineCosts], list[Drill]]:
    """Every engine's costs from the drills under folder (an engines head-to-head campaign, or drills
    of several engines side by side), in the order the engines first appear; and the restart engines'
    drills, loaded once, which the plan's main failure model pools."""
    by_engine: dict[str, list[tuple[Path, dict]]] = {}
    for path in find_drills(Path(folder)):
        try:
            summary = read_json(path / schema.SUMMARY)
        except (OSError, ValueError) as e:
            raise DrillError(f"{path / schema.SUMMARY}: unreadable ({e})") from None
        by_engine.setdefault(engine_of(summary), []).append((path, summary))
    out, restart = [], []
    for engine, drills in by_engine.items():
        if engine == TORCHFT:
            out.append(torchft_costs(drills))
            continue
        loaded = [load_drill(path) for path, _summary in drills]
        f = failure_inputs(loaded)
        out.append(EngineCosts(engine, [d.name for d in loaded], sum(len(d.recovery) for d in loaded),
                               restart_s=f.restart_s, save_s=f.save_s))
        restart += loaded
    return out, restart


def job_mtbf_s(nodes: int, gpus_per_node: int, gpu_failures_per_day: float,
               node_mtbf_hours: float | None = None) -> float:
    if node_mtbf_hours is not None:
        return node_mtbf_hours * 3600 / nodes
    return 86400.0 / (nodes * gpus_per_node * gpu_failures_per_day)


def compare_engines(costs: list[EngineCosts], nodes: list[int], gpus_per_node: int, gpu_failures_per_day: float,
                    node_mtbf_hours: float | None = None) -> list[EngineRow]:
    rows = []
    for n in nodes:
        mtbf = job_mtbf_s(n, gpus_per_node, gpu_failures_per_day, node_mtbf_hours)
        goodput = {c.engine: c.goodput(mtbf, n) for c in costs}
        known = {e: g for e, g in goodput.items() if g is not None}
        rows.append(EngineRow(n, n * gpus_per_node, mtbf / 3600, goodput,
                              max(known, key=known.get) if known else "-"))
    return rows


def rate_basis(gpu_failures_per_day: float, node_mtbf_hours: float | None) -> str:
    if node_mtbf_hours is not None:
        return f"node MTBF {node_mtbf_hours:g} h (--mtbf-hours): job MTBF = node MTBF / nodes"
    source = (" (Llama 3 405B: 419 interruptions in 54 days on 16,384 GPUs)"
              if gpu_failures_per_day == LLAMA3_GPU_FAILURES_PER_DAY else " (--gpu-failures-per-day)")
    return (f"{gpu_failures_per_day:.3g} failures per GPU-day, {gpu_failures_per_day * LLAMA3_GPUS:.2f} a day per "
            f"16,384 GPUs{source}: job MTBF = 1 / (GPUs x rate)")


def markdown(costs: list[EngineCosts], rows: list[EngineRow], basis: str) -> list[str]:
    engines = [c.engine for c in costs]
    lines = ["## Recovery engines (modelled goodput)", "",
             f"Failure rate: {basis}. Goodput per engine from its drills' measured recovery costs: restart "
             "engines by Daly's expected wall time (restart R, checkpoint save, Daly's interval); torchft as "
             "exp(-(S + J / G) / M) with G replica groups, one per node. The recovery costs are carried to the "
             "planned size unchanged.", ""]
    lines += [f"- {c.engine}: {c.describe()}; drills {', '.join(c.drills)}" for c in costs]
    lines += ["", "| nodes | GPUs | job MTBF h | " + " | ".join(f"{e} goodput" for e in engines) + " | better |",
              "|" + "---:|" * (3 + len(engines)) + ":---|"]
    for r in rows:
        cells = ["n/a (one group)" if r.goodput[e] is None else f"{r.goodput[e]:.6f}" for e in engines]
        lines.append(f"| {r.nodes} | {r.gpus} | {r.job_mtbf_hours:.3g} | " + " | ".join(cells) + f" | {r.better} |")
    return lines + [""]
