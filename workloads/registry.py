"""The workloads trainscale knows, by name. Modules are imported only when a workload is used."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from torch import nn
from torch.utils.data import Dataset

from trainscale.workloads.data import DataConfig

WORKLOADS = {
    "resnet50": "trainscale.workloads.image:ResNet50Workload",
    "digits": "trainscale.workloads.digits:DigitsWorkload",
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

    def default_target(self, data_kind: str) -> float | None:
        """The quality target (top-1 validation accuracy) a run on this data has unless the user sets
        one; None: throughput runs only (e.g. synthetic data)."""

    def validate(self, cfg: Any) -> None:
        """Raise ValueError naming the bad knob."""

    def build(self, cfg: Any, data: DataConfig, seed: int, min_train_samples: int) -> Built: ...


def spec_defaults(workload: Workload, raw: dict[str, Any]) -> dict[str, Any]:
    """The workload's run-spec defaults for a partly resolved spec (raw: file < flags < --set), with
    its default quality target for the data kind that spec will have. A target the user gave,
    ``none`` included, wins over it because raw is merged over these defaults."""
    defaults = dict(workload.spec_defaults)
    data_kind = raw.get("data", {}).get("kind") or defaults.get("data", {}).get("kind") or DataConfig.kind
    target = workload.default_target(str(data_kind))
    if target is not None:
        defaults.setdefault("target_accuracy", target)
    return defaults


def names() -> list[str]:
    return sorted(WORKLOADS)


def get(name: str) -> Workload:
    if name not in WORKLOADS:
        raise KeyError(name)
    module, cls = WORKLOADS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
