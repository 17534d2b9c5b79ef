"""Resolving a run spec and validating it before any process starts.

A spec is layered: trainscale's defaults < the workload's defaults < a TOML config file < flags <
``--set``. Validation checks the spec's own fields (spec.RunSpec.check), then asks each component the
spec names whether the run suits it: the fault kind, the parallel strategy's capability row (against
the precision, compile and checkpoint settings), the workload, the launcher and the strategy itself.
Every problem is one SpecError naming the bad value.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from trainscale.faults.kinds import FAULT_KINDS, NO_FAULT
from trainscale.launchers.registry import LAUNCHERS
from trainscale.scaling.results.registry import UnknownName
from trainscale.scaling.spec import (AUTOCAST_PRECISIONS, RunSpec, SpecError, build_dataclass, deep_merge,
                                     load_config_file, parse_set)
from trainscale.scaling.strategies.base import Strategy
from trainscale.scaling.strategies.registry import STRATEGIES
from trainscale.workloads.registry import WORKLOADS, spec_defaults


def resolve(config_file: str | Path | None = None, flags: dict[str, Any] | None = None,
            sets: list[str] | None = None) -> RunSpec:
    """Defaults < workload's defaults < config file < flags < --set; then validate."""
    spec = build(config_file, flags, sets)
    validate(spec)
    return spec


def build(config_file: str | Path | None = None, flags: dict[str, Any] | None = None,
          sets: list[str] | None = None) -> RunSpec:
    """The layered spec, every value typed (SpecError naming a bad one), not yet validated."""
    raw: dict[str, Any] = load_config_file(config_file) if config_file else {}
    raw = deep_merge(raw, {k: v for k, v in (flags or {}).items() if v is not None})
    raw = deep_merge(raw, parse_set(sets or []))
    try:
        workload = WORKLOADS.get(str(raw.get("workload", RunSpec.workload)))
    except UnknownName as e:
        raise SpecError(str(e)) from None
    raw = deep_merge(spec_defaults(workload, raw), raw)
    spec = build_dataclass(RunSpec, raw)
    # The model table is typed against the workload's own config and stored fully resolved.
    spec.model = dataclasses.asdict(build_dataclass(workload.config_cls, spec.model, "model"))
    return spec


def validate(spec: RunSpec) -> None:
    try:
        workload = WORKLOADS.get(spec.workload)
        strategy = STRATEGIES.get(spec.parallel)
        launcher = LAUNCHERS.get(spec.launcher)
        fault = FAULT_KINDS.get(spec.fault.kind) if spec.fault.kind != NO_FAULT else None
        spec.check()
        if fault is not None:
            fault.validate(spec)
            refusal = fault.engine_refusal(spec, launcher.engine)
            if refusal:
                raise SpecError(refusal)
        if spec.fault.trace:
            check_trace(spec, launcher.engine)
        check_capabilities(spec, strategy)
        workload.validate(spec)
        launcher.validate(spec)
        strategy.validate(spec)
    except ValueError as e:  # SpecError, UnknownName, and the components' own ValueErrors
        raise SpecError(str(e)) from None


def check_trace(spec: RunSpec, engine: str) -> None:
    """A fault trace (fault.trace) fits the run: its targets exist, its engine recovers every kind."""
    from trainscale.faults import trace as fault_trace

    if spec.fault.kind != NO_FAULT:
        raise SpecError(f"fault.trace replaces fault.kind: give one of them, got fault.kind {spec.fault.kind!r}")
    if spec.is_tta:
        raise SpecError("fault.trace runs in throughput runs (a step count), not time-to-accuracy runs")
    trace = fault_trace.read(Path(spec.fault.trace))
    trace.fits(spec.world_size, spec.nodes)
    for f in trace.faults:
        kind = FAULT_KINDS.get(f.kind)
        refusal = kind.engine_refusal(spec, engine)
        if refusal:
            raise SpecError(f"fault trace {spec.fault.trace}: {refusal}")
        if kind.shrinks_world:
            raise SpecError(f"fault trace {spec.fault.trace}: a {f.kind} fault changes the job's world for good; "
                            f"give it alone (--fault {f.kind}), not in a trace")
        if engine and engine not in kind.engines:
            raise SpecError(f"fault trace {spec.fault.trace}: a {f.kind} fault cannot be recovered by the {engine} "
                            f"engine (it can by: {', '.join(kind.engines)})")
        if kind.detect_timeout_s and not spec.fault.detect_timeout_s:
            raise SpecError(f"fault trace {spec.fault.trace} has a {f.kind} fault: it is found by the collective "
                            f"timeout, fault.detect_timeout_s must be set (e.g. {kind.detect_timeout_s:g})")


def validate_portable(spec: RunSpec) -> None:
    """The checks that hold on any machine, for a spec that runs elsewhere (an sbatch script rendered
    here): the model knobs and the parallel layout. Data paths, GPUs and launchers are checked where
    the run starts, when `trainscale run` validates the whole spec."""
    try:
        WORKLOADS.get(spec.workload).validate_model(spec.model_config())
        STRATEGIES.get(spec.parallel).validate(spec)
    except ValueError as e:
        raise SpecError(str(e)) from None
    if not spec.is_tta and spec.steps <= spec.warmup:
        raise SpecError(f"steps ({spec.steps}) must be greater than warmup ({spec.warmup})")


def check_capabilities(spec: RunSpec, strategy: Strategy) -> None:
    """What the run asks of the strategy against its capability row, naming the strategies that can."""
    def able(attribute: str) -> str:
        return ", ".join(s.name for s in STRATEGIES if getattr(s, attribute))

    if spec.precision in AUTOCAST_PRECISIONS and not strategy.whole_model_step:
        raise SpecError(f"precision {spec.precision!r} is not supported with parallel {strategy.name!r} "
                        f"(autocast runs in {able('whole_model_step')}; use precision fp32)")
    if spec.compile and not strategy.whole_model_step:
        raise SpecError(f"compile is not supported with parallel {strategy.name!r} "
                        f"(torch.compile applies to {able('whole_model_step')})")
    if (spec.checkpoint.enabled or spec.checkpoint.resume_from) and not strategy.checkpoints:
        raise SpecError(f"checkpointing supports --parallel {able('checkpoints')}, got {strategy.name!r}")
    if spec.checkpoint.enabled and spec.checkpoint.async_save and strategy.native_checkpoints:
        raise SpecError(f"checkpoint.async_save: parallel {strategy.name!r} checkpoints through its engine's own "
                        "synchronous save (DeepSpeed), not DCP's asynchronous one")
