"""Drills recovered by Slurm's requeue: `trainscale drill --launcher slurm ...` run as (part of) an
sbatch job submitted with --requeue. Each attempt of the job is a torchrun run with no agent restarts
(launch.max_restarts 0); when it fails, the job requeues itself (``scontrol requeue $SLURM_JOB_ID``,
what --requeue allows and SLURM_RESTART_COUNT counts) and the next attempt resumes from the newest
complete checkpoint.

Layout under --out (a file system every attempt reaches):
    job<ID>-<N>/          attempt N's run folder (N = SLURM_RESTART_COUNT), as any run's
    job<ID>/              the job's drill: checkpoints/ and fault_fired.json shared by all attempts
                          (the fault fires in attempt 0 only), and, once an attempt finishes, the
                          attempts merged (events.log, agent_events.jsonl, samples/ with the earlier
                          attempts under samples/attempts/), summary.json with the drill keys,
                          drill_report.md and timeline.png

Clocks: the recovery timeline and goodput compare time.monotonic readings taken in different
attempts (the fault in attempt 0, the restore in attempt 1). That holds because one Slurm node of
this kind runs every attempt on one machine (CLOCK_MONOTONIC is machine-wide); attempts on different
machines would need wall-clock times instead. ``restart_s`` here spans the failed torchrun's exit,
the requeue, Slurm's scheduling and the new job's start up to the new rank 0's main().

A requeued job may start again only after the cluster's credential lifetime (slurm.conf
AuthInfo=cred_expire, 120 s by default): that wait is part of restart_s, as it is of a real
recovery on that cluster (tools/slurm-up.sh --cred-expire sets it for a local Slurm).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from trainscale.faults.drill import drill_summary, record
from trainscale.scaling.orchestration.runner import RunObserver, RunOutcome, execute
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json, write_json_atomic
from trainscale.scaling.spec import RunSpec, SpecError

ATTEMPT_FILE = "slurm_attempt.json"  # in each attempt folder: the CLI's start and the requeue, mono_s
ENGINE_NAME = "slurm"  # the recovery engine, as fault kinds name the engines that can recover them
ENGINE = "Slurm requeue (--requeue, SLURM_RESTART_COUNT)"
_ATTEMPT = re.compile(r"^job(\d+)-(\d+)$")
_RANK_FILE = re.compile(r"^(rank\d{5})\.csv(\.partial)?$")
_INNER = re.compile(r"^(rank\d{5})-attempt(\d+)\.csv$")


class NotInSlurmJob(Exception):
    pass


@dataclass
class Attempt:
    """This attempt of the drill job: its job id, restart count, and where it and the job write."""
    job: str
    restart: int
    out: Path
    started_mono_s: float  # when this attempt's trainscale process started (the requeue timeline)

    @classmethod
    def current(cls, out: str | Path, started_mono_s: float) -> Attempt:
        """The attempt of the Slurm job this process runs in (SLURM_JOB_ID, SLURM_RESTART_COUNT)."""
        job = os.environ.get("SLURM_JOB_ID", "")
        if not job.isdigit():
            raise NotInSlurmJob("drill --launcher slurm runs inside an sbatch job submitted with --requeue "
                                f"(SLURM_JOB_ID is {job!r})")
        return cls(job, int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), Path(out), started_mono_s)

    @property
    def job_folder(self) -> Path:
        return job_dir(self.out, self.job)

    @property
    def run_dir(self) -> Path:
        return attempt_dir(self.out, self.job, self.restart)

    def settings(self) -> dict:
        """Run-spec settings of every attempt: no agent restarts; checkpoints and the fault marker shared."""
        return {"launch": {"max_restarts": 0},
                "checkpoint": {"dir": str(self.job_folder / schema.CHECKPOINTS_DIR)},
                "fault": {"marker": str(self.job_folder / schema.FAULT_FIRED)}}


@dataclass
class AttemptResult:
    outcome: RunOutcome
    requeued: bool  # the attempt failed and put the job back in the queue
    summary: dict | None = None  # the job's drill record, when this attempt ended the job


def run_attempt(attempt: Attempt, spec: RunSpec, max_requeues: int, mtbf_s: float, draw: dict | None,
                observer: RunObserver | None = None) -> AttemptResult:
    """Run this attempt into OUT/job<ID>-<N>; a failed attempt requeues the job (up to max_requeues
    times); the attempt that ends the job merges all attempts into OUT/job<ID> and writes the drill
    record there."""
    if attempt.run_dir.exists():
        raise SpecError(f"results folder {attempt.run_dir} already exists: attempt {attempt.restart} of job "
                        f"{attempt.job} ran")
    attempt.job_folder.mkdir(parents=True, exist_ok=True)
    label = f"drill {spec.fault.kind} {spec.workload} {spec.parallel} x{spec.nproc} (Slurm attempt {attempt.restart})"
    outcome = execute(spec, attempt.run_dir, observer=observer, label=label)
    if not outcome.ok and attempt.restart < max_requeues:
        record_attempt(attempt.run_dir, attempt.job, attempt.restart, attempt.started_mono_s, time.monotonic())
        requeue(attempt.job)
        return AttemptResult(outcome, requeued=True)
    record_attempt(attempt.run_dir, attempt.job, attempt.restart, attempt.started_mono_s, None)
    attempts = attempt_dirs(attempt.out, attempt.job)
    merge_attempts(attempts, attempt.job_folder)
    drill = drill_summary(attempt.job_folder, spec, ENGINE, mtbf_s, draw)
    drill.drill.update(engine_facts(max_requeues, attempts))
    for r, phases in zip(drill.recovery, requeue_phases(attempts)):
        r["slurm_requeue"] = phases  # restart_s split: to the requeue, Slurm's wait and start, torchrun's spawn
    return AttemptResult(outcome, requeued=False, summary=record(attempt.job_folder, drill))


def job_dir(out: Path, job: str) -> Path:
    return Path(out) / f"job{job}"


def attempt_dir(out: Path, job: str, restart_count: int) -> Path:
    return Path(out) / f"job{job}-{restart_count}"


def attempt_dirs(out: Path, job: str) -> list[Path]:
    """The job's attempt folders, by restart count."""
    found = []
    for p in Path(out).iterdir():
        m = _ATTEMPT.match(p.name)
        if m and m.group(1) == job and p.is_dir():
            found.append((int(m.group(2)), p))
    return [p for _, p in sorted(found)]


def record_attempt(run_dir: Path, job: str, restart: int, cli_start_mono_s: float,
                   requeue_mono_s: float | None) -> None:
    write_json_atomic(Path(run_dir) / ATTEMPT_FILE, {"job": job, "slurm_restart_count": restart,
                                                     "cli_start_mono_s": cli_start_mono_s,
                                                     "requeue_mono_s": requeue_mono_s})


def requeue_phases(attempts: list[Path]) -> list[dict]:
    """restart_s of each requeue split in three: the failed attempt's end (torchrun stops the others
    and exits, the run is recorded) up to `scontrol requeue`; the requeue up to the next attempt's
    trainscale start (the requeued job's wait, Slurm's scheduling, the batch script's start); and
    trainscale's start up to the new rank 0's main() (torchrun spawning the ranks)."""
    from trainscale.analysis.eventlog import all_of, mono_s, read_events
    from trainscale.analysis.recovery import read_agent_events

    out = []
    for prev, nxt in zip(attempts, attempts[1:]):
        a, b = Path(prev) / ATTEMPT_FILE, Path(nxt) / ATTEMPT_FILE
        faults = all_of(read_events(prev / schema.EVENTS), schema.EVENT_FAULT) if (prev / schema.EVENTS).exists() else []
        starts = all_of(read_events(nxt / schema.EVENTS), schema.EVENT_ATTEMPT) if (nxt / schema.EVENTS).exists() else []
        if not (a.exists() and b.exists() and faults and starts) or read_json(a)["requeue_mono_s"] is None:
            continue
        requeued, cli_start = read_json(a)["requeue_mono_s"], read_json(b)["cli_start_mono_s"]
        seen = next((e["mono_s"] for e in read_agent_events(prev) if e["mono_s"] >= mono_s(faults[0])), None)
        out.append({"after_failure": prev.name, "attempt": nxt.name,
                    "to_requeue_s": requeued - seen if seen is not None else None,
                    "requeue_to_start_s": cli_start - requeued,
                    "start_to_main_s": starts[0]["metadata"]["main_mono_s"] - cli_start})
    return out


def requeue(job: str) -> None:
    """Put this job back in the queue (Slurm then ends this attempt's batch script)."""
    subprocess.run([shutil.which("scontrol") or "scontrol", "requeue", job], timeout=30, check=True)


def _sample_files(attempt: Path) -> dict[str, list[Path]]:
    """Per rank, its sample files of this attempt, oldest first (torchrun restarts inside it, then the last)."""
    folder = attempt / schema.SAMPLES_DIR
    out: dict[str, list[tuple[int, Path]]] = {}
    if (folder / schema.ATTEMPTS_DIR).is_dir():
        for p in (folder / schema.ATTEMPTS_DIR).iterdir():
            if m := _INNER.match(p.name):
                out.setdefault(m.group(1), []).append((int(m.group(2)), p))
    if folder.is_dir():
        for p in folder.iterdir():
            m = _RANK_FILE.match(p.name)
            if m and not (m.group(2) and (folder / f"{m.group(1)}.csv").exists()):
                out.setdefault(m.group(1), []).append((1 << 30, p))
    return {rank: [p for _, p in sorted(files)] for rank, files in out.items()}


def merge_attempts(attempts: list[Path], job_folder: Path) -> None:
    """The attempts' raw files as one run folder (job_folder), in attempt order, the layout a run
    restarted by torchrun has: the analysis of analysis/recovery.py reads it unchanged."""
    job_folder.mkdir(parents=True, exist_ok=True)
    events = "".join((a / schema.EVENTS).read_text() for a in attempts if (a / schema.EVENTS).exists())
    (job_folder / schema.EVENTS).write_text(events)
    agent = "".join(p.read_text() for a in attempts for p in sorted(a.glob("agent_events*.jsonl")))
    (job_folder / schema.AGENT_EVENTS).write_text(agent)
    per_rank: dict[str, list[Path]] = {}
    for a in attempts:
        for rank, files in _sample_files(a).items():
            per_rank.setdefault(rank, []).extend(files)
    samples = job_folder / schema.SAMPLES_DIR
    shutil.rmtree(samples, ignore_errors=True)
    (samples / schema.ATTEMPTS_DIR).mkdir(parents=True)
    for rank, files in per_rank.items():
        for k, f in enumerate(files[:-1]):
            shutil.copyfile(f, samples / schema.ATTEMPTS_DIR / f"{rank}-attempt{k}.csv")
        shutil.copyfile(files[-1], samples / f"{rank}.csv")
    last = attempts[-1]
    for name in (schema.CONFIG, schema.PROVENANCE):
        if (last / name).exists():
            shutil.copyfile(last / name, job_folder / name)
    summary = read_json(last / schema.SUMMARY)
    summary["run_id"] = job_folder.name
    summary["attempts"] = [_attempt_record(a) for a in attempts]
    write_json_atomic(job_folder / schema.SUMMARY, summary)


def _attempt_record(attempt: Path) -> dict:
    s = read_json(attempt / schema.SUMMARY) if (attempt / schema.SUMMARY).exists() else {}
    restart = int(_ATTEMPT.match(attempt.name).group(2)) if _ATTEMPT.match(attempt.name) else None
    return {"run_dir": str(attempt), "slurm_restart_count": restart, "status": s.get("status"),
            "reason": s.get("reason")}


def engine_facts(max_requeues: int, attempts: list[Path]) -> dict:
    """What the drill record says of this engine (replacing the torchrun agent's keys)."""
    return {"engine": ENGINE, "engine_name": "slurm", "launcher": "slurm", "max_restarts": max_requeues,
            "restarts": len(attempts) - 1,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "clock": "time.monotonic across attempts: every attempt ran on this one machine"}
