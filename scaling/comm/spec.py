"""What one ``trainscale comm`` sweep is: ops, message sizes (nccl-tests' -b -e -f), iterations,
data type and world sizes; validated before any process starts, every problem a SpecError naming
the bad value."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from trainscale.scaling.results.collectives import COLLECTIVES

from trainscale.scaling.spec import BACKENDS, SpecError

# dtype name -> (torch attribute, element size in bytes, largest integer the type holds exactly)
DTYPES: dict[str, tuple[str, int, int]] = {
    "float32": ("float32", 4, 2**24),
    "float64": ("float64", 8, 2**53),
    "float16": ("float16", 2, 2**11),
    "bfloat16": ("bfloat16", 2, 2**8),
    "int8": ("int8", 1, 2**7 - 1),
    "uint8": ("uint8", 1, 2**8 - 1),
    "int32": ("int32", 4, 2**31 - 1),
    "int64": ("int64", 8, 2**63 - 1),
}
DTYPE_ALIASES = {"float": "float32", "fp32": "float32", "double": "float64", "fp64": "float64",
                 "half": "float16", "fp16": "float16", "bf16": "bfloat16", "int": "int32", "long": "int64"}
# Largest check value: data-movement ops use values 0..PATTERN_MAX-1, reducing ops fewer (see pattern_modulus).
PATTERN_MAX = 101
MAX_BYTES = 16 * 2**30
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


@dataclass
class CommSpec:
    ops: list[str] = field(default_factory=lambda: ["all_reduce"])
    min_bytes: int = 2**10  # -b
    max_bytes: int = 64 * 2**20  # -e
    step_factor: int = 2  # -f
    iters: int = 20  # -n: timed iterations per size
    warmup_iters: int = 5  # -w: untimed iterations per size, before the timed ones
    dtype: str = "float32"
    root: int = 0  # broadcast root
    nproc: list[int] = field(default_factory=lambda: [2])  # world sizes (processes on this node)
    backend: str = "gloo"
    threads_per_rank: int = 0  # 0: the node's cores divided by the processes (at least 1)
    timeout_s: float = 600.0  # per launch
    out: str = "results"
    corrupt_rank: int = -1  # testing the check: this rank flips one result element per size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CommSpec":
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})

    @property
    def element_size(self) -> int:
        return DTYPES[self.dtype][1]

    def ops_for_world(self, world: int) -> list[str]:
        """The ops that this world size can run (send_recv between distinct ranks needs two)."""
        return [op for op in self.ops if world >= COLLECTIVES.get(op).min_world]

    def sizes(self) -> list[int]:
        """-b, -b*f, -b*f^2 ... up to -e (nccl-tests' stepfactor)."""
        out, s = [], self.min_bytes
        while s <= self.max_bytes:
            out.append(s)
            s *= self.step_factor
        return out


def parse_size(text: str, flag: str) -> int:
    """'1K' -> 1024, '64M', '1G', '512', '8KB' (K/M/G are powers of 1024, as in nccl-tests)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[bB]?\s*", str(text))
    if not m:
        raise SpecError(f"{flag} must be a size like 1K, 64M or 1G, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_ops(text: str) -> list[str]:
    names = [o.strip().lower().replace("-", "_") for o in str(text).split(",") if o.strip()]
    if names == ["all"]:
        return COLLECTIVES.names()
    if not names:
        raise SpecError("--op is empty")
    for name in names:
        if name not in COLLECTIVES:
            raise SpecError(f"unknown collective {name!r} for --op (known: {', '.join(COLLECTIVES.names())}, all)")
    return list(dict.fromkeys(COLLECTIVES.get(n).name for n in names))


def parse_dtype(text: str) -> str:
    name = DTYPE_ALIASES.get(str(text).strip().lower(), str(text).strip().lower())
    if name not in DTYPES:
        raise SpecError(f"unknown --dtype {text!r} (known: {', '.join(DTYPES)})")
    return name


def pattern_modulus(op: str, dtype: str, world: int) -> int:
    """Check values are integers 0..M-1, so that sums over all ranks stay exact in the data type."""
    if not COLLECTIVES.get(op).reducing:
        return min(PATTERN_MAX, DTYPES[dtype][2])
    return min(PATTERN_MAX, DTYPES[dtype][2] // world + 1)


def validate(spec: CommSpec) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SpecError(msg)

    need(bool(spec.ops), "no collective to run (--op)")
    for op in spec.ops:
        need(op in COLLECTIVES, f"unknown collective {op!r} (known: {', '.join(COLLECTIVES.names())})")
    need(spec.dtype in DTYPES, f"unknown dtype {spec.dtype!r} (known: {', '.join(DTYPES)})")
    need(spec.min_bytes >= 1, f"-b (minimum bytes) must be at least 1, got {spec.min_bytes}")
    need(spec.max_bytes >= spec.min_bytes,
         f"-e (maximum bytes, {spec.max_bytes}) must be at least -b (minimum bytes, {spec.min_bytes})")
    need(spec.max_bytes <= MAX_BYTES, f"-e must be at most {MAX_BYTES // 2**30}G, got {spec.max_bytes}")
    need(spec.step_factor >= 2, f"-f (step factor) must be at least 2, got {spec.step_factor}")
    need(spec.iters >= 1, f"-n (iterations) must be at least 1, got {spec.iters}")
    need(spec.warmup_iters >= 0, f"-w (warmup iterations) must be 0 or more, got {spec.warmup_iters}")
    need(spec.backend in BACKENDS, f"unknown backend {spec.backend!r} (known: {', '.join(BACKENDS)})")
    need(bool(spec.nproc), "--nproc is empty")
    for n in spec.nproc:
        need(n >= 1, f"--nproc values must be at least 1, got {n}")
    need(spec.threads_per_rank >= 0, f"--threads-per-rank must be 0 (auto) or more, got {spec.threads_per_rank}")
    need(spec.timeout_s > 0, f"--timeout must be positive, got {spec.timeout_s}")
    smallest = min(spec.nproc)
    need(0 <= spec.root < smallest, f"--root must be a rank of every world size (0..{smallest - 1}), got {spec.root}")
    need(spec.corrupt_rank == -1 or 0 <= spec.corrupt_rank < smallest,
         f"--corrupt-rank must be -1 (off) or a rank of every world size (0..{smallest - 1}), got {spec.corrupt_rank}")
    least = min(COLLECTIVES.get(op).min_world for op in spec.ops)
    need(smallest >= least, f"{spec.ops[0]} needs at least {least} processes, got --nproc {smallest}")
    for op in spec.ops:
        if COLLECTIVES.get(op).reducing:
            worst = max(spec.nproc)
            need(pattern_modulus(op, spec.dtype, worst) >= 2,
                 f"--dtype {spec.dtype} cannot hold an exact sum over {worst} ranks: the {op} check "
                 "would be meaningless (use a wider type)")
    for op in spec.ops:
        if COLLECTIVES.get(op).chunked:
            largest = max(spec.nproc) * spec.element_size
            need(spec.max_bytes >= largest,
                 f"{op} splits the message over the ranks: -e must be at least {largest} bytes "
                 f"(world {max(spec.nproc)} x {spec.element_size}-byte {spec.dtype}), got {spec.max_bytes}")
    if spec.backend == "nccl":
        import torch

        need(torch.cuda.is_available(), "backend 'nccl' needs CUDA GPUs and none is visible (use --backend gloo)")
        need(torch.cuda.device_count() >= max(spec.nproc),
             f"--nproc {max(spec.nproc)} needs that many GPUs with nccl; {torch.cuda.device_count()} visible")
