"""Every process a command starts ends when the command ends, however it ends.

- A signal to the trainscale process (SIGTERM, SIGINT, SIGHUP; SIGUSR2 for a node of a Slurm job)
  becomes a Stopped exception in its main thread (``stop_on_signals``): the supervisor's cleanup runs
  on the way out and the run is recorded as stopped, naming the signal.
- The supervisor knows the processes of a launch by two marks: every descendant of its agents it has
  seen (parent links, snapshotted while the launch runs: workers sit in sessions of their own, so a
  process group misses them), and every process with an argument inside the run folder (workers,
  agents, a partition's link healer, which a rank starts detached). After the agents are stopped it
  stops whatever of these is left (``stop_all``). A process that belongs to another live trainscale
  process is left alone: several nodes' trainscale processes share one run folder, and on one
  machine (a local multi-node Slurm) one node's cleanup must not stop another node's agent.
- When the trainscale process itself is killed outright (SIGKILL, the OOM killer) nothing of it runs:
  each agent and each rank asks the kernel for a signal when its parent dies (``die_with_parent``),
  so an agent stops its workers and a worker whose agent is gone ends.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Iterable, Iterator

PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "TRAINSCALE_PARENT_PID"  # in an agent's environment (and so its workers'): the trainscale process it belongs to


class Stopped(BaseException):
    """The process was asked to stop by a signal (a BaseException, as KeyboardInterrupt: no handler
    for ordinary errors swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_stopping: list[int] = []  # the signal this process is stopping for: later ones let the cleanup finish


@contextlib.contextmanager
def stop_on_signals(signals: Iterable[int]) -> Iterator[None]:
    """While inside: the first of these signals raises Stopped in the main thread, and any signal
    after it is ignored, so that the cleanup on the way out is not cut short; handlers restored after."""
    def stop(signum, _frame):
        if _stopping:
            return
        _stopping.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent(sig: int = signal.SIGTERM, parent_pid: int | None = None) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux prctl); if the parent
    (parent_pid, when given) is already gone, act on it now."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None if it is gone (or a zombie): with the
    pid, it names one process even after pids are reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _parents() -> dict[int, int]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(pids: Iterable[int]) -> set[tuple[int, int]]:
    """(pid, start ticks) of every live descendant of the given processes, and of them."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [p for p in pids if p in parents]
    while todo:
        pid = todo.pop()
        ticks = start_ticks(pid)
        if ticks is not None and (pid, ticks) not in found:
            found.add((pid, ticks))
            todo += children.get(pid, [])
    return found


def owned_by_another(pid: int) -> bool:
    """Whether the process carries another live trainscale process as its owner (PARENT_PID_ENV)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    prefix = f"{PARENT_PID_ENV}=".encode()
    owner = next((item[len(prefix):] for item in env if item.startswith(prefix)), b"")
    return owner.isdigit() and int(owner) != os.getpid() and start_ticks(int(owner)) is not None


def mentioning(folder: Path) -> set[tuple[int, int]]:
    """(pid, start ticks) of the processes with an argument that is the folder or a path inside it
    (never this process, nor one that another live trainscale process owns)."""
    name = str(Path(folder).resolve()).encode()
    me, found = os.getpid(), set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if any(a == name or a.startswith(name + b"/") for a in args) and not owned_by_another(int(proc.name)):
                ticks = start_ticks(int(proc.name))
                if ticks is not None:
                    found.add((int(proc.name), ticks))
        except OSError:
            continue
    return found


def alive(processes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(pid, ticks) for pid, ticks in processes if start_ticks(pid) == ticks]


def stop_all(processes: Iterable[tuple[int, int]], grace_s: float = 5.0) -> int:
    """SIGTERM the processes that are still the ones named, SIGKILL what is left after grace_s;
    (stopped processes are sent SIGCONT so that they can act on SIGTERM). How many there were."""
    left = alive(processes)
    count = len(left)
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = alive(left)
        if not left:
            break
    return count
