"""The workloads trainscale knows, by name. Modules are imported only when a workload is used."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from torch import nn
from torch.utils.data import Dataset

from .data import DataConfig

WORKLOADS = {
    "resnet50": "trainscale.workloads.image:ResNet50Workload",
    "gpt": "trainscale.workloads.gpt:GPTWorkload",
}


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


class Workload(Protocol):
    name: str
    config_cls: type  # dataclass of the workload's model knobs (the spec's [model] table)
    spec_defaults: dict[str, Any]  # run-spec values this workload prefers to trainscale's defaults

    def validate(self, cfg: Any) -> None:
        """Raise ValueError naming the bad knob."""

    def build(self, cfg: Any, data: DataConfig, seed: int, min_train_samples: int) -> Built: ...


def names() -> list[str]:
    return sorted(WORKLOADS)


def get(name: str) -> Workload:
    if name not in WORKLOADS:
        raise KeyError(name)
    module, cls = WORKLOADS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
