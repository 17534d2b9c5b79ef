"""Time-to-accuracy end to end: real multi-process gloo runs of the digits workload (and ResNet-50 on
a generated image folder), the MLPerf event log read by mlperf-logging's own parser, the report, and
compare on identical and slowed configurations."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from mlperf_logging.compliance_checker.mlp_parser import parse_file

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import write_json_atomic

from .conftest import read_json
from .test_data import make_image_folder

pytestmark = pytest.mark.slow

MLPERF_RULESET = "6.1.0"


def parsed_log(run_dir: Path) -> list:
    """The run's event log through mlperf-logging's compliance-checker parser: no line may fail."""
    lines, errors = parse_file(str(run_dir / schema.EVENTS), ruleset=MLPERF_RULESET)
    assert errors == [], errors
    return lines


def mono(line) -> float:
    return line.value["metadata"]["mono_s"]


def check_tta_run(run_dir: Path, reached: bool) -> dict:
    summary = read_json(run_dir / schema.SUMMARY)
    assert summary["status"] == "ok", summary.get("reason")
    tta = summary["tta"]
    lines = parsed_log(run_dir)
    keys = [ln.key for ln in lines]
    for key in ("init_start", "init_stop", "run_start", "run_stop", "epoch_start", "epoch_stop", "eval_start",
                "eval_stop", "eval_accuracy", "seed", "global_batch_size", "train_samples", "eval_samples",
                "ts_target_accuracy"):
        assert key in keys, key
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("train_samples")  # data after the clock
    evals = [ln for ln in lines if ln.key == "eval_accuracy"]
    assert all("epoch_num" in ln.value["metadata"] for ln in evals)
    assert [ln.value["metadata"]["total"] for ln in evals] == [next(
        ln for ln in lines if ln.key == "eval_samples").value["value"]] * len(evals)  # every sample once
    run_start = next(ln for ln in lines if ln.key == "run_start")
    stop = next(ln for ln in lines if ln.key == "run_stop")
    target = summary["target_accuracy"]
    hit = next((ln for ln in evals if ln.value["value"] >= target), None)
    assert tta["valid"] is reached and (hit is not None) is reached
    if reached:
        # the summary's TTA is exactly the time between the two log lines
        assert tta["tta_s"] == mono(hit) - mono(run_start)
        assert stop.value["metadata"]["status"] == "success"
        assert hit is evals[-1]  # training stopped at the evaluation that reached the target
    else:
        assert tta["tta_s"] is None and stop.value["metadata"]["status"] == "aborted"
    # Per-step samples keep the evaluation time; the throughput window leaves it out.
    with open(schema.samples_path(run_dir, 0)) as f:
        rows = list(csv.DictReader(f))
    assert {"epoch", "eval_s"} <= set(rows[0])
    assert sum(float(r["eval_s"]) > 0 for r in rows) == len(evals)
    assert sum(float(r["eval_s"]) for r in rows) == pytest.approx(tta["eval_s_total"], rel=1e-6)
    return summary


CHECKPOINTS = ["--set", "checkpoint.every_steps=20", "--set", "checkpoint.keep=10"]


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory) -> Path:
    """digits to its target on 1, 2 and 4 processes, a checkpoint every 20 steps (kept: the 2-process
    run is the uninterrupted reference of the checkpoint test below)."""
    from .conftest import run_cli

    proc = run_cli("sweep", "--workload", "digits", "--nproc", "1,2,4", *CHECKPOINTS,
                   "--out", str(tmp_path_factory.mktemp("digits")), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_digits_reaches_its_target_on_1_2_and_4_processes(cli, digits_sweep: Path):
    sweep = digits_sweep
    index = read_json(sweep / schema.SWEEP_INDEX)
    assert [r["world_size"] for r in index["runs"]] == [1, 2, 4]
    for entry in index["runs"]:
        summary = check_tta_run(sweep / entry["path"], reached=True)
        assert summary["tta"]["target"] == 0.97 and summary["tta"]["reached"]["accuracy"] >= 0.97
        assert summary["metrics"]["throughput"]["global_samples_per_s"] > 0
    report = read_json(sweep / "report" / "report.json")
    rows = report["tta"]["rows"]
    assert [r["world_size"] for r in rows] == [1, 2, 4]
    assert all(r["summary"]["invalid"] == 0 and r["summary"]["headline"] > 0 for r in rows)
    assert rows[0]["efficiency"] == pytest.approx(1.0)
    tta = [r["summary"]["headline"] for r in rows]
    assert rows[2]["efficiency"] == pytest.approx(tta[0] / (4 * tta[2]))
    assert report["tta"]["throughput_efficiency"]["4"] == report["rows"][2]["efficiency"]
    md = (sweep / "report" / "report.md").read_text()
    assert "## Time to accuracy" in md and "TTA efficiency" in md
    assert (sweep / "report" / "tta_curves.png").stat().st_size > 5000
    # compare on sweep folders: TTA is the metric; one run a side is reported, not tested
    same = cli("compare", str(sweep), str(sweep))
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines() == [f"world {w}: not tested (1.00x; one run on a side)" for w in (1, 2, 4)]
    assert "tta_s" in same.stderr


def _evals(run_dir: Path) -> list[tuple[int, int]]:
    """(step, samples classified correctly) of every evaluation in the run's log."""
    return [(ln.value["metadata"]["step"], ln.value["metadata"]["correct"]) for ln in parsed_log(run_dir)
            if ln.key == "eval_accuracy"]


def _run_dir(proc) -> Path:
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_tta_checkpoints_restart_the_run_and_resume_it_at_another_world_size(cli, tmp_path: Path, digits_sweep: Path):
    """A: digits on 2 processes, uninterrupted, a checkpoint every 20 steps (the sweep's). The same run with rank 1
    killed at step 60 restarts from its step-60 checkpoint and makes exactly A's evaluations; its TTA
    counts from the first attempt's run_start. B resumes A's step-60 checkpoint on 1 process (the
    same global batch): the same evaluation steps, accuracies within 1% (another reduction order),
    and A's clock at the save carried into B's TTA."""
    entry = next(r for r in read_json(digits_sweep / schema.SWEEP_INDEX)["runs"] if r["world_size"] == 2)
    a = digits_sweep / entry["path"]
    a_summary = check_tta_run(a, reached=True)
    assert a_summary["tta"]["attempts"] == 1 and a_summary["tta"]["carried_s"] == 0
    reference = _evals(a)

    killed = _run_dir(cli("drill", "--workload", "digits", "--nproc", "2", "--fault", "kill-rank", "--rank", "1",
                          "--at-step", "60", "--ckpt-every", "20", "--out", str(tmp_path / "drill")))
    summary = read_json(killed / schema.SUMMARY)
    assert summary["status"] == "ok" and summary["tta"]["attempts"] == 2, summary.get("reason")
    assert _evals(killed) == reference  # the steps after the restart are the uninterrupted run's
    lines = parsed_log(killed)
    starts = [ln for ln in lines if ln.key == "run_start"]
    restore = [ln for ln in lines if ln.key == schema.EVENT_CKPT_RESTORE and ln.value["value"] == 60]
    hit = [ln for ln in lines if ln.key == "eval_accuracy"][-1]
    assert restore and mono(starts[0]) < mono(restore[0]) < mono(starts[1]) < mono(hit)
    assert summary["tta"]["tta_s"] == mono(hit) - mono(starts[0])  # the failure and the restart are in it

    saved = torch.load(a / "checkpoints" / "step00000060" / "rank00000.pt", weights_only=False)["loader"]
    b = _run_dir(cli("run", "--workload", "digits", "--nproc", "1", "--batch-size", "64", "--set",
                     f"checkpoint.resume_from={a / 'checkpoints' / 'step00000060'}", "--out", str(tmp_path / "b")))
    b_summary = read_json(b / schema.SUMMARY)
    tta = b_summary["tta"]
    assert b_summary["status"] == "ok" and tta["valid"], b_summary.get("reason")
    assert tta["carried_s"] == saved["tta_clock_s"] > 0 and tta["resumed_from"]["step"] == 60
    lines = parsed_log(b)
    run_start = next(ln for ln in lines if ln.key == "run_start")
    hit = next(ln for ln in lines if ln.key == "eval_accuracy" and ln.value["value"] >= 0.97)
    assert tta["tta_s"] == pytest.approx(saved["tta_clock_s"] + mono(hit) - mono(run_start), abs=1e-9)
    resumed = _evals(b)
    after = [(step, correct) for step, correct in reference if step > 60]
    total = next(ln for ln in lines if ln.key == "eval_samples").value["value"]
    assert [s for s, _ in resumed] == [s for s, _ in after]
    assert all(abs(c - c_ref) <= 0.01 * total for (_, c), (_, c_ref) in zip(resumed, after)), (resumed, after)


def test_a_run_that_misses_its_target_is_invalid(cli, tmp_path: Path):
    proc = cli("run", "--workload", "digits", "--nproc", "2", "--target-accuracy", "0.999", "--set",
               "eval.max_epochs=1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr  # the run worked; its result is INVALID
    assert "INVALID" in proc.stderr and "counts as the slowest run" in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    summary = check_tta_run(run_dir, reached=False)
    assert summary["tta"]["epochs_run"] == 1 and len(summary["tta"]["evals"]) == 1


def test_resnet50_on_a_real_image_folder_takes_the_same_path(cli, tmp_path: Path, tiny_resnet):
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}
    make_image_folder(tmp_path / "data" / "train", colours, per_class=8)
    make_image_folder(tmp_path / "data" / "val", colours, per_class=3)
    proc = cli("run", "--workload", "resnet50", "--nproc", "2", "--batch-size", "4", *tiny_resnet,
               "--set", "model.num_classes=0", "--set", "data.kind=real", "--set", f"data.path={tmp_path / 'data'}",
               "--set", "eval.max_epochs=2", "--out", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert read_json(run_dir / schema.CONFIG)["target_accuracy"] == 0.759  # MLPerf's ResNet-50 target
    summary = read_json(run_dir / schema.SUMMARY)
    evals = summary["tta"]["evals"]
    assert 1 <= len(evals) <= 2 and all(0 <= e["accuracy"] <= 1 for e in evals)
    check_tta_run(run_dir, reached=any(e["accuracy"] >= 0.759 for e in evals))


def _interleaved_runs(root: Path, repeats: int) -> dict[str, Path]:
    """A and B: the same configuration; C: the same with rank 1 a straggler (its compute 6x slower).
    Runs alternate A, B, C so that drift of this shared machine spreads over all three. Every run
    uses the same seed, so all reach the target at the same step and differ in time only."""
    from trainscale.scaling.orchestration.runner import execute
    from trainscale.scaling.resolve import resolve

    sides = {name: root / name for name in ("A", "B", "C")}
    base = ["eval.every_steps=10"]
    slow = ["fault.kind=slow", "fault.rank=1", "fault.at_step=0", "fault.slow_factor=6"]
    for r in range(repeats):
        for name, folder in sides.items():
            spec = resolve(flags={"workload": "digits", "nproc": 2, "timeout_s": 300},
                           sets=base + (slow if name == "C" else []))
            outcome = execute(spec, folder / f"r{r}")
            assert outcome.ok, outcome.summary.get("reason")
            assert outcome.summary["tta"]["valid"]
    return sides


def test_compare_identical_and_slowed_configurations(cli, tmp_path: Path):
    sides = _interleaved_runs(tmp_path, repeats=4)
    # alpha 0.005 and a 10% minimum effect: identical configurations on a shared, noisy machine are
    # called different at most 0.5% of the time; the slowed one (about 4x) is far beyond both.
    args = ("--alpha", "0.005", "--min-effect", "0.1", "--json")
    same = cli("compare", str(sides["A"]), str(sides["B"]), *args)
    assert same.returncode == 0, same.stderr
    result = json.loads(same.stdout)
    assert result["metric"] == "tta_s"
    (world,) = result["worlds"]
    assert world["label"] == "world 2" and world["result"]["test"] == "welch"
    assert not world["result"]["significant"]
    assert world["result"]["verdict"].startswith(("no significant difference", "no meaningful difference"))

    slowed = cli("compare", str(sides["A"]), str(sides["C"]), *args)
    assert slowed.returncode == 0, slowed.stderr
    (world,) = json.loads(slowed.stdout)["worlds"]
    r = world["result"]
    assert r["significant"] and r["ratio"] < 1 and r["ci_high"] < 1  # B (slowed) is slower: ratio = A/B
    assert r["p_value"] < 0.005 and "slowdown" in r["verdict"]
    plain = cli("compare", str(sides["A"]), str(sides["C"]))
    assert plain.stdout.strip().startswith("world 2: ") and "x slowdown (0." in plain.stdout

    # The fair-comparison guard: a side with another global batch is refused unless allowed.
    other = tmp_path / "other"
    shutil.copytree(sides["B"], other)
    for run in other.iterdir():
        summary = read_json(run / schema.SUMMARY)
        write_json_atomic(run / schema.SUMMARY, {**summary, "global_batch": 128})
    refused = cli("compare", str(sides["A"]), str(other))
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("trainscale compare: error: refusing to compare world 2: global_batch differs "
                                      "(A: 64; B: 128); pass --allow-difference global_batch if that difference is "
                                      "the point")
    allowed = cli("compare", str(sides["A"]), str(other), "--allow-difference", "global_batch")
    assert allowed.returncode == 0 and "marked:" in allowed.stderr and "global_batch differs" in allowed.stderr
