"""Parallel degrees: the run spec's ``mesh`` and ``pipeline`` sections and how a strategy's degrees
follow from them and the world size. Pure functions, no torch.distributed: validation uses them
before any process starts, and every rank uses them to find its place.

Rank layout (torchtitan's order): tensor parallel innermost, then data parallel, then pipeline,
    rank = (pp_rank * dp + dp_rank) * tp + tp_rank
so a tensor-parallel group is consecutive ranks (the same node when there are several).
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("gpipe", "1f1b")


@dataclass
class MeshConfig:
    """Degrees of the parallel dimensions (--dp/--tp/--pp); 0 means derived from the world size."""
    dp: int = 0
    tp: int = 0
    pp: int = 0


@dataclass
class PipelineConfig:
    schedule: str = "1f1b"  # gpipe | 1f1b
    microbatches: int = 4  # per data-parallel rank and step; must divide the per-rank batch

    def check(self) -> None:
        """ValueError naming the bad setting (the pipeline strategy checks them against the layout)."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown pipeline.schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})")
        if self.microbatches < 1:
            raise ValueError(f"pipeline.microbatches must be at least 1, got {self.microbatches}")


@dataclass(frozen=True)
class Degrees:
    dp: int
    tp: int
    pp: int

    @property
    def size(self) -> int:
        return self.dp * self.tp * self.pp

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(dp_rank, tp_rank, pp_rank) of a global rank."""
        return (rank // self.tp) % self.dp, rank % self.tp, rank // (self.tp * self.dp)

    def label(self) -> str:
        parts = [f"{name}{value}" for name, value in (("dp", self.dp), ("tp", self.tp), ("pp", self.pp))
                 if value > 1 or name == "dp"]
        return "x".join(parts)


def resolve_degrees(dims: tuple[str, ...], parallel: str, world_size: int, mesh: MeshConfig) -> Degrees:
    """The degrees of strategy `parallel`, whose mesh dimensions are dims, at this world size;
    ValueError naming the value that does not fit."""
    given = {"dp": mesh.dp, "tp": mesh.tp, "pp": mesh.pp}
    for name, value in given.items():
        if value < 0:
            raise ValueError(f"mesh.{name} (--{name}) must be 0 (derived) or more, got {value}")
        if name not in dims and value > 1:
            raise ValueError(f"mesh.{name} (--{name}) is {value} but parallel {parallel!r} has no {name} dimension")
        if value > 1 and world_size % value:
            raise ValueError(f"mesh.{name} (--{name}) {value} does not divide the world size {world_size}")
    model_dim = next((d for d in dims if d != "dp"), None)
    dp, model = given["dp"], given[model_dim] if model_dim else 1
    if model_dim is None:
        dp = dp or world_size
    elif dp == 0 and model == 0:
        dp, model = 1, world_size
    elif dp == 0:
        dp = world_size // model
    elif model == 0:
        model = world_size // dp
    degrees = Degrees(dp=dp, tp=model if model_dim == "tp" else 1, pp=model if model_dim == "pp" else 1)
    if degrees.size != world_size:
        raise ValueError(f"degrees dp {degrees.dp} x tp {degrees.tp} x pp {degrees.pp} = {degrees.size} do not match "
                         f"the world size {world_size}")
    return degrees



@dataclass(frozen=True)
class Layout:
    """One rank's place in the dp x tp x pp layout."""
    degrees: Degrees
    rank: int

    @property
    def dp_rank(self) -> int:
        return self.degrees.coords(self.rank)[0]

    @property
    def tp_rank(self) -> int:
        return self.degrees.coords(self.rank)[1]

    @property
    def pp_rank(self) -> int:
        return self.degrees.coords(self.rank)[2]

    @property
    def dp_size(self) -> int:
        return self.degrees.dp

    @property
    def holds_loss(self) -> bool:
        """One rank per data-parallel replica reports that replica's loss and counts its samples: the
        last pipeline stage (it computes the loss), tensor-parallel rank 0 (all tp ranks have it)."""
        return self.tp_rank == 0 and self.pp_rank == self.degrees.pp - 1

    def to_dict(self) -> dict:
        return {"dp": self.degrees.dp, "tp": self.degrees.tp, "pp": self.degrees.pp, "dp_rank": self.dp_rank,
                "tp_rank": self.tp_rank, "pp_rank": self.pp_rank, "holds_loss": self.holds_loss,
                "label": self.degrees.label()}

    @staticmethod
    def data_parallel(rank: int, world_size: int) -> "Layout":
        return Layout(Degrees(dp=world_size, tp=1, pp=1), rank)
