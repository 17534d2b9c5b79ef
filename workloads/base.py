"""What every workload is: its capability row (the model splits it supports, its sample unit), its
defaults and quality target, its checks of a run spec, and what it builds for the per-rank loop.
A workload module defines one subclass of Workload; workloads/registry.py lists it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn
from torch.utils.data import Dataset

from trainscale.workloads.data import DataConfig


@dataclass
class Built:
    """What the per-rank loop needs from a workload."""
    model: nn.Module
    loss_fn: Callable[..., Any]
    train_set: Dataset
    eval_set: Dataset | None = None
    sample_unit: str = "samples"  # what one sample is: "images", "tokens" ...
    samples_per_item: int = 1  # units per data-set item (tokens per sequence, ...)
    extra: dict[str, Any] = field(default_factory=dict)


class Workload:
    name: str = ""
    summary: str = ""
    config_cls: type  # dataclass of the workload's model knobs (the spec's [model] table)
    spec_defaults: dict[str, Any] = {}  # run-spec values this workload prefers to trainscale's defaults
    # Model-parallel splits it can make: "tp" (tensor_parallel_plan, retie) and "pp" (pipeline_stage).
    splits: tuple[str, ...] = ()

    def default_target(self, data_kind: str) -> float | None:
        """The quality target (top-1 validation accuracy) a run on this data has unless the user sets
        one; None: throughput runs only (e.g. synthetic data)."""
        return None

    def validate(self, spec: Any) -> None:
        """ValueError naming the bad value when the run spec does not suit the workload."""
        cfg = spec.model_config()
        self.validate_model(cfg)
        self.validate_run(spec)
        self.validate_data(cfg, spec.data)

    def validate_model(self, cfg: Any) -> None:
        """The model knobs on their own."""

    def validate_run(self, spec: Any) -> None:
        """Checks that need the whole spec (data kind, target)."""

    def validate_data(self, cfg: Any, data: DataConfig) -> None:
        """The data the run will read."""

    def validate_layout(self, cfg: Any, dp: int, tp: int, pp: int) -> None:
        """Model shapes a parallel layout needs."""

    def build(self, cfg: Any, data: DataConfig, seed: int, min_train_samples: int) -> Built:
        raise NotImplementedError

    # -- model-parallel hooks, for the splits the workload declares ---------------------------------
    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """Modules sharded as one FSDP unit each (then the root takes the rest)."""
        return []

    def tensor_parallel_plan(self, model: nn.Module) -> dict:
        raise NotImplementedError(f"workload {self.name!r} has no tensor-parallel plan")

    def retie(self, model: nn.Module) -> None:
        """Re-tie weights shared between modules after tensor parallelism replaced their parameters."""

    def pipeline_stage(self, model: nn.Module, stage: int, num_stages: int) -> nn.Module:
        raise NotImplementedError(f"workload {self.name!r} has no pipeline split")

