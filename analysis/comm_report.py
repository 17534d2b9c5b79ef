"""Results of a ``trainscale comm`` folder, recomputed from its raw files: the per-size rows, the
alpha-beta fits, the nccl-tests-style text table and the busbw plot.

Reads only the folder (comm_config.json, npN/samples/*.csv, npN/ranks/*.json), so a folder copied
off a cluster gives the same table anywhere.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from trainscale.scaling.results import schema
from trainscale.scaling.results.collectives import COLLECTIVES
from trainscale.analysis.collectives import OPS, AlphaBetaFit, SizeResult, fit_results, size_result
from trainscale.scaling.results.files import ResultsError, read_json, read_text, write_json_atomic, write_text_atomic


def read_world(world_dir: Path) -> tuple[dict, dict, dict]:
    """(times, counts, wrong) of one world size: times[(op, bytes)][rank] = per-iteration seconds,
    counts[(op, bytes)] = elements, wrong[(op, bytes)][rank] = elements that failed the check."""
    times: dict = defaultdict(dict)
    counts: dict = {}
    wrong: dict = defaultdict(dict)
    for path in sorted((Path(world_dir) / schema.SAMPLES_DIR).glob("rank*.csv")):
        rank = int(path.stem[4:])
        for n, row in enumerate(csv.DictReader(io.StringIO(read_text(path))), 2):
            try:
                key = (row["op"], int(row["bytes"]))
                times[key].setdefault(rank, []).append(float(row["time_s"]))
                counts[key] = int(row["count"])
            except (KeyError, TypeError, ValueError):
                raise ResultsError(f"{path} line {n}: not a comm sample row ({', '.join(schema.COMM_SAMPLE_COLUMNS)})") \
                    from None
    for path in sorted((Path(world_dir) / schema.RANKS_DIR).glob("rank*.json")):
        info = read_json(path)
        try:
            for c in info.get("checks", []):
                wrong[(c["op"], int(c["bytes"]))][int(info["rank"])] = int(c["wrong"])
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ResultsError(f"{path}: its checks are not a list of op, bytes and wrong") from None
    return times, counts, wrong


def world_results(world_dir: Path, world: int, dtype: str, root: int) -> list[SizeResult]:
    times, counts, wrong = read_world(world_dir)
    rows = []
    for key in sorted(times, key=lambda k: (OPS.index(k[0]) if k[0] in OPS else len(OPS), k[1])):
        if len(times[key]) != world or len(wrong.get(key, {})) != world:
            raise ValueError(f"{world_dir}: {key[0]} {key[1]} B has results from {len(times[key])} of {world} ranks")
        op, nbytes = key
        rows.append(size_result(op, world, nbytes, counts[key], dtype, root, times[key], wrong[key]))
    return rows


def build_results(comm_dir: Path, launches: dict[int, dict] | None = None) -> dict:
    """The results document of a comm folder. launches: per world size {"ok", "reason"} from the
    orchestrator; without it, a world size counts as done when all its ranks left their files."""
    comm_dir = Path(comm_dir)
    config = read_json(comm_dir / schema.COMM_CONFIG)
    if not (isinstance(config, dict) and isinstance(config.get("nproc"), list)
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in config["nproc"])
            and isinstance(config.get("dtype"), str) and isinstance(config.get("root"), int)):
        raise ResultsError(f"{comm_dir / schema.COMM_CONFIG}: not a comm config (nproc: a list of world sizes, "
                           "dtype, root)")
    rows: list[SizeResult] = []
    worlds: dict[str, dict] = {}
    for world in config["nproc"]:
        world_dir = schema.comm_world_dir(comm_dir, world)
        launch = (launches or {}).get(world)
        if launch is not None and not launch["ok"]:
            worlds[str(world)] = {"status": schema.STATUS_FAILED, "reason": launch["reason"]}
            continue
        try:
            got = world_results(world_dir, world, config["dtype"], config["root"])
        except (OSError, ValueError, KeyError) as e:
            worlds[str(world)] = {"status": schema.STATUS_FAILED, "reason": f"results unusable: {e}"}
            continue
        if not got:
            worlds[str(world)] = {"status": schema.STATUS_FAILED, "reason": "no results written"}
            continue
        rows += got
        worlds[str(world)] = {"status": schema.STATUS_OK, "reason": None, "wrong": sum(r.wrong for r in got)}
    fits = fit_results(rows)
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "kind": "comm",
        "definitions": {
            "bytes": "nccl-tests size per rank: " + "; ".join(f"{o.name}: {o.size_means}" for o in COLLECTIVES),
            "time_s": "slowest rank's mean over timed iterations",
            "p50_s/p99_s": "percentiles over iterations of the per-iteration maximum across ranks",
            "algbw_gbps": "bytes / time_s / 1e9",
            "busbw_gbps": "algbw x " + "; ".join(f"{o.bus_factor_text} {o.name}" for o in COLLECTIVES),
            "wrong": "result elements that failed the check, summed over ranks",
            "fits": "t = alpha + beta * bytes per op and world size (fitted, not measured)",
        },
        "config": config,
        "worlds": worlds,
        "results": [r.to_dict() for r in rows],
        "fits": [f.to_dict() for f in fits],
        "wrong_total": int(sum(r.wrong for r in rows)),
    }


# ---------------------------------------------------------------------------------------------
# nccl-tests-style text table

_COLUMNS = (("size(B)", 13), ("count", 12), ("type", 9), ("redop", 6), ("root", 5), ("time(us)", 11),
            ("p50(us)", 11), ("p99(us)", 11), ("algbw(GB/s)", 12), ("busbw(GB/s)", 12), ("#wrong", 7))


def _row(values: list[str]) -> str:
    return " ".join(v.rjust(w) for v, (_, w) in zip(values, _COLUMNS))


def fit_line(f: dict) -> str:
    return (f"# alpha-beta fit (fitted, not measured): t = {f['alpha_s'] * 1e6:.1f} us + bytes / "
            f"{f['asymptotic_algbw_gbps']:.3g} GB/s (busbw {f['asymptotic_busbw_gbps']:.3g} GB/s); "
            f"R^2 {f['r_squared']:.4f}, rel rms err {f['rel_rms_error'] * 100:.1f}%, "
            f"max rel err {f['max_rel_error'] * 100:.1f}%, {f['points']} sizes")


def text_table(doc: dict) -> str:
    cfg = doc["config"]
    lines = [f"# trainscale comm: {', '.join(cfg['ops'])}; dtype {cfg['dtype']}; backend {cfg['backend']}; "
             f"sizes {cfg['min_bytes']}..{cfg['max_bytes']} B x{cfg['step_factor']}; "
             f"{cfg['iters']} timed + {cfg['warmup_iters']} warmup iterations per size",
             "# time = slowest rank's mean iteration; p50/p99 over iterations of the max across ranks; GB = 1e9 B",
             "#"]
    fits = {(f["op"], f["world_size"]): f for f in doc["fits"]}
    by_block: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in doc["results"]:
        by_block[(r["world_size"], r["op"])].append(r)
    for world in cfg["nproc"]:
        w = doc["worlds"].get(str(world), {})
        if w.get("status") != schema.STATUS_OK:
            lines += [f"# world {world}: FAILED: {w.get('reason')}", "#"]
            continue
        for op in [o for o in OPS if (world, o) in by_block]:
            rows = by_block[(world, op)]
            lines.append(f"# {op}, world size {world}")
            lines.append("#" + _row([name for name, _ in _COLUMNS])[1:])
            for r in rows:
                lines.append(_row([str(r["bytes"]), str(r["count"]), r["dtype"], r["redop"],
                                   str(r["root"]) if r["root"] >= 0 else "-", f"{r['time_s'] * 1e6:.1f}",
                                   f"{r['p50_s'] * 1e6:.1f}", f"{r['p99_s'] * 1e6:.1f}", f"{r['algbw_gbps']:.3f}",
                                   f"{r['busbw_gbps']:.3f}", str(r["wrong"])]))
            lines.append(f"# Avg bus bandwidth    : {np.mean([r['busbw_gbps'] for r in rows]):.3f} GB/s "
                         f"(mean over {len(rows)} sizes)")
            slow = {r["slowest_rank"] for r in rows[-max(1, len(rows) // 4):]}
            lines.append(f"# Slowest rank (largest messages): {', '.join(map(str, sorted(slow)))}")
            if (op, world) in fits:
                lines.append(fit_line(fits[(op, world)]))
            lines.append("#")
    wrong = doc["wrong_total"]
    lines.append(f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}")
    return "\n".join(lines) + "\n"


def busbw_series(doc: dict) -> dict[tuple[str, int], tuple[list[int], list[float]]]:
    series: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
    for r in doc["results"]:
        xs, ys = series.setdefault((r["op"], r["world_size"]), ([], []))
        xs.append(r["bytes"])
        ys.append(r["busbw_gbps"])
    return series


def write_comm_report(comm_dir: Path, launches: dict[int, dict] | None = None, out_dir: Path | None = None) -> dict:
    """Recompute the results from the raw files and write comm_results.json, comm_table.txt and
    busbw.png (into out_dir, default the comm folder itself). Returns the results document."""
    from trainscale.analysis import plots

    comm_dir = Path(comm_dir)
    out = Path(out_dir) if out_dir else comm_dir
    doc = build_results(comm_dir, launches)
    if launches is None and (comm_dir / schema.COMM_RESULTS).exists():
        # Keep the orchestrator's verdict on each launch (a failed launch's reason is not in the raw files).
        previous = read_json(comm_dir / schema.COMM_RESULTS).get("worlds", {})
        for world, w in previous.items():
            if w.get("status") == schema.STATUS_FAILED and doc["worlds"].get(world, {}).get("status") != "ok":
                doc["worlds"][world] = w
    write_json_atomic(out / schema.COMM_RESULTS, doc)
    write_text_atomic(out / schema.COMM_TABLE, text_table(doc))
    if doc["results"]:
        fits = [AlphaBetaFit.from_dict(f) for f in doc["fits"]]
        plots.busbw_curve(busbw_series(doc), out / "busbw.png", fits=fits)
    return doc


def is_comm_folder(folder: Path) -> bool:
    return (Path(folder) / schema.COMM_CONFIG).exists()

