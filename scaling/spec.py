"""The run spec: what one benchmark run is, as dataclasses (the run's config.json), each section with
the checks of its own fields, and how a spec is built from layered dictionaries (a TOML config file,
command-line flags, ``--set key=value``) with every value typed against the schema. Resolving a spec
and asking the components (workload, strategy, launcher, fault kind) whether it suits them is
scaling/resolve.py. Every problem is a SpecError whose message names the bad value.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainscale.scaling.errors import SpecError
from trainscale.scaling.results.schema import PACK_CHOICES
from trainscale.scaling.strategies.mesh import Degrees, MeshConfig, PipelineConfig
from trainscale.workloads.data import DataConfig

BACKENDS = ("gloo", "nccl")
OPTIMIZERS = ("sgd", "adamw")
# fp32 | tf32 (CUDA tensor cores) | bf16, fp16 (autocast; fp16 with a gradient scaler): runtime/precision.py
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST_PRECISIONS = ("bf16", "fp16")


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise SpecError(msg)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0

    def check(self) -> None:
        need(self.name in OPTIMIZERS, f"unknown optimizer {self.name!r} (known: {', '.join(OPTIMIZERS)})")
        need(self.lr > 0, f"optim.lr must be positive, got {self.lr}")


@dataclass
class FaultConfig:
    """A fault the rank loop injects into itself (see trainscale.faults.inject)."""
    kind: str = "none"
    rank: int = 0
    at_step: int = 0
    slow_factor: float = 2.0  # kind "slow": the rank's steps take this many times its own compute time
    node: int = 0  # kind "kill-node": the node (node rank) whose ranks all die
    partition_s: float = 6.0  # kind "partition": seconds the node's link stays down
    at_time_s: float = -1.0  # >= 0: fire at the first step that starts this many seconds after run_start
    detect_timeout_s: float = 0.0  # > 0: collective timeout of the process group (how a hang is detected)
    marker: str = ""  # the fault-fired marker file; "" = RUN_DIR/fault_fired.json (Slurm drills share one per job)
    trace: str = ""  # a fault trace file (faults/trace.py): its faults fire instead of kind/at_step/at_time_s

    def check(self) -> None:
        """The fields every fault has; the kind checks the rest (faults/kinds.py)."""
        need(self.detect_timeout_s >= 0, f"fault.detect_timeout_s must be 0 (default) or more, got "
                                         f"{self.detect_timeout_s}")


@dataclass
class CheckpointConfig:
    """torch.distributed.checkpoint saves during throughput runs (trainscale.faults.checkpoint_store)."""
    every_steps: int = 0  # save after every this many steps (0: not by steps)
    every_s: float = 0.0  # save at the first step boundary this many seconds after the last save (0: not by time)
    async_save: bool = False  # dcp.async_save: the write runs in the background
    dir: str = ""  # "" = RUN_DIR/checkpoints
    keep: int = 2  # complete checkpoints kept (older ones deleted)
    final: bool = True  # also save after the last step (the state a drill compares)
    resume_from: str = ""  # start from this checkpoint (or the newest under this folder), of any world size
    write_threads: int = 0  # files each rank writes at once; 0: up to 4, within the rank's share of the cores

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0 or self.every_s > 0

    def check(self) -> None:
        need(self.every_steps >= 0, f"checkpoint.every_steps must be 0 (off) or more, got {self.every_steps}")
        need(self.every_s >= 0, f"checkpoint.every_s must be 0 (off) or more, got {self.every_s}")
        need(self.keep >= 1, f"checkpoint.keep must be at least 1, got {self.keep}")
        need(self.write_threads >= 0, f"checkpoint.write_threads must be 0 (auto) or more, got {self.write_threads}")
        if self.resume_from:
            from trainscale.faults.checkpoint_store import checkpoint_to_resume

            try:
                checkpoint_to_resume(Path(self.resume_from))
            except ValueError as e:
                raise SpecError(f"checkpoint.resume_from {e}") from None


@dataclass
class EvalConfig:
    """Evaluation of time-to-accuracy runs (runs with a target_accuracy; see analysis/tta.py)."""
    every_epochs: int = 1  # evaluate after every this many epochs ...
    every_steps: int = 0  # ... or, when > 0, after every this many steps instead
    max_epochs: int = 50  # a run still below the target after this many epochs stops INVALID
    batch_size: int = 0  # per-rank evaluation batch; 0: the training batch size

    def check(self) -> None:
        need(self.every_epochs >= 1, f"eval.every_epochs must be at least 1, got {self.every_epochs}")
        need(self.every_steps >= 0, f"eval.every_steps must be 0 (per epoch) or more, got {self.every_steps}")
        need(self.max_epochs >= 1, f"eval.max_epochs must be at least 1, got {self.max_epochs}")
        need(self.batch_size >= 0, f"eval.batch_size must be 0 (training batch) or more, got {self.batch_size}")


@dataclass
class LaunchConfig:
    """Launcher settings beyond --launcher/--nodes/--nproc (see trainscale.launchers)."""
    cluster: str = ""  # local: emulated cluster (trainscale cluster up); "" = "default" when nodes > 1
    rdzv_endpoint: str = ""  # torchrun: HOST:PORT of the c10d rendezvous, hosted by node rank 0
    node_rank: int = -1  # torchrun: this node's rank; -1 = from NODE_RANK or SLURM_NODEID
    local_addr: str = ""  # torchrun: the address other nodes reach this node at ("" = its hostname)
    run_id: str = ""  # results folder name under out, shared by all nodes; also the rendezvous id
    max_restarts: int = 0  # torchrun --max-restarts
    ray_address: str = ""  # ray: cluster to connect to ("" starts a local Ray for the run)

    def check(self) -> None:
        need(self.max_restarts >= 0, f"launch.max_restarts must be 0 or more, got {self.max_restarts}")


@dataclass
class CommConfig:
    """Gradient communication inside training (docs/method.md "All-reduce overhead inside training")."""
    measure: bool = True  # time every gradient collective (strategies with a comm timer, e.g. ddp)
    no_sync_steps: int = -1  # compute-only steps after the measured window; -1 auto, 0 off
    delay_ms: float = 0.0  # testing: each gradient collective completes this much later (a slower link)

    def check(self) -> None:
        need(self.no_sync_steps >= -1,
             f"comm.no_sync_steps must be -1 (auto), 0 (off) or more, got {self.no_sync_steps}")
        need(self.delay_ms >= 0, f"comm.delay_ms must be 0 or more, got {self.delay_ms}")


@dataclass
class TelemetryConfig:
    """GPU telemetry through NVML (runtime/telemetry.py): local rank 0 of each node samples its node's
    GPUs that the run uses; CPU runs record "no GPU telemetry" with the reason."""
    enabled: bool = True
    interval_s: float = 0.1  # seconds between samples (the energy counter is read at the window edges)

    def check(self) -> None:
        need(self.interval_s >= 0.01, f"telemetry.interval_s must be at least 0.01, got {self.interval_s}")


@dataclass
class ResultsConfig:
    """How the run folder keeps its per-rank files (scaling/results/sample_files.py)."""
    pack: str = "auto"  # per-node files once an ok run ends: auto (from PACK_AUTO_MIN_RANKS ranks), always, never; drills never

    def check(self) -> None:
        need(self.pack in PACK_CHOICES, f"results.pack must be one of {', '.join(PACK_CHOICES)}, got {self.pack!r}")


@dataclass
class RunSpec:
    workload: str = "resnet50"
    parallel: str = "ddp"
    launcher: str = "local"
    nproc: int = 1  # processes per node
    nodes: int = 1
    backend: str = "gloo"
    steps: int = 30  # total steps, warmup included
    warmup: int = 5  # steps excluded from the measured window
    batch_size: int = 32  # per data-parallel rank
    seed: int = 0
    target_accuracy: float | None = None  # set: a time-to-accuracy run (None: throughput run)
    timeout_s: float = 1800.0  # the whole launch is killed and marked failed after this
    threads_per_rank: int = 0  # 0: the node's cores divided by nproc (at least 1)
    precision: str = "fp32"  # one of PRECISIONS
    compile: bool = False  # torch.compile the wrapped model's forward (ddp, fsdp, tp)
    out: str = "results"
    model: dict[str, Any] = field(default_factory=dict)  # the workload's own knobs
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)  # parallel degrees (--dp/--tp/--pp)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)

    @property
    def is_tta(self) -> bool:
        """A time-to-accuracy run: trains epoch by epoch to the target (steps do not apply)."""
        return self.target_accuracy is not None

    @property
    def world_size(self) -> int:
        return self.nproc * self.nodes

    @property
    def degrees(self) -> Degrees:
        """The strategy's dp x tp x pp degrees at this world size (ValueError if they do not fit)."""
        from trainscale.scaling.strategies.registry import STRATEGIES

        return STRATEGIES.get(self.parallel).degrees(self.world_size, self.mesh)

    @property
    def global_batch(self) -> int:
        """batch_size is per data-parallel rank: tensor- and pipeline-parallel ranks share a batch."""
        return self.batch_size * self.degrees.dp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self) -> Any:
        """The workload's model config dataclass, built from the (already resolved) model table."""
        from trainscale.workloads.registry import WORKLOADS

        return WORKLOADS.get(self.workload).config_cls(**self.model)

    def check(self) -> None:
        """The spec's own fields and sections; the components check the rest (scaling/resolve.py)."""
        need(self.backend in BACKENDS, f"unknown backend {self.backend!r} (known: {', '.join(BACKENDS)})")
        need(self.nproc >= 1, f"nproc must be at least 1, got {self.nproc}")
        need(self.nodes >= 1, f"nodes must be at least 1, got {self.nodes}")
        need(self.steps >= 1, f"steps must be at least 1, got {self.steps}")
        need(self.warmup >= 0, f"warmup must be 0 or more, got {self.warmup}")
        if not self.is_tta:
            need(self.steps > self.warmup,
                 f"steps ({self.steps}) must be greater than warmup ({self.warmup}): nothing would be measured")
        need(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        need(self.timeout_s > 0, f"timeout_s must be positive, got {self.timeout_s}")
        need(self.threads_per_rank >= 0, f"threads_per_rank must be 0 (auto) or more, got {self.threads_per_rank}")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        if self.precision == "tf32":
            need(self.backend == "nccl", f"precision 'tf32' is a GPU tensor-core format: it needs --backend nccl "
                                         f"(backend {self.backend!r} runs on CPUs, where it would be plain fp32)")
        if self.precision == "fp16":
            need(self.backend == "nccl", f"precision 'fp16' (autocast with a gradient scaler) needs --backend nccl: "
                                         f"backend {self.backend!r} runs on CPUs (use precision bf16 or fp32 there)")
        if self.is_tta:
            need(0 < self.target_accuracy <= 1, f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
            need(self.data.kind != "synthetic",
                 "target_accuracy needs real data: synthetic labels are random (data.kind is 'synthetic'; "
                 "use --target-accuracy none for a throughput run)")
            self.eval.check()
        self.optim.check()
        try:
            self.data.check()
            self.pipeline.check()
        except ValueError as e:
            raise SpecError(str(e)) from None
        self.fault.check()
        self.launch.check()
        self.checkpoint.check()
        self.comm.check()
        self.telemetry.check()
        self.results.check()


# ---------------------------------------------------------------------------------------------
# Building a spec from layered dictionaries


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict of strings; values are typed later against the schema."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"--config must name a TOML file, got a folder: {path}")
    if not p.is_file():
        raise SpecError(f"config file not found: {path}")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise SpecError(f"config file {path} is not UTF-8 text") from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a TOML value or a --set string into the declared type, or raise SpecError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise SpecError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise SpecError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise SpecError(f"{key} must be an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise SpecError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise SpecError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # a NaN passes every range check, inf most of them
            raise SpecError(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise SpecError(f"{key} must be a string, got {value!r}")
        return str(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{key} must be a table of key = value, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    raise SpecError(f"{key}: unsupported type {tp}")


def build_dataclass(cls: type, values: Any, prefix: str = "") -> Any:
    """An instance of cls from a dict, every value typed; unknown keys are errors."""
    if not isinstance(values, dict):
        raise SpecError(f"{prefix or 'config'} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in values:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise SpecError(f"unknown setting {where!r} (known: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def from_dict(d: dict[str, Any]) -> RunSpec:
    """A spec from its own to_dict() (e.g. a run folder's config.json)."""
    return build_dataclass(RunSpec, d)
