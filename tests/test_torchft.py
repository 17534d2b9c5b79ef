"""The torchft engine for real: a Lighthouse process, two replica groups each under its own torchrun
agent, faults that kill or break one group while the other trains on, heals over HTTP; and recovery
engines head to head on one trace replayed on a 2-node emulated cluster (the torchrun elastic agent
restoring checkpoints against torchft with one replica group per node)."""
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


@pytest.mark.parametrize("args, message", [
    (["--engine", "bogus", "--fault", "kill-rank"], "unknown engine 'bogus'"),
    (["--engine", "torchrun,torchft", "--fault", "kill-rank"], "same failure trace"),
    (["--engine", "slurm,torchft", "--faults", "2"], "--engine slurm"),
    (["--engine", "torchft", "--launcher", "local", "--fault", "kill-rank"], "drop --launcher local"),
    (["--engine", "torchft", "--fault", "kill-rank", "--ckpt-every", "5"], "not from checkpoints"),
    (["--engine", "torchft", "--fault", "hang"], "cannot be recovered by the torchft engine"),
    (["--engine", "torchft", "--fault", "kill-node"], "no live group to heal from"),
    (["--engine", "torchft", "--fault", "kill-rank", "--nodes", "2"], "one replica group per node: --nproc 1"),
])
def test_bad_engine_input_is_one_line_exit_2(cli, tmp_path, args, message):
    proc = cli("drill", *args, *RUN, "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


# About 24 s under torchft. Every fault targets node 1's group: a fault fires at the first step its
# target trains after the fault's time, so a group still healing from the fault before takes the next
# one only once it is back in the quorum (a partition of a group training alone cuts off nobody).
CLUSTER_STEPS = 900
CLUSTER_TRACE = {"faults": [{"kind": "kill-node", "at_time_s": 2.0, "node": 1},
                            {"kind": "partition", "at_time_s": 8.0, "node": 1},
                            {"kind": "kill-rank", "at_time_s": 14.0, "rank": 1}], "world_size": 2, "nodes": 2}


@pytest.fixture(scope="module")
def two_node_campaign(tmp_path_factory):
    """torchrun against torchft on a 2-node emulated cluster, one trace with a lost node, a cut link
    and a killed rank: one replica group per node, the Lighthouse on the cluster's switch."""
    import json
    import os

    from .conftest import emulated_cluster, run_cli

    name = f"f{os.getpid() % 100000}"
    out = tmp_path_factory.mktemp("campaign")
    trace = out.parent / f"{out.name}-trace.json"
    trace.write_text(json.dumps(CLUSTER_TRACE))
    with emulated_cluster(name, tmp_path_factory.mktemp("state")) as env:
        from trainscale.launchers import emulated_cluster as cluster_mod

        os.environ.update(env)
        try:
            state = cluster_mod.load(name)
        finally:
            os.environ.pop("TRAINSCALE_STATE_DIR")
        run = [a if a != "2" or RUN[i - 1] != "--nproc" else "1" for i, a in enumerate(RUN)]
        run[run.index("--steps") + 1] = str(CLUSTER_STEPS)
        proc = run_cli("drill", "--engine", "torchrun,torchft", "--trace", str(trace), "--nodes", "2", "--cluster",
                       name, "--detect-timeout", "3", "--partition-s", "3", "--ckpt-every", "40", *run,
                       "--out", str(out), timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield _only_dir(out), state


@pytest.mark.slow
def test_two_node_head_to_head_with_a_lost_node_and_a_cut_link(two_node_campaign):
    import ipaddress
    import re
    import subprocess

    from trainscale.launchers.emulated_cluster import service_address

    campaign, state = two_node_campaign
    c = read_json(campaign / "comparison.json")
    assert [e["engine"] for e in c["engines"]] == ["torchrun", "torchft"]
    assert all(e["status"] == "ok" for e in c["engines"])
    kinds = [f["kind"] for f in CLUSTER_TRACE["faults"]]
    for engine in ("torchrun", "torchft"):
        s = read_json(campaign / engine / "summary.json")
        assert s["nodes"] == 2 and s["world_size"] == 2
        assert [f["kind"] for f in s["drill"]["faults"] if f["fired"]] == kinds
        assert read_json(campaign / engine / "fault_trace.json")["faults"] == CLUSTER_TRACE["faults"]
        assert [n["node_rank"] for n in s["launch"]["emulated_cluster"]["nodes"]] == [0, 1]
    restart, ft_row = c["engines"]
    assert restart["steps_with_fewer_replicas"] == 0 and ft_row["steps_with_fewer_replicas"] > 0
    assert restart["time_to_target_s"] > 0 and ft_row["time_to_target_s"] > 0
    assert set(restart["badput_s"]) >= {"startup", "checkpoint_save", "recovery", "lost_work"}
    assert ft_row["final_params_bitwise_equal"] is True
    assert ft_row["loss_distance"]["reference"] == "torchrun" and ft_row["loss_distance"]["steps"] == CLUSTER_STEPS
    assert (campaign / "progress.png").stat().st_size > 0
    # Planning reads the campaign's restart-engine drill; the torchft drill has no restart timeline.
    from trainscale.analysis.drills import load_drills

    assert [d.path.name for d in load_drills(campaign)] == ["torchrun"]
    ft_dir = campaign / "torchft"
    ft = read_json(ft_dir / "summary.json")
    assert ft["torchft"]["final_state"]["bitwise_equal"], ft["torchft"]["final_state"]
    assert ft["torchft"]["replicas"]["committed_steps"] == CLUSTER_STEPS
    by_kind = {r["fault"]: r for r in ft["recovery"]}
    assert set(by_kind) == set(kinds)
    for kind in ("kill-node", "kill-rank"):  # the group's process died: its agent restarted it, it healed
        r = by_kind[kind]
        assert r["process_restarted"] and r["rejoin_s"] > 0 and r["healed_to_step"] > r["step"], r
        assert r["stall_s"] > 0, r
    # The cut-off group came back once its link was up, its state loaded from the live peer.
    assert by_kind["partition"]["rejoin_s"] is not None and by_kind["partition"]["healthy"], by_kind["partition"]
    # Every address torchft served or advertised was a namespace address of the cluster.
    subnet = ipaddress.ip_network(state.subnet)
    lighthouse = read_json(ft_dir / "lighthouse.json")["address"]
    assert re.fullmatch(rf"http://{re.escape(service_address(state)[0])}:\d+", lighthouse), lighthouse
    peers = re.findall(r"::ffff:([\d.]+) - - \[[^]]*\] \"GET /checkpoint", "".join(
        p.read_text() for p in (ft_dir / "logs").glob("group-*.log")))
    assert peers and all(ipaddress.ip_address(a) in subnet for a in peers), peers
    assert (campaign / "comparison.md").read_text().count("| kill-node |") == 2
    left = subprocess.run(["pgrep", "-f", str(campaign)], capture_output=True, text=True).stdout.split()
    assert not left

