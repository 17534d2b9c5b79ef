"""Export to MLflow tracking (trainscale export, report --mlflow) into real local stores: a SQLite
database (MLflow's recommended local backend) and the file store (file: URI), read back afterwards."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.handmade_results import write_sweep

STEP = {1: 0.1, 2: 0.12, 4: 0.13}  # seconds per step; 8 images per device
THROUGHPUT = {w: 8 * w / t for w, t in STEP.items()}


def need_mlflow() -> None:
    if importlib.util.find_spec("mlflow") is None:  # make install-test installs the extra
        pytest.fail("MLflow is not installed: pip install -c constraints.txt -e '.[mlflow]'")


@pytest.mark.slow
def test_export_to_a_sqlite_store(tmp_path: Path):
    need_mlflow()
    sweep = write_sweep(tmp_path / "sweep", STEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = run_cli("export", str(sweep), "--mlflow", uri, "--experiment", "scaling-tests", timeout=240)
    assert p.returncode == 0, p.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("scaling-tests")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("trainscale.kind") == "results"]
    children = [r for r in runs if r.data.tags.get("trainscale.kind") == "run"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["trainscale.scaling_mode"] == "weak"
    history = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "throughput")}
    assert history.keys() == THROUGHPUT.keys()
    for w, x in THROUGHPUT.items():
        assert history[w] == pytest.approx(x, rel=1e-9)
    efficiency = {m.step: m.value for m in client.get_metric_history(parent.info.run_id, "efficiency")}
    assert efficiency[4] == pytest.approx(THROUGHPUT[4] / (4 * THROUGHPUT[1]), rel=1e-9)
    assert {"report.md", "report.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    by_world = {int(r.data.params["nproc"]): r for r in children}
    assert sorted(by_world) == [1, 2, 4]
    child = by_world[2]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["batch_size"] == "8" and child.data.params["data.kind"] == "synthetic"
    assert child.data.metrics["throughput"] == pytest.approx(THROUGHPUT[2], rel=1e-9)
    assert "summary.json" in {a.path for a in client.list_artifacts(child.info.run_id)}


@pytest.mark.slow
def test_export_to_a_file_store(tmp_path: Path, monkeypatch):
    need_mlflow()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    from trainscale.analysis.mlflow_export import export
    from trainscale.analysis.report import write_report

    sweep = write_sweep(tmp_path / "sweep", STEP)
    report = write_report(sweep)
    store = tmp_path / "mlruns"
    result = export(report, store.as_uri(), "file-store", [Path(report.out_dir)])
    run_dir = store / result.experiment_id / result.parent_run_id
    assert (run_dir / "meta.yaml").is_file()
    values = [line.split() for line in (run_dir / "metrics" / "throughput").read_text().splitlines()]
    assert {int(step): float(v) for _, v, step in values} == pytest.approx(THROUGHPUT, rel=1e-9)
    assert (run_dir / "artifacts" / "report.md").is_file()
    assert len(result.child_run_ids) == 3
    for cid in result.child_run_ids.values():
        child = store / result.experiment_id / cid
        assert (child / "params" / "nproc").read_text() in {"1", "2", "4"}
        assert (child / "tags" / "mlflow.parentRunId").read_text() == result.parent_run_id


@pytest.mark.slow
def test_unusable_tracking_uri_is_a_one_line_error(tmp_path: Path):
    need_mlflow()
    sweep = write_sweep(tmp_path / "sweep", STEP)
    p = run_cli("report", str(sweep), "--mlflow", "bogus://nowhere", timeout=180)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus://nowhere" in lines[0]
    assert not (sweep / "report").exists()
