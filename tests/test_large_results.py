"""Results at fleet scale: per-node Parquet files, streaming analysis, and per-rank views that stay
readable at 1,024 ranks (quantiles, the slowest ranks and nodes named, every rank in per_rank.csv)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trainscale.analysis.report import build
from trainscale.analysis.runs import load_rank_samples, reduce_run, run_metrics
from trainscale.scaling.results import schema
from trainscale.scaling.results.sample_files import (node_sample_files, pack_per_node, rank_sample_files,
                                                     read_rank_infos)

from .conftest import read_json
from .scaled_results import synthesize

pytestmark = pytest.mark.slow  # real runs, and a 1,024-rank folder reported three times

STRAGGLER, FROM_STEP, SLOWDOWN = 300, 100, 1.6  # rank 300 is on host00037 (8 ranks a node)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A real 2-rank run, per-rank files kept (results.pack=never)."""
    from .conftest import TINY_RESNET, run_cli

    out = tmp_path_factory.mktemp("real")
    p = run_cli("run", "--workload", "resnet50", "--nproc", "2", "--steps", "24", "--warmup", "4", "--batch-size", "4",
                *TINY_RESNET, "--set", "results.pack=never", "--out", str(out))
    assert p.returncode == 0, p.stderr
    return next(d for d in out.iterdir() if d.is_dir())


@pytest.fixture(scope="module")
def large_run(real_run, tmp_path_factory) -> Path:
    return synthesize(real_run, tmp_path_factory.mktemp("large") / "r1024", 1024, 200,
                      stragglers={STRAGGLER: (SLOWDOWN, FROM_STEP)})


def test_a_1024_rank_report_is_short_and_names_the_straggler_and_its_node(large_run, cli, tmp_path):
    out = tmp_path / "report"
    p = cli("report", str(large_run), "--out", str(out))
    assert p.returncode == 0, p.stderr
    md = (out / "report.md").read_text()
    assert len(md.splitlines()) < 300
    assert f"rank {STRAGGLER} on host00037, score" in md and f"from measured step {FROM_STEP} " in md
    slowest = md.split("Slowest ranks")[1].split("\n|")[3]  # the first row under the table's header
    assert slowest.startswith(f" 1024 | {STRAGGLER} | host00037 |")
    assert "| 1024 | host00037 | 8 |" in md.split("Slowest nodes")[1].split("\n\n")[1].splitlines()[2]
    assert "| 1024 | 5 |" not in md  # no row per rank
    assert (out / "rank_step_heatmap.png").stat().st_size > 10_000 and not (out / "per_rank_step_times.png").exists()


def test_every_ranks_figures_reach_the_csv(large_run, cli, tmp_path):
    out = tmp_path / "report"
    assert cli("report", str(large_run), "--out", str(out)).returncode == 0
    rows = {int(r["rank"]): r for r in csv.DictReader((out / "per_rank.csv").open())}
    assert sorted(rows) == list(range(1024))
    # Independently of the analysis: every measured row of the node files, grouped by rank.
    table = pq.ParquetDataset(sorted(node_sample_files(large_run).values())).read().to_pandas()
    by_rank = table[table["phase"] == schema.PHASE_MEASURED].groupby("rank")
    for col, key in (("step_s", "step_mean_ms"), ("compute_s", "compute_mean_ms"), ("comm_s", "comm_mean_ms")):
        expected = by_rank[col].mean() * 1e3
        got = np.array([float(rows[r][key]) for r in expected.index])
        assert np.allclose(got, expected.to_numpy(), rtol=1e-6, atol=1e-3), col
    p99 = by_rank["step_s"].quantile(0.99) * 1e3
    assert np.allclose([float(rows[r]["step_p99_ms"]) for r in p99.index], p99.to_numpy(), rtol=1e-6, atol=1e-3)
    assert {r for r, row in rows.items() if row["straggler"] == "True"} == {STRAGGLER}
    assert rows[STRAGGLER]["node"] == "host00037" and rows[STRAGGLER]["straggling_from_step"] == str(FROM_STEP)


def test_packing_a_real_run_keeps_every_figure(real_run, tmp_path):
    before = build(real_run)
    packed = tmp_path / real_run.name
    shutil.copytree(real_run, packed)
    written = pack_per_node(packed)
    assert [p.relative_to(packed).as_posix() for p in written] == ["samples/node00000.parquet", "ranks/node00000.json"]
    assert not rank_sample_files(packed) and not list((packed / schema.RANKS_DIR).glob("rank*.json"))
    assert read_rank_infos(packed) == read_rank_infos(real_run)
    a, b = load_rank_samples(real_run), load_rank_samples(packed)
    assert a.keys() == b.keys()
    for r in a:
        assert a[r].keys() == b[r].keys()
        for col in a[r]:
            assert np.array_equal(a[r][col], b[r][col], equal_nan=col != "phase"), (r, col)
    after = build(packed)
    assert [r.throughput for r in after.rows] == [r.throughput for r in before.rows]
    assert after.rows[0].comm == before.rows[0].comm
    assert read_json(real_run / schema.SUMMARY)["metrics"] == run_metrics(reduce_run(packed))


def test_a_half_packed_folder_reads_each_rank_once(real_run, tmp_path):
    """A stop between writing a node file and removing the per-rank files leaves both: each rank counts once."""
    packed = tmp_path / "half"
    shutil.copytree(real_run, packed)
    csvs = {r: p.read_bytes() for r, p in rank_sample_files(packed).items()}
    pack_per_node(packed)
    for r, data in csvs.items():
        schema.samples_path(packed, r).write_bytes(data)
    assert run_metrics(reduce_run(packed)) == run_metrics(reduce_run(real_run))


def test_a_run_at_scale_packs_itself_and_reports_from_the_node_files(cli, tmp_path, tiny_resnet):
    """results.pack=always on a real 4-rank run (the default packs from 64 ranks)."""
    p = cli("run", "--workload", "resnet50", "--nproc", "4", "--steps", "10", "--warmup", "2", "--batch-size", "2",
            *tiny_resnet, "--set", "results.pack=always", "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    run = next((tmp_path / "out").iterdir())
    assert sorted(x.name for x in (run / schema.SAMPLES_DIR).iterdir()) == ["node00000.parquet"]
    assert sorted(x.name for x in (run / schema.RANKS_DIR).iterdir()) == ["node00000.json"]
    assert read_json(run / schema.PROVENANCE)["packed"]["files"] == ["samples/node00000.parquet", "ranks/node00000.json"]
    assert sorted(read_rank_infos(run)) == [0, 1, 2, 3]
    r = cli("report", str(run))
    assert r.returncode == 0, r.stderr
    assert read_json(run / schema.SUMMARY)["metrics"] == run_metrics(reduce_run(run))


def test_a_damaged_node_file_is_one_line_naming_it(real_run, cli, tmp_path):
    packed = tmp_path / "damaged"
    shutil.copytree(real_run, packed)
    pack_per_node(packed)
    node_file = packed / schema.SAMPLES_DIR / "node00000.parquet"
    node_file.write_bytes(node_file.read_bytes()[: node_file.stat().st_size // 2])
    p = cli("report", str(packed))
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "node00000.parquet" in p.stderr and "Traceback" not in p.stderr
