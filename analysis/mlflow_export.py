"""Results to MLflow tracking, so teams keep the history of their scaling measurements.

One parent run per results folder (the sweep): its scaling figures as metrics whose step is the world
size (throughput, efficiency, step-time percentiles, Karp-Flatt, exposed communication, TTA headline),
tags for provenance and the warnings, the report files (markdown, JSON, plots, HTML, plan) as artifacts.
One nested child run per run folder: its resolved config as params (dotted keys), its summary metrics
and status. Numbers come from the report (analysis.report.build), never recomputed here.
MLflow is an optional extra (pip install 'trainscale[mlflow]'); tracking URIs: a server (http://...),
a database (sqlite:///path/mlflow.db: artifacts then go to path/mlartifacts unless the experiment
exists already), or whatever MLflow accepts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainscale.scaling.results import schema
PARAM_MAX = 6000  # MLflow's limit on a param value
ARTIFACT_SUFFIXES = (".md", ".json", ".png", ".html", ".txt")


class ExportError(ValueError):
    pass


@dataclass
class ExportResult:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str] = field(default_factory=dict)  # run folder name -> MLflow run id
    artifacts: list[str] = field(default_factory=list)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:PARAM_MAX]
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return str((db.parent / "mlartifacts").resolve())
    return None


def _client(uri: str):
    """A client of the tracking store at uri (MLflow opens or creates the store here), or ExportError."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ExportError("MLflow is not installed: pip install -c constraints.txt 'trainscale[mlflow]'") from None
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as e:  # MLflow raises its own exception types (and others) for unusable stores
        raise ExportError(f"MLflow tracking URI {uri!r} unusable: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_uri(uri: str) -> None:
    """Open the tracking store once, before any result file is written."""
    _client(uri)


def _experiment_id(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(uri))


def _log(client, run_id: str, metrics: list[tuple[str, float, int]], params: dict[str, str], tags: dict[str, str]) -> None:
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v, step in metrics if _finite(v)]
    ps = [Param(k, v) for k, v in params.items()]
    ts = [RunTag(k, str(v)[:PARAM_MAX]) for k, v in tags.items()]
    for i in range(0, max(len(ms), len(ps), len(ts), 1), 100):  # MLflow's batch limit on params is 100
        client.log_batch(run_id, metrics=ms[i:i + 100], params=ps[i:i + 100], tags=ts[i:i + 100])


def _row_metrics(rep) -> list[tuple[str, float, int]]:
    out = []
    for r in rep.rows:
        w = r.world_size
        out += [("throughput", r.throughput, w), ("throughput_ci_low", r.ci_low, w), ("throughput_ci_high", r.ci_high, w),
                ("per_device_throughput", r.per_device, w), ("step_p50_s", r.step_p50_s, w),
                ("step_p95_s", r.step_p95_s, w), ("step_p99_s", r.step_p99_s, w)]
        for name, v in (("speedup", r.speedup), ("efficiency", r.efficiency), ("karp_flatt", r.karp_flatt)):
            if v is not None:
                out.append((name, v, w))
        if r.comm:
            for name in ("exposed_comm_s", "comm_s", "overlap_pct"):
                if r.comm.get(name) is not None:
                    out.append((name, r.comm[name], w))
    if rep.tta:
        for row in rep.tta.rows:
            if row.summary.headline is not None:
                out.append(("tta_s", row.summary.headline, row.world_size))
            out.append(("tta_invalid_runs", row.summary.invalid, row.world_size))
    return out


def _run_metrics(summary: dict) -> list[tuple[str, float, int]]:
    m = summary.get("metrics") or {}
    out = [("wall_s", summary.get("wall_s"), 0)]
    if m:
        out += [("throughput", m["throughput"]["global_samples_per_s"], 0),
                ("per_device_throughput", m["throughput"]["per_device_samples_per_s"], 0),
                ("time_per_step_s", m.get("time_per_step_s"), 0), ("measured_steps", m.get("measured_steps"), 0)]
        st = m.get("step_time_s") or {}
        out += [(f"step_{k}_s", st.get(k), 0) for k in ("mean", "p50", "p95", "p99")]
    tta = summary.get("tta") or {}
    if tta.get("tta_s") is not None:
        out.append(("tta_s", tta["tta_s"], 0))
    return out


def artifact_files(folders: list[Path]) -> list[Path]:
    files = []
    for f in folders:
        f = Path(f)
        if f.is_file():
            files.append(f)
        elif f.is_dir():
            files += sorted(p for p in f.iterdir() if p.is_file() and p.suffix in ARTIFACT_SUFFIXES)
    return files


def export(rep, uri: str, experiment: str = "trainscale", artifacts: list[Path] | None = None) -> ExportResult:
    """Log a built report (analysis.report.build) and its runs to MLflow."""
    from trainscale.analysis.report import find_runs
    from trainscale.analysis.runs import load_run

    client = _client(uri)
    try:
        exp_id = _experiment_id(client, experiment, uri)
    except Exception as e:  # MLflow raises its own exception types for unusable stores
        raise ExportError(f"MLflow tracking URI {uri!r} unusable: {_first_line(e)}") from None
    env = rep.environment
    source = Path(rep.source)
    parent = client.create_run(exp_id, run_name=source.name, tags={"trainscale.kind": "results"})
    pid = parent.info.run_id
    result = ExportResult(tracking_uri=uri, experiment_id=exp_id, parent_run_id=pid)
    status = "FINISHED"
    try:
        git = env.get("git") or {}
        tags = {"trainscale.source": str(source.resolve()), "trainscale.workload": env.get("workload"),
                "trainscale.parallel": env.get("parallel"), "trainscale.scaling_mode": rep.mode,
                "trainscale.mode_basis": rep.mode_basis, "trainscale.hosts": ",".join(env.get("hosts", [])),
                "trainscale.cpus": ",".join(env.get("cpus", [])), "trainscale.data_kind": env.get("data_kind"),
                "trainscale.backend": env.get("backend"), "trainscale.sample_unit": rep.sample_unit,
                "trainscale.failed_runs": len(rep.failed), "mlflow.source.git.commit": git.get("commit", ""),
                "trainscale.versions": ", ".join(f"{k} {v}" for k, v in sorted((env.get("versions") or {}).items()))}
        for i, w in enumerate(rep.warnings):
            tags[f"trainscale.warning.{i}"] = w
        _log(client, pid, _row_metrics(rep), {"scaling_mode": rep.mode,
                                             "world_sizes": ",".join(str(r.world_size) for r in rep.rows)}, tags)
        for path in find_runs(source):
            run = load_run(path)
            child = client.create_run(exp_id, run_name=path.name, tags={"mlflow.parentRunId": pid,
                                                                         "trainscale.kind": "run"})
            cid = child.info.run_id
            s = run.summary
            _log(client, cid, _run_metrics(s), flatten(run.config),
                 {"trainscale.status": s.get("status"), "trainscale.reason": s.get("reason") or "",
                  "trainscale.world_size": run.world_size, "trainscale.run_dir": str(path.resolve()),
                  "mlflow.source.git.commit": (run.provenance.get("git") or {}).get("commit", "")})
            for f in (schema.SUMMARY, schema.CONFIG, schema.PROVENANCE):
                if (path / f).exists():
                    client.log_artifact(cid, str(path / f))
            client.set_terminated(cid, "FINISHED" if run.ok else "FAILED")
            result.child_run_ids[path.name] = cid
        for f in artifact_files(artifacts or []):
            client.log_artifact(pid, str(f))
            result.artifacts.append(f.name)
    except Exception:
        status = "FAILED"
        raise
    finally:
        client.set_terminated(pid, status)
    return result


def report_folders(rep, extra: list[Path]) -> list[Path]:
    out = [Path(rep.out_dir)]
    plan_dir = Path(rep.source) / "plan"
    if (plan_dir / "plan.json").exists():
        out.append(plan_dir)
    return out + list(extra)


def summary_of(result: ExportResult) -> str:
    return (f"MLflow: experiment {result.experiment_id}, parent run {result.parent_run_id} with "
            f"{len(result.child_run_ids)} run(s), {len(result.artifacts)} artifact(s) at {result.tracking_uri}")
