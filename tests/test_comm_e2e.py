"""trainscale comm for real: multi-process gloo collectives, raw files, recomputable numbers, and a
correctness check that catches an injected corruption."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from trainscale.scaling.results import schema
from trainscale.analysis.collectives import OPS, CollectiveModel, bus_factor

from .conftest import read_json

pytestmark = pytest.mark.slow


def test_all_ops_over_two_world_sizes_json_files_and_recomputable_numbers(cli, tmp_path: Path):
    proc = cli("comm", "--op", "all", "--nproc", "1,2", "-b", "64", "-e", "64K", "-f", "4", "-n", "3", "-w", "1",
               "--json", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    comm_dir = Path(doc["comm_dir"])
    assert doc["summary"]["status"] == "ok" and doc["wrong_total"] == 0
    assert doc["provenance"]["versions"]["torch"].startswith("2.13.0")
    sizes = [64, 256, 1024, 4096, 16384, 65536]
    got = defaultdict(list)
    for r in doc["results"]:
        got[(r["op"], r["world_size"])].append(r["bytes"])
    assert got[("all_reduce", 2)] == sizes and got[("all_to_all", 2)] == sizes and got[("send_recv", 2)] == sizes
    assert ("send_recv", 1) not in got and got[("broadcast", 1)] == sizes  # no send to oneself
    assert {(f["op"], f["world_size"]) for f in doc["fits"]} == set(got)
    assert all(f["label"] == "fitted" and f["alpha_s"] >= 0 for f in doc["fits"])

    # Every row recomputed from the raw per-rank per-iteration files.
    raw = defaultdict(dict)
    for world in (1, 2):
        for rank in range(world):
            with open(schema.samples_path(comm_dir / f"np{world}", rank), newline="") as f:
                for row in csv.DictReader(f):
                    raw[(row["op"], world, int(row["bytes"]))].setdefault(rank, []).append(float(row["time_s"]))
    for r in doc["results"]:
        times = raw[(r["op"], r["world_size"], r["bytes"])]
        assert len(times) == r["world_size"] and all(len(t) == 3 for t in times.values())
        assert r["time_s"] == pytest.approx(max(np.mean(t) for t in times.values()), rel=1e-6)
        assert r["algbw_gbps"] == pytest.approx(r["bytes"] / r["time_s"] / 1e9, rel=1e-9)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * bus_factor(r["op"], r["world_size"]), rel=1e-9)
        assert r["wrong"] == 0 and r["p50_s"] <= r["p99_s"]
    assert all(c["wrong"] == 0 and c["checked"] > 0 for c in read_json(schema.rank_info_path(comm_dir / "np2", 1))["checks"])

    # The stored fit predicts what its parameters say.
    model = CollectiveModel.load(comm_dir)
    fit = next(f for f in doc["fits"] if f["op"] == "all_reduce" and f["world_size"] == 2)
    assert model.predict_time("all_reduce", 8192, 2).seconds == pytest.approx(fit["alpha_s"] + fit["beta_s_per_byte"] * 8192)

    for name in (schema.COMM_CONFIG, schema.PROVENANCE, schema.SUMMARY, schema.COMM_RESULTS, schema.COMM_TABLE):
        assert (comm_dir / name).exists(), name
    assert (comm_dir / "busbw.png").stat().st_size > 5000
    table = (comm_dir / schema.COMM_TABLE).read_text()
    for op in OPS:
        assert f"# {op}, world size 2" in table
    assert "#wrong" in table and "alpha-beta fit (fitted, not measured)" in table and "Out of bounds values : 0 OK" in table

    # The report command recomputes the same rows from the folder alone.
    again = cli("report", str(comm_dir), "--out", str(tmp_path / "again"), timeout=120)
    assert again.returncode == 0, again.stderr
    assert read_json(tmp_path / "again" / schema.COMM_RESULTS)["results"] == doc["results"]


def test_the_check_catches_a_corrupted_result(cli, tmp_path: Path):
    proc = cli("comm", "--op", "all_reduce,reduce_scatter,broadcast", "--nproc", "2", "-b", "1K", "-e", "4K",
               "-n", "2", "-w", "0", "--corrupt-rank", "1", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 1, proc.stderr
    comm_dir = Path(proc.stdout.strip().splitlines()[-1])
    rows = [line.split() for line in proc.stdout.splitlines() if line and not line.startswith("#") and line[0] == " "]
    assert len(rows) == 9 and all(row[-1] == "1" for row in rows)  # #wrong: one element per size, on rank 1
    assert "Out of bounds values : 9 FAILED" in proc.stdout
    summary = read_json(comm_dir / schema.SUMMARY)
    assert summary["status"] == "failed" and summary["wrong_total"] == 9
    assert "9 result element(s) failed the correctness check" in summary["reason"]
    checks = {rank: read_json(schema.rank_info_path(comm_dir / "np2", rank))["checks"] for rank in (0, 1)}
    assert [c["wrong"] for c in checks[0]] == [0] * 9 and [c["wrong"] for c in checks[1]] == [1] * 9
