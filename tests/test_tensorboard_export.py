"""trainscale export --tensorboard: a real run's results written as TensorBoard event files and read back
with TensorBoard's own reader; bad input refused in one line before anything is written."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_RESNET, read_json, run_cli
from tests.handmade_results import write_sweep
from trainscale.analysis.reduction import measured
from trainscale.analysis.runs import load_run
from trainscale.analysis.tensorboard_export import GIB, memory_values, summary_values
from trainscale.scaling.results import schema
from trainscale.scaling.results.sample_files import iter_rank_samples

REL = 1e-6  # TensorBoard stores scalars as float32


def accumulator(log_dir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def series(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def recorded_steps(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step numbers, max over ranks of step_s and mean loss over ranks, per measured step."""
    steps = step_max = loss_sum = None
    n = 0
    for _, cols in iter_rank_samples(run_dir):
        m = measured(cols)
        if steps is None:
            steps, step_max, loss_sum = m["step"], m["step_s"].copy(), m["loss"].copy()
        else:
            step_max, loss_sum = np.maximum(step_max, m["step_s"]), loss_sum + m["loss"]
        n += 1
    return steps.astype(int), step_max, loss_sum / n


def one_line_error(p) -> str:
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    p = run_cli("run", "--workload", "resnet50", "--nproc", "2", "--steps", "10", "--warmup", "2",
                "--batch-size", "2", *TINY_RESNET, "--out", str(out))
    assert p.returncode == 0, p.stderr
    (run,) = [d for d in out.iterdir() if (d / schema.SUMMARY).exists()]
    return run


@pytest.mark.slow
def test_a_real_run_reads_back_with_tensorboard(real_run: Path, tmp_path: Path):
    tb = tmp_path / "tb"
    p = run_cli("export", str(real_run), "--tensorboard", str(tb))
    assert p.returncode == 0, p.stderr
    assert "1 run(s) written" in p.stderr
    acc = accumulator(tb / real_run.name)
    summary = read_json(real_run / schema.SUMMARY)
    metrics = summary["metrics"]
    steps, step_max, loss = recorded_steps(real_run)
    assert metrics["measured_steps"] == 8 and steps.tolist() == list(range(2, 10))

    step_time = series(acc, "step_time_s")
    assert list(step_time) == steps.tolist()
    assert list(step_time.values()) == pytest.approx(step_max.tolist(), rel=REL)
    assert list(step_time.values()) == pytest.approx(load_run(real_run).reduction().global_step_s.tolist(), rel=REL)
    assert list(series(acc, "loss").values()) == pytest.approx(loss.tolist(), rel=REL)
    per_step_x = series(acc, "throughput/step")
    assert list(per_step_x.values()) == pytest.approx((summary["global_batch"] / step_max).tolist(), rel=REL)

    world = summary["world_size"]
    assert world == 2
    assert series(acc, "throughput/global") == {world: pytest.approx(metrics["throughput"]["global_samples_per_s"], rel=REL)}
    assert series(acc, "throughput/per_device")[world] == pytest.approx(
        metrics["throughput"]["per_device_samples_per_s"], rel=REL)
    assert series(acc, "time_per_step_s")[world] == pytest.approx(metrics["time_per_step_s"], rel=REL)
    assert series(acc, "step_time_s/p50")[world] == pytest.approx(metrics["step_time_s"]["p50"], rel=REL)
    assert series(acc, "step_time_s/p99")[world] == pytest.approx(metrics["step_time_s"]["p99"], rel=REL)
    assert series(acc, "world_size") == {world: 2.0}

    # a CPU run: peak RSS, max over ranks; no CUDA memory, MFU or tokens
    ranks = [read_json(f) for f in sorted((real_run / schema.RANKS_DIR).glob("rank*.json"))]
    rss = max(r["memory"]["peak_rss_bytes"] for r in ranks) / 2**30
    assert series(acc, "memory/max_rss(GiB)")[world] == pytest.approx(rss, rel=REL)
    tags = set(acc.Tags()["scalars"])
    assert not tags & {"memory/max_reserved(GiB)", "memory/max_allocated(GiB)", "mfu(%)", "throughput(tps)"}


@pytest.mark.slow
def test_exporting_again_replaces_the_event_files(real_run: Path, tmp_path: Path):
    tb = tmp_path / "tb"
    for _ in range(2):
        assert run_cli("export", str(real_run), "--tensorboard", str(tb)).returncode == 0
    assert len(list((tb / real_run.name).glob("events.out.tfevents.*"))) == 1
    assert len(accumulator(tb / real_run.name).Scalars("step_time_s")) == 8


def test_a_sweep_names_runs_by_their_path_and_skips_failed_ones(tmp_path: Path):
    sweep = write_sweep(tmp_path / "sweep", {1: 0.1, 2: 0.12})
    failed = sweep / "runs" / "1x2-r0"
    summary = read_json(failed / schema.SUMMARY)
    (failed / schema.SUMMARY).write_text(json.dumps({**summary, "status": "failed", "reason": "rank 1 exited 1"}))
    tb = tmp_path / "tb"
    p = run_cli("export", str(sweep), "--tensorboard", str(tb))
    assert p.returncode == 0, p.stderr
    assert "skipped runs/1x2-r0: failed: rank 1 exited 1" in p.stderr and "1 run(s) written" in p.stderr
    assert not (tb / "runs" / "1x2-r0").exists()
    acc = accumulator(tb / "runs" / "1x1-r0")
    assert list(series(acc, "step_time_s")) == list(range(2, 22))
    assert set(series(acc, "loss").values()) == {1.0}
    run_summary = read_json(sweep / "runs" / "1x1-r0" / schema.SUMMARY)
    assert series(acc, "throughput/global") == {
        1: pytest.approx(run_summary["metrics"]["throughput"]["global_samples_per_s"], rel=REL)}


def test_a_damaged_samples_file_is_a_one_line_error_and_nothing_is_written(tmp_path: Path):
    sweep = write_sweep(tmp_path / "sweep", {1: 0.1, 2: 0.12})
    damaged = schema.samples_path(sweep / "runs" / "1x2-r0", 1)
    with open(damaged, "a") as f:
        f.write("22,measured\n")
    tb = tmp_path / "tb"
    line = one_line_error(run_cli("export", str(sweep), "--tensorboard", str(tb)))
    assert str(damaged) in line
    assert not tb.exists()


@pytest.mark.parametrize("flags, says", [
    ([], "give --mlflow URI, --tensorboard DIR or both"),
    (["--tensorboard", ""], "--tensorboard DIR is empty"),
    (["--tensorboard", "{tmp}/tb", "--out", "{tmp}/report"], "--out"),
    (["--tensorboard", "{tmp}/a-file/tb"], "--tensorboard"),
    (["--tensorboard", "{tmp}/a-file"], "--tensorboard must be a folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, flags: list[str], says: str):
    sweep = write_sweep(tmp_path / "sweep", {1: 0.1})
    (tmp_path / "a-file").write_text("not a folder")
    before = sorted(tmp_path.rglob("*"))
    line = one_line_error(run_cli("export", str(sweep), *[f.format(tmp=tmp_path) for f in flags]))
    assert says in line
    assert sorted(tmp_path.rglob("*")) == before


def test_tensorboard_missing_names_the_install_command(tmp_path: Path):
    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))}
    line = one_line_error(run_cli("export", str(tmp_path), "--tensorboard", str(tmp_path / "tb"), env=env))
    assert "pip install -c constraints.txt 'trainscale[tensorboard]'" in line
    assert not (tmp_path / "tb").exists()


@pytest.mark.slow
def test_mlflow_and_tensorboard_together(tmp_path: Path):
    sweep = write_sweep(tmp_path / "sweep", {1: 0.1, 2: 0.12})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = run_cli("export", str(sweep), "--mlflow", uri, "--tensorboard", str(tmp_path / "tb"), timeout=240)
    assert p.returncode == 0, p.stderr
    assert "MLflow:" in p.stderr and "2 run(s) written" in p.stderr
    assert (sweep / "report" / "report.md").is_file()
    assert sorted(d.name for d in (tmp_path / "tb" / "runs").iterdir()) == ["1x1-r0", "1x2-r0"]


def test_cuda_memory_mfu_and_tokens_take_torchtitans_names():
    cuda = "torch.cuda.max_memory_allocated over the training loop"
    infos = {r: {"memory": {"measure": cuda, "peak_bytes": (3 + r) * GIB, "peak_reserved_bytes": (4 + r) * GIB,
                            "peak_rss_bytes": GIB, "peak_rss_window": "training loop"}} for r in range(2)}
    values, how = memory_values(infos)
    assert values == {"memory/max_reserved(GiB)": 5.0, "memory/max_allocated(GiB)": 4.0, "memory/max_rss(GiB)": 1.0}
    assert how == cuda
    cpu = {0: {"memory": {"measure": "peak RSS", "peak_bytes": GIB, "peak_rss_bytes": GIB,
                          "peak_rss_window": "process lifetime"}}}
    assert memory_values(cpu) == ({"memory/max_rss(GiB)": 1.0}, "peak RSS; peak RSS over the process lifetime")

    metrics = {"world_size": 4, "time_per_step_s": 0.5, "step_time_s": {"p50": 0.5, "p99": 0.6},
               "throughput": {"global_samples_per_s": 8000.0, "per_device_samples_per_s": 2000.0}}
    tokens = summary_values({"sample_unit": "tokens", "metrics": metrics,
                             "parallelism": {"mfu": {"value": 0.25, "achieved_flops_per_s": 8e14}}})
    assert tokens["throughput(tps)"] == 2000.0 and tokens["world_size"] == 4.0
    assert tokens["mfu(%)"] == pytest.approx(25.0) and tokens["tflops"] == pytest.approx(200.0)
    images = summary_values({"sample_unit": "images", "metrics": metrics,
                             "parallelism": {"mfu": {"value": None, "reason": "unavailable: a CPU"}}})
    assert images == {"throughput/global": 8000.0, "throughput/per_device": 2000.0, "time_per_step_s": 0.5,
                      "step_time_s/p50": 0.5, "step_time_s/p99": 0.6, "world_size": 4.0}


def test_an_mfu_over_100_percent_is_left_out():
    metrics = {"world_size": 1, "throughput": {"global_samples_per_s": 1.0, "per_device_samples_per_s": 1.0}}
    flagged = {"value": 3.0, "achieved_flops_per_s": 3e12, "flags": ["300% of the datasheet peak is over 100%"]}
    values = summary_values({"metrics": metrics, "parallelism": {"mfu": flagged}})
    assert "mfu(%)" not in values and values["tflops"] == pytest.approx(3.0)
