"""The collective ops, one definition each: names, the buffers of one message size, the call, the
result every rank must hold after it (the correctness check of ``trainscale comm``), the bus-bandwidth
factor and the ring algorithm's sequential steps (docs/method.md "Collective bandwidth").

Message size ("bytes") is nccl-tests' ``size``, per rank: the buffer each rank holds for all_reduce,
broadcast and send_recv; the gathered output for all_gather; the input before scattering for
reduce_scatter and scatter (the root's buffer); each rank's send buffer for all_to_all. busbw = algbw x bus_factor(n).

The definitions are torch-free so that analysis can use them: buffers are element counts, the call is
handed torch.distributed and the tensors, and the expected result is described as pieces of the check
pattern (which rank's pattern, from which element, how many), summed or concatenated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trainscale.scaling.results.registry import Registry


@dataclass(frozen=True)
class Buffers:
    """Element counts of one message size: input, output (0: the op works in place on its input), the
    elements of one per-rank chunk, and the count in nccl-tests' sense (the message size / element size)."""
    inp: int
    out: int
    chunk: int
    count: int

    @property
    def in_place(self) -> bool:
        return self.out == 0


@dataclass(frozen=True)
class Expected:
    """A rank's correct result: the check pattern of rank q from element start, n elements, for each
    piece, combined by "sum" (reducing ops) or "cat" (data movement)."""
    combine: str
    pieces: tuple[tuple[int, int, int], ...]


class CollectiveOp:
    name: str = ""
    summary: str = ""
    aliases: tuple[str, ...] = ()  # nccl-tests' binary names (allreduce_perf ...) work too
    size_means: str = "the buffer each rank holds"  # what its message size ("bytes") counts
    bus_factor_text: str = "1"  # bus_factor(n) as the tables print it
    reducing: bool = False  # sums over the ranks: the check values must stay exact in the dtype
    chunked: bool = False  # the message is split into one chunk per rank
    rooted: bool = False  # a root rank (--root) sends or receives for the others
    min_world: int = 1  # send_recv between distinct ranks needs two

    def bus_factor(self, n: int) -> float:
        return 1.0

    def ring_steps(self, n: int) -> int:
        """Sequential latency terms of the ring algorithm (used to carry a latency to other world sizes)."""
        return max(1, n - 1)

    def buffers(self, size: int, world: int, element_size: int) -> Buffers | None:
        """`size` bytes rounded down to whole elements (and whole chunks); None when nothing is left."""
        count = size // element_size
        return Buffers(count, 0, count, count) if count else None

    def call(self, dist: Any, inp: Any, out: Any, rank: int, world: int, root: int) -> Callable[[], None]:
        raise NotImplementedError

    def input_pattern(self, rank: int, root: int) -> tuple[int, int]:
        """(whose pattern, offset) the check puts into this rank's input: its own, unless the op's
        result must overwrite it (then a value no correct result holds)."""
        return rank, 0

    def expected(self, b: Buffers, rank: int, world: int, root: int) -> Expected:
        raise NotImplementedError


def _chunked(size: int, world: int, element_size: int, gathered_input: bool, scattered_output: bool) -> Buffers | None:
    chunk = size // (world * element_size)
    if chunk == 0:
        return None
    total = chunk * world
    return Buffers(chunk if gathered_input else total, chunk if scattered_output else total, chunk, total)


class AllReduce(CollectiveOp):
    name, aliases, reducing = "all_reduce", ("allreduce",), True
    summary = "every rank ends with the sum of all ranks' buffers"
    bus_factor_text = "2(n-1)/n"

    def bus_factor(self, n: int) -> float:
        return 2.0 * (n - 1) / n

    def ring_steps(self, n: int) -> int:
        return max(1, 2 * (n - 1))

    def call(self, dist, inp, out, rank, world, root):
        return lambda: dist.all_reduce(inp)

    def expected(self, b, rank, world, root):
        return Expected("sum", tuple((q, 0, b.inp) for q in range(world)))


class AllGather(CollectiveOp):
    name, aliases, chunked = "all_gather", ("allgather",), True
    summary = "every rank ends with every rank's chunk"
    size_means, bus_factor_text = "the gathered output (world x each rank's chunk)", "(n-1)/n"

    def bus_factor(self, n: int) -> float:
        return (n - 1) / n

    def buffers(self, size, world, element_size):
        return _chunked(size, world, element_size, gathered_input=True, scattered_output=False)

    def call(self, dist, inp, out, rank, world, root):
        gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
        return lambda: gather(out, inp)

    def expected(self, b, rank, world, root):
        return Expected("cat", tuple((q, 0, b.chunk) for q in range(world)))


class ReduceScatter(CollectiveOp):
    name, aliases, reducing, chunked = "reduce_scatter", ("reducescatter",), True, True
    summary = "rank r ends with chunk r of the sum"
    size_means, bus_factor_text = "the input before scattering (world x each rank's output)", "(n-1)/n"

    def bus_factor(self, n: int) -> float:
        return (n - 1) / n

    def buffers(self, size, world, element_size):
        return _chunked(size, world, element_size, gathered_input=False, scattered_output=True)

    def call(self, dist, inp, out, rank, world, root):
        scatter = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)
        return lambda: scatter(out, inp)

    def expected(self, b, rank, world, root):
        return Expected("sum", tuple((q, rank * b.chunk, b.chunk) for q in range(world)))


class Broadcast(CollectiveOp):
    name, rooted = "broadcast", True
    summary = "every rank ends with the root's buffer"

    def call(self, dist, inp, out, rank, world, root):
        return lambda: dist.broadcast(inp, src=root)

    def input_pattern(self, rank, root):
        return (rank, 0) if rank == root else (root, 1)

    def expected(self, b, rank, world, root):
        return Expected("cat", ((root, 0, b.inp),))


class Scatter(CollectiveOp):
    name, chunked, rooted = "scatter", True, True
    summary = "rank r ends with chunk r of the root's buffer"
    size_means, bus_factor_text = "the root's buffer (world x each rank's output)", "(n-1)/n"

    def bus_factor(self, n: int) -> float:
        return (n - 1) / n

    def buffers(self, size, world, element_size):
        return _chunked(size, world, element_size, gathered_input=False, scattered_output=True)

    def call(self, dist, inp, out, rank, world, root):
        chunks = list(inp.chunk(world)) if rank == root else None
        return lambda: dist.scatter(out, scatter_list=chunks, src=root)

    def expected(self, b, rank, world, root):
        return Expected("cat", ((root, rank * b.chunk, b.chunk),))


class AllToAll(CollectiveOp):
    name, aliases, chunked = "all_to_all", ("alltoall",), True
    summary = "rank r ends with chunk r of every rank's buffer"
    size_means, bus_factor_text = "each rank's send buffer (world chunks)", "(n-1)/n"

    def bus_factor(self, n: int) -> float:
        return (n - 1) / n

    def buffers(self, size, world, element_size):
        return _chunked(size, world, element_size, gathered_input=False, scattered_output=False)

    def call(self, dist, inp, out, rank, world, root):
        return lambda: dist.all_to_all_single(out, inp)

    def expected(self, b, rank, world, root):
        return Expected("cat", tuple((q, rank * b.chunk, b.chunk) for q in range(world)))


class SendRecv(CollectiveOp):
    name, aliases, min_world = "send_recv", ("sendrecv",), 2
    summary = "every rank sends its buffer to the next rank and receives the previous rank's"
    size_means = "the buffer each rank sends"

    def ring_steps(self, n: int) -> int:
        return 1

    def buffers(self, size, world, element_size):
        count = size // element_size
        return Buffers(count, count, count, count) if count else None

    def call(self, dist, inp, out, rank, world, root):
        peers = ((rank + 1) % world, (rank - 1) % world)

        def send_recv() -> None:
            ops = [dist.P2POp(dist.isend, inp, peers[0]), dist.P2POp(dist.irecv, out, peers[1])]
            for work in dist.batch_isend_irecv(ops):
                work.wait()

        return send_recv

    def expected(self, b, rank, world, root):
        return Expected("cat", (((rank - 1) % world, 0, b.out),))


COLLECTIVES: Registry[CollectiveOp] = Registry("collective", [
    AllReduce(), AllGather(), ReduceScatter(), Broadcast(), Scatter(), AllToAll(), SendRecv()])
