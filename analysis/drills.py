"""Reading fault-drill results (trainscale drill) for planning and reports.

A drill is a run folder whose summary.json has
    "drill":      {"fault", "engine"}
    "recovery":   [{"detection_s", "restart_s", "rendezvous_s", "restore_s", "lost_work_s", "total_s"}, ...]
    "checkpoint": {"save_s_mean", "save_s_samples", "bytes", "every_steps", "async"}
    "goodput":    {"ettr", "badput_s"}
Only these keys are read (and a recovery's "cut_short": a trace drill's recovery that the next fault
interrupted has no full timeline and is left out). For the failure model (analysis.reliability) the
restart time R of a failure is detection + restart + rendezvous + restore: the lost work is what the
model itself accounts for (half a checkpoint interval per failure on average), so it is kept out of R.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json

RECOVERY_KEYS = ("detection_s", "restart_s", "rendezvous_s", "restore_s", "lost_work_s", "total_s")
RESTART_PARTS = ("detection_s", "restart_s", "rendezvous_s", "restore_s")


class DrillError(ValueError):
    """A drill folder that does not hold what the contract says; the message names the key."""


@dataclass
class Drill:
    path: Path
    fault: str
    engine: str
    recovery: list[dict]
    save_s_mean: float | None
    save_s_samples: list[float]
    checkpoint_bytes: int | None
    every_steps: int | None
    async_checkpoint: bool
    ettr: float | None
    badput_s: dict | float | None

    @property
    def name(self) -> str:
        return self.path.name

    def restart_times_s(self) -> list[float]:
        return [sum(float(r[k]) for k in RESTART_PARTS) for r in self.recovery]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def is_drill(run_dir: Path) -> bool:
    p = Path(run_dir) / schema.SUMMARY
    if not p.is_file():
        return False
    try:
        return isinstance(read_json(p).get("drill"), dict)
    except (OSError, ValueError):
        return False


def find_drills(folder: Path) -> list[Path]:
    folder = Path(folder)
    if is_drill(folder):
        return [folder]
    return sorted(p.parent for p in folder.rglob(schema.SUMMARY)
                  if not any(part.startswith(".") for part in p.relative_to(folder).parts) and is_drill(p.parent))


def checked_number(d: dict, key: str, where: str, allow_none: bool = False) -> float | None:
    v = d.get(key)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise DrillError(f"{where}: {key} must be a number of 0 or more, got {v!r}")
    return float(v)


def load_drill(run_dir: Path) -> Drill:
    run_dir = Path(run_dir)
    where = str(run_dir / schema.SUMMARY)
    try:
        s = read_json(run_dir / schema.SUMMARY)
    except (OSError, ValueError) as e:
        raise DrillError(f"{where}: unreadable ({e})") from None
    drill = s.get("drill")
    if not isinstance(drill, dict):
        raise DrillError(f"{where}: no 'drill' section: not a drill")
    recovery = s.get("recovery")
    if not isinstance(recovery, list):
        raise DrillError(f"{where}: 'recovery' must be a list of recoveries, got {recovery!r}")
    timed = []
    for i, r in enumerate(recovery):
        if not isinstance(r, dict):
            raise DrillError(f"{where}: recovery[{i}] must be an object")
        if r.get("cut_short") is True:  # a trace drill's recovery that the next fault interrupted: not timed
            continue
        timed.append({k: checked_number(r, k, f"{where} recovery[{i}]") for k in RECOVERY_KEYS})
    ckpt = s.get("checkpoint") or {}
    if not isinstance(ckpt, dict):
        raise DrillError(f"{where}: 'checkpoint' must be an object")
    samples = ckpt.get("save_s_samples") or []
    if not isinstance(samples, list):
        raise DrillError(f"{where}: checkpoint.save_s_samples must be a list")
    for i, v in enumerate(samples):
        checked_number({"v": v}, "v", f"{where} checkpoint.save_s_samples[{i}]")
    goodput = s.get("goodput") or {}
    return Drill(path=run_dir, fault=str(drill.get("fault")), engine=str(drill.get("engine")),
                 recovery=timed,
                 save_s_mean=checked_number(ckpt, "save_s_mean", f"{where} checkpoint", allow_none=True),
                 save_s_samples=[float(v) for v in samples],
                 checkpoint_bytes=int(ckpt["bytes"]) if ckpt.get("bytes") is not None else None,
                 every_steps=int(ckpt["every_steps"]) if ckpt.get("every_steps") is not None else None,
                 async_checkpoint=bool(ckpt.get("async", False)),
                 ettr=checked_number(goodput, "ettr", f"{where} goodput", allow_none=True),
                 badput_s=goodput.get("badput_s"))


def is_torchft_drill(run_dir: Path) -> bool:
    """A drill under the torchft engine: per-step fault tolerance, no restart timeline to plan with."""
    try:
        return "torchft" in read_json(Path(run_dir) / schema.SUMMARY)
    except (OSError, ValueError):
        return False


def load_drills(folder: Path) -> list[Drill]:
    """The restart engines' drills under folder (torchft drills, e.g. of an engines head-to-head
    campaign, have no restart timeline and are not read here)."""
    found = find_drills(folder)
    if not found:
        raise DrillError(f"no drill results under {folder} (a drill's summary.json has a 'drill' section)")
    paths = [p for p in found if not is_torchft_drill(p)]
    if not paths:
        raise DrillError(f"the drills under {folder} all ran under torchft: planning projects restart times "
                         "from restart-engine drills (--engine torchrun, ray or slurm)")
    return [load_drill(p) for p in paths]


@dataclass(frozen=True)
class FailureInputs:
    """What the failure model needs, and where it came from."""
    restart_s: float
    restart_basis: str
    save_s: float
    save_basis: str

    def to_dict(self) -> dict:
        return asdict(self)


def failure_inputs(drills: list[Drill]) -> FailureInputs:
    """Restart time: mean over every recovery of every drill of detection + restart + rendezvous +
    restore. Save time: mean over every save sample (or the drills' save_s_mean where no samples)."""
    restarts = [t for d in drills for t in d.restart_times_s()]
    if not restarts:
        raise DrillError("the drills recorded no recovery: no restart time to plan with")
    saves = [v for d in drills for v in d.save_s_samples] or [d.save_s_mean for d in drills if d.save_s_mean is not None]
    if not saves:
        raise DrillError("the drills recorded no checkpoint save time")
    names = ", ".join(sorted({d.name for d in drills}))
    return FailureInputs(
        restart_s=float(np.mean(restarts)),
        restart_basis=f"measured: mean detection + restart + rendezvous + restore over {len(restarts)} recovery(ies) "
                      f"of drill(s) {names}",
        save_s=float(np.mean(saves)),
        save_basis=f"measured: mean checkpoint save over {len(saves)} save(s) of drill(s) {names}")
