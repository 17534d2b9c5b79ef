"""Validation of a run's parallel layout before launch: every problem is a SpecError naming the
value (the CLI turns it into one line and exit code 2)."""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from trainscale.workloads import registry as workload_registry

from trainscale.scaling.strategies.mesh import SCHEDULES, Degrees, resolve_degrees

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec

# The hook a workload must have for a strategy to split its model.
MODEL_HOOKS = {"tp": ("tensor_parallel_plan", "tensor-parallel plan"),
               "pp": ("pipeline_stage", "pipeline split")}
DEEPSPEED_STRATEGIES = ("zero1", "zero2", "zero3")


def check_parallel(spec: RunSpec) -> Degrees:
    from trainscale.scaling.spec import SpecError

    try:
        degrees = resolve_degrees(spec.parallel, spec.world_size, spec.mesh)
    except ValueError as e:
        raise SpecError(str(e)) from None
    workload = workload_registry.get(spec.workload)
    hook = MODEL_HOOKS.get(spec.parallel)
    if hook and not hasattr(workload, hook[0]):
        raise SpecError(f"parallel {spec.parallel!r} does not support workload {spec.workload!r} (it has no {hook[1]})")
    if spec.parallel == "tp" and degrees.tp < 2:
        raise SpecError(f"parallel 'tp' needs a tensor-parallel degree of at least 2, got tp {degrees.tp} "
                        f"(world size {spec.world_size})")
    if spec.parallel == "pp" and degrees.pp < 2:
        raise SpecError(f"parallel 'pp' needs at least 2 pipeline stages, got pp {degrees.pp} "
                        f"(world size {spec.world_size})")
    if spec.parallel in DEEPSPEED_STRATEGIES and importlib.util.find_spec("deepspeed") is None:
        raise SpecError(f"parallel {spec.parallel!r} needs DeepSpeed, which is not installed "
                        "(pip install -c constraints.txt 'trainscale[deepspeed]')")
    if hasattr(workload, "validate_layout"):
        try:
            workload.validate_layout(spec.model_config(), degrees.dp, degrees.tp, degrees.pp)
        except ValueError as e:
            raise SpecError(str(e)) from None
    pipe = spec.pipeline
    if pipe.schedule not in SCHEDULES:
        raise SpecError(f"unknown pipeline.schedule {pipe.schedule!r} (known: {', '.join(SCHEDULES)})")
    if pipe.microbatches < 1:
        raise SpecError(f"pipeline.microbatches must be at least 1, got {pipe.microbatches}")
    if spec.parallel == "pp":
        if spec.batch_size % pipe.microbatches:
            raise SpecError(f"pipeline.microbatches ({pipe.microbatches}) does not divide the per-rank batch size "
                            f"({spec.batch_size})")
        if pipe.schedule == "1f1b" and pipe.microbatches < degrees.pp:
            raise SpecError(f"pipeline.microbatches ({pipe.microbatches}) must be at least the number of stages "
                            f"pp ({degrees.pp}) for the 1F1B schedule")
    return degrees
