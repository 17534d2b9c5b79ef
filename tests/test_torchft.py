"""The torchft engine for real: a Lighthouse process, two replica groups each under its own torchrun
agent, faults that kill or break one group while the other trains on, heals over HTTP; and recovery
engines head to head on one trace (the torchrun elastic agent restoring checkpoints against torchft)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import read_json

STEPS = 400  # long enough (about 8 s of steps) for the trace's three faults to fire, with margin
RUN = ["--workload", "gpt", "--set", "model.preset=tiny", "--nproc", "2", "--steps", str(STEPS), "--warmup", "2",
       "--batch-size", "4", "--timeout", "300"]
TRACE = ["--faults", "3", "--mtbf-s", "1.5", "--seed", "0", "--fault-mix", "kill-rank=1,exception=1"]


def _only_dir(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def torchft_drill(tmp_path_factory):
    from .conftest import run_cli

    out = tmp_path_factory.mktemp("torchft")
    proc = run_cli("drill", "--engine", "torchft", *TRACE, *RUN, "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_dir(out)
    return run_dir, read_json(run_dir / "summary.json")


@pytest.mark.slow
def test_torchft_trace_drill_heals_groups_to_bitwise_equal_parameters(torchft_drill):
    run_dir, s = torchft_drill
    assert s["status"] == "ok", s.get("reason")
    assert s["launcher"] == "torchft" and s["drill"]["engine"].startswith("torchft")
    trace = read_json(run_dir / "fault_trace.json")
    assert len(trace["faults"]) == 3 and trace["seed"] == 0
    fired = [f for f in s["drill"]["faults"] if f["fired"]]
    assert len(fired) >= 2 and s["drill"]["restarts"] >= len(fired) - 1
    t = s["torchft"]
    assert t["final_state"]["bitwise_equal"], t["final_state"]
    assert len(set(t["final_state"]["final_params_sha256"].values())) == 1
    assert t["replicas"]["groups"] == 2 and t["replicas"]["committed_steps"] == STEPS
    assert 0 < t["replicas"]["steps_with_fewer_replicas"] < STEPS and t["replicas"]["samples_lost"] > 0
    for r in s["recovery"]:
        assert r["detection_s"] is not None and r["detection_s"] >= 0
        if r["healthy"]:  # a healthy group was training: it stalled, then went on without the victim
            assert r["stall_s"] > 0 and r["lost_steps"] >= 0
        assert r["rejoin_s"] is None or r["rejoin_s"] > 0
    # The group that failed came back by healing from its live peer: its heals moved it forward.
    assert any(r["healed_to_step"] is not None and r["healed_to_step"] > r["step"] for r in s["recovery"])
    # Nothing of the run is left: the Lighthouse and every group's processes ended with the command.
    import subprocess

    left = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    assert not left
    report = (run_dir / "drill_report.md").read_text()
    assert "bitwise equal" in report and (run_dir / "timeline.png").stat().st_size > 0


@pytest.mark.slow
def test_engines_head_to_head_on_the_replayed_trace(cli, tmp_path, torchft_drill):
    run_dir, _s = torchft_drill
    proc = cli("drill", "--engine", "torchrun,torchft", "--trace", str(run_dir / "fault_trace.json"),
               "--ckpt-every", "8", *RUN, "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    campaign = _only_dir(tmp_path)
    c = read_json(campaign / "comparison.json")
    assert [e["engine"] for e in c["engines"]] == ["torchrun", "torchft"]
    restart, ft = c["engines"]
    assert restart["status"] == ft["status"] == "ok"
    # The same faults replayed under each engine.
    for engine in ("torchrun", "torchft"):
        assert read_json(campaign / engine / "fault_trace.json")["faults"] == \
            read_json(run_dir / "fault_trace.json")["faults"]
    assert restart["time_to_target_s"] > 0 and ft["time_to_target_s"] > 0
    assert restart["steps_with_fewer_replicas"] == 0 and ft["steps_with_fewer_replicas"] > 0
    assert ft["final_params_bitwise_equal"] is True
    assert ft["loss_distance"]["reference"] == "torchrun" and ft["loss_distance"]["steps"] == STEPS
    assert set(restart["badput_s"]) >= {"startup", "checkpoint_save", "recovery", "lost_work"}
    assert (campaign / "comparison.md").read_text().count("| torchft |") >= 1
    assert (campaign / "progress.png").stat().st_size > 0
    # Planning reads the campaign's restart-engine drill; the torchft drill has no restart timeline.
    from trainscale.analysis.drills import load_drills

    drills = load_drills(campaign)
    assert [d.path.name for d in drills] == ["torchrun"]


@pytest.mark.parametrize("args, message", [
    (["--engine", "bogus", "--fault", "kill-rank"], "unknown engine 'bogus'"),
    (["--engine", "torchrun,torchft", "--fault", "kill-rank"], "same failure trace"),
    (["--engine", "slurm,torchft", "--faults", "2"], "--engine slurm"),
    (["--engine", "torchft", "--launcher", "local", "--fault", "kill-rank"], "drop --launcher local"),
    (["--engine", "torchft", "--fault", "kill-rank", "--ckpt-every", "5"], "not from checkpoints"),
    (["--engine", "torchft", "--fault", "hang"], "cannot be recovered by the torchft engine"),
])
def test_bad_engine_input_is_one_line_exit_2(cli, tmp_path, args, message):
    proc = cli("drill", *args, *RUN, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())
