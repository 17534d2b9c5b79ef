"""The workloads by name (``--workload``): one module per workload, listed here."""
from __future__ import annotations

from typing import Any

from trainscale.scaling.results.registry import Registry
from trainscale.workloads.base import Built, Workload
from trainscale.workloads.data import DataConfig
from trainscale.workloads.digits import DigitsWorkload
from trainscale.workloads.gpt import GPTWorkload
from trainscale.workloads.image import ResNet50Workload

__all__ = ["WORKLOADS", "Built", "Workload", "spec_defaults"]

WORKLOADS: Registry[Workload] = Registry("workload", [ResNet50Workload(), DigitsWorkload(), GPTWorkload()])


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
