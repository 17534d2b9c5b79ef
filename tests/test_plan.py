"""Capacity planning (analysis.plan, trainscale plan) on a hand-made result set with known answers."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import read_json, run_cli
from tests.handmade_results import write_drill, write_sweep, write_torchft_drill
from trainscale.analysis.drills import DrillError, failure_inputs, load_drills
from trainscale.analysis.models import scaling_data
from trainscale.analysis.plan import PlanInputs, PlanError, build_plan
from trainscale.analysis.reliability import daly_interval_s
from trainscale.analysis.report import build

# T(N) = 0.1 s + 0.02 s x 2(N-1)/N per step, 8 images per device: weak scaling
C, K, BATCH = 0.1, 0.02, 8


def step_s(world: int) -> float:
    return C + K * 2 * (world - 1) / world


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("plan") / "sweep", {w: step_s(w) for w in (1, 2, 4)}, batch=BATCH)


def _plan(sweep: Path, **kw):
    report = build(sweep, out_dir=sweep.parent / "report-tmp")
    return build_plan(report, scaling_data(report), PlanInputs(**kw))


def test_plan_arithmetic(sweep: Path):
    plan = _plan(sweep, nodes=[1, 2, 8], gpus_per_node=2, cost_per_node_hour=2.0, target_samples=1e6,
                 efficiency_threshold=0.8)
    assert plan.model.compute_s == pytest.approx(C, rel=1e-9) and plan.model.k == pytest.approx(K, rel=1e-6)
    rows = {r.nodes: r for r in plan.rows}
    assert [rows[n].world_size for n in (1, 2, 8)] == [2, 4, 16]
    # world 2 and 4 were measured: their throughput is the measurement
    assert rows[1].label == "measured" and rows[1].throughput == pytest.approx(16 / step_s(2), rel=1e-9)
    assert rows[2].label == "measured" and rows[2].throughput == pytest.approx(32 / step_s(4), rel=1e-9)
    # world 16 is the model: 128 / (0.1 + 0.02 x 30/16) = 930.909...
    assert rows[8].label == "extrapolated" and rows[8].throughput == pytest.approx(128 / 0.1375, rel=1e-6)
    assert rows[8].efficiency == pytest.approx((128 / 0.1375) / (16 * 80), rel=1e-6)  # 0.7273
    assert rows[1].efficiency == pytest.approx((16 / 0.12) / 160, rel=1e-9)  # 0.8333: above 0.8
    assert not rows[1].below_threshold and rows[2].below_threshold and plan.threshold_nodes == 2
    # time to train 1e6 images, node-hours and cost
    assert rows[1].train_hours == pytest.approx(1e6 * 0.12 / 16 / 3600)  # 2.0833 h
    assert rows[8].train_hours == pytest.approx(1e6 * 0.1375 / 128 / 3600)
    assert rows[8].node_hours == pytest.approx(8 * rows[8].train_hours)
    assert rows[8].cost == pytest.approx(2.0 * rows[8].node_hours)
    # no deadline: the fewest node-hours wins (1 node, 2.083 nh < 2 nodes, 2.257 nh < 8 nodes, 2.387 nh)
    assert plan.best.nodes == 1
    assert all(r.pareto for r in plan.rows)  # each is faster but dearer than the one before
    # validation: fitted on worlds 1 and 2, world 4 predicted exactly
    (point,) = plan.validation.points
    assert point.world_size == 4 and abs(point.error_pct) < 1e-6


def test_plan_deadline_picks_the_cheapest_that_meets_it(sweep: Path):
    plan = _plan(sweep, nodes=[1, 2, 8], gpus_per_node=2, target_samples=1e6, deadline_hours=1.5)
    rows = {r.nodes: r for r in plan.rows}
    assert rows[1].meets_deadline is False and rows[2].meets_deadline and rows[8].meets_deadline
    assert plan.best.nodes == 2  # 2.257 node-hours against 2.387 for 8 nodes
    plan = _plan(sweep, nodes=[1, 2], gpus_per_node=2, target_samples=1e6, deadline_hours=0.5)
    assert plan.best is None and "no planned node count meets" in plan.best_reason


def test_plan_goodput_with_failures_from_drills(tmp_path: Path, sweep: Path):
    rec = {"detection_s": 2.0, "restart_s": 10.0, "rendezvous_s": 3.0, "restore_s": 5.0, "lost_work_s": 7.0,
           "total_s": 27.0}
    write_drill(tmp_path / "drills" / "kill-a", [rec, {**rec, "restart_s": 30.0, "total_s": 47.0}], [4.0, 6.0])
    write_drill(tmp_path / "drills" / "kill-b", [rec], [8.0])
    failures = failure_inputs(load_drills(tmp_path / "drills"))
    assert failures.restart_s == pytest.approx((20 + 40 + 20) / 3)  # detection + restart + rendezvous + restore
    assert failures.save_s == pytest.approx(6.0)  # mean of every save sample
    plan = _plan(sweep, nodes=[8], gpus_per_node=2, target_samples=1e6, node_mtbf_hours=1000.0, failures=failures)
    (row,) = plan.rows
    m = 1000.0 * 3600 / 8  # job MTBF: node MTBF / nodes
    tau = daly_interval_s(6.0, m)
    goodput = tau / (m * math.exp(failures.restart_s / m) * math.expm1((tau + 6.0) / m))
    assert row.job_mtbf_hours == pytest.approx(125.0) and row.checkpoint_interval_s == pytest.approx(tau)
    assert row.goodput == pytest.approx(goodput) and 0.99 < row.goodput < 1
    assert row.expected_hours == pytest.approx(row.train_hours / goodput)


def _engine_campaign(folder: Path) -> Path:
    """torchrun: restart R = 10 s, save 1 s; torchft: stall S = 30 s, back after J = 60 s (made slow, so
    that the engines cross over: torchft's cost per failure is larger, torchrun's checkpoints cost more
    the rarer the failures)."""
    rec = {"detection_s": 1.0, "restart_s": 6.0, "rendezvous_s": 2.0, "restore_s": 1.0, "lost_work_s": 3.0,
           "total_s": 13.0}
    write_drill(folder / "torchrun", [rec, {**rec, "cut_short": True}], [1.0])
    write_torchft_drill(folder / "torchft", [{"stall_s": 20.0, "rejoin_s": 50.0}, {"stall_s": 40.0, "rejoin_s": 70.0},
                                             {"stall_s": None, "rejoin_s": None}])
    return folder


def test_engine_goodput_per_size_names_the_better_engine(tmp_path: Path, sweep: Path):
    from trainscale.analysis.engine_goodput import LLAMA3_GPU_FAILURES_PER_DAY, engine_costs
    from trainscale.analysis.reliability import expected_goodput

    costs = {c.engine: c for c in engine_costs(_engine_campaign(tmp_path / "campaign"))[0]}
    assert costs["torchrun"].restart_s == pytest.approx(10.0) and costs["torchrun"].save_s == pytest.approx(1.0)
    assert costs["torchft"].stall_s == pytest.approx(30.0) and costs["torchft"].rejoin_s == pytest.approx(60.0)
    assert costs["torchft"].faults == 2  # the fault with no healthy group training is left out
    assert LLAMA3_GPU_FAILURES_PER_DAY * 16384 == pytest.approx(419 / 54)  # 7.76 a day per 16,384 GPUs
    rate = 1.0  # failures per GPU-day: a job MTBF of 12 h at 2 GPUs, 21 s at 4096
    plan = _plan(sweep, nodes=[1, 2, 64, 4096], gpus_per_node=1, engines=list(costs.values()),
                 gpu_failures_per_day=rate)
    rows = {r.nodes: r for r in plan.engines}
    for n, row in rows.items():
        m = 86400 / (n * rate)
        assert row.job_mtbf_hours == pytest.approx(m / 3600)
        assert row.goodput["torchrun"] == pytest.approx(expected_goodput(m, 1.0, 10.0).goodput)
        if n > 1:
            assert row.goodput["torchft"] == pytest.approx(math.exp(-(30.0 + 60.0 / n) / m))
    assert rows[1].goodput["torchft"] is None and rows[1].better == "torchrun"  # one group: no peer to heal from
    # Rare failures: torchrun's checkpoints cost more than torchft's slow recoveries (0.9549 vs 0.9773)...
    assert rows[64].better == "torchft" and rows[64].goodput["torchft"] > rows[64].goodput["torchrun"]
    # ...frequent ones: torchft's 30 s stall per failure costs more (0.4499 vs 0.2410).
    assert rows[4096].better == "torchrun" and rows[4096].goodput["torchrun"] > rows[4096].goodput["torchft"]
    # The main table keeps its own failure model (only with --mtbf-hours); the engines' is separate.
    assert all(r.goodput is None for r in plan.rows)


@pytest.mark.slow
def test_plan_cli_projects_each_engine_of_a_campaign(tmp_path: Path, sweep: Path):
    campaign = _engine_campaign(tmp_path / "campaign")
    out = tmp_path / "plan"
    p = run_cli("plan", str(sweep), "--nodes", "2,64,4096", "--drills", str(campaign), "--gpu-failures-per-day", "1",
                "--out", str(out), timeout=180)
    assert p.returncode == 0, p.stderr
    engines = read_json(out / "plan.json")["engines"]
    assert [r["better"] for r in engines["rows"]] == ["torchft", "torchft", "torchrun"]
    assert "1 failures per GPU-day" in engines["rate"]
    md = (out / "plan.md").read_text()
    assert "## Recovery engines" in md and "| 4096 | 4096 |" in md and "torchft goodput" in md
    assert "recovery engines: modelled goodput" in p.stdout + p.stderr
    default = run_cli("plan", str(sweep), "--nodes", "16384", "--drills", str(campaign), "--json", timeout=180)
    assert default.returncode == 0, default.stderr
    assert "7.76 a day per 16,384 GPUs" in read_json(sweep / "plan" / "plan.json")["engines"]["rate"]


def test_drills_that_break_the_contract_are_refused(tmp_path: Path):
    write_drill(tmp_path / "d", [{"detection_s": 1.0, "restart_s": 1.0, "rendezvous_s": 1.0, "restore_s": 1.0,
                                  "lost_work_s": 1.0}], [1.0])  # no total_s
    with pytest.raises(DrillError, match="total_s"):
        load_drills(tmp_path / "d")
    with pytest.raises(DrillError, match="no drill results"):
        load_drills(tmp_path / "empty-folder-does-not-exist")


def test_plan_needs_a_failure_model_for_an_mtbf(sweep: Path):
    with pytest.raises(PlanError, match="mtbf"):
        _plan(sweep, nodes=[1], gpus_per_node=1, node_mtbf_hours=100.0)


@pytest.mark.slow
def test_plan_cli_writes_the_plan(tmp_path: Path, sweep: Path):
    out = tmp_path / "plan"
    p = run_cli("plan", str(sweep), "--nodes", "1,2,8", "--gpus-per-node", "2", "--target-samples", "1e6",
                "--cost-per-node-hour", "2", "--mtbf-hours", "1000", "--restart-s", "20", "--ckpt-save-s", "6",
                "--out", str(out), timeout=180)
    assert p.returncode == 0, p.stderr
    plan = read_json(out / "plan.json")
    assert [r["label"] for r in plan["rows"]] == ["measured", "measured", "extrapolated"]
    assert plan["validation"]["points"][0]["world_size"] == 4
    assert {f.name for f in out.iterdir()} >= {"plan.json", "plan.md", "plan_throughput.png", "plan_efficiency.png",
                                               "plan_pareto.png"}
    md = (out / "plan.md").read_text()
    assert "| 8 | 16 |" in md and "extrapolated" in md and "Model validation" in md


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--nodes", "0,4"], "--nodes values must be at least 1, got 0"),
    (["--nodes", "4,x"], "--nodes must be a comma-separated list of integers, got '4,x'"),
    (["--nodes", "4", "--mtbf-hours", "100"], "--mtbf-hours needs restart and checkpoint-save times"),
    (["--nodes", "4", "--efficiency-threshold", "1.5"], "--efficiency-threshold must be in (0, 1], got 1.5"),
    (["--nodes", "4", "--target-accuracy"], "--target-accuracy needs time-to-accuracy runs"),
    (["--nodes", "4", "--drills", "/nonexistent-drills"], "--drills folder not found: /nonexistent-drills"),
    (["--nodes", "4", "--gpu-failures-per-day", "0.1"], "--gpu-failures-per-day projects the recovery engines"),
    (["--nodes", "4", "--gpu-failures-per-day", "nan"], "nan"),
    (["--nodes", "4", "--gpu-failures-per-day", "-1"], "--gpu-failures-per-day must be positive, got -1"),
])
def test_plan_bad_input(tmp_path: Path, sweep: Path, args: list[str], message: str):
    out = tmp_path / "plan"
    p = run_cli("plan", str(sweep), *args, "--out", str(out), timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in p.stderr
    assert not out.exists()


def test_plan_with_a_link_of_known_rate(tmp_path: Path):
    # 4 MB all_reduce per step over 100 Mbit/s links, 80% of it exposed: T(N) = 0.05 + 0.8 x 2(N-1)/N x 4e6 / 12.5e6
    from trainscale.analysis.models import link_model

    rate, nbytes = 100e6 / 8, 4_000_000

    def t(world: int) -> float:
        return 0.05 + 0.8 * 2 * (world - 1) / world * nbytes / rate

    sweep = write_sweep(tmp_path / "sweep", {w: t(w) for w in (1, 2, 4)}, allreduce_bytes=nbytes)
    report = build(sweep, out_dir=tmp_path / "report")
    plan = build_plan(report, scaling_data(report), PlanInputs(nodes=[16], gpus_per_node=1, link_bandwidth="100mbit"),
                      link_model(rate))
    assert plan.model.k == pytest.approx(0.8, rel=1e-6) and "link model" in plan.model.describe()
    (row,) = plan.rows
    assert row.throughput == pytest.approx(16 * 8 / t(16), rel=1e-6) and row.label == "extrapolated"
    (point,) = plan.validation.points
    assert point.world_size == 4 and abs(point.error_pct) < 1e-6
    assert point.predicted_comm_s == pytest.approx(1.5 * nbytes / rate)
    assert any("ring over links of 100mbit" in w for w in plan.warnings)
