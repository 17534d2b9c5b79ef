"""The parallel strategies by name (``--parallel``): one module per strategy, listed here."""
from __future__ import annotations

from trainscale.scaling.results.registry import Registry
from trainscale.scaling.strategies.base import Strategy
from trainscale.scaling.strategies.ddp import DDPStrategy
from trainscale.scaling.strategies.fsdp import FSDPStrategy
from trainscale.scaling.strategies.pipeline import PipelineStrategy
from trainscale.scaling.strategies.tensor import TensorParallelStrategy
from trainscale.scaling.strategies.zero import ZeRO1Strategy, ZeRO2Strategy, ZeRO3Strategy

STRATEGIES: Registry[Strategy] = Registry("parallel strategy", [
    DDPStrategy(), FSDPStrategy(), ZeRO1Strategy(), ZeRO2Strategy(), ZeRO3Strategy(), TensorParallelStrategy(),
    PipelineStrategy()])
