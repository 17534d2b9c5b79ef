"""A run's per-step samples and per-rank facts on disk: the two layouts, written and read here.

Ranks write ``samples/rankNNNNN.csv`` (runtime/recorder.py) and ``ranks/rankNNNNN.json`` (the
worker). A finished run at scale (``results.pack``; by default from schema.PACK_AUTO_MIN_RANKS ranks) is
packed into one file per node: ``samples/nodeNNNNN.parquet`` (a ``rank`` column beside the sample
columns, rows in rank then step order, the same values as the CSVs) and ``ranks/nodeNNNNN.json`` (a
list of that node's rank records). Readers take either layout, and a mix (a rank's packed rows win),
so folders written before packing existed read as before.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import ResultsError, read_json, read_text, write_json_atomic

RANK_COLUMN = "rank"
_RANK_FILE = re.compile(r"rank(\d+)$")
_NODE_FILE = re.compile(r"node(\d+)$")

Columns = dict[str, np.ndarray]


def should_pack(choice: str, world_size: int) -> bool:
    """Below PACK_AUTO_MIN_RANKS ranks, "auto" keeps the per-rank files (easy to read by eye)."""
    return choice == "always" or (choice == "auto" and world_size >= schema.PACK_AUTO_MIN_RANKS)


def node_samples_path(run_dir: Path, node: int) -> Path:
    return Path(run_dir) / schema.SAMPLES_DIR / f"node{node:05d}.parquet"


def node_ranks_path(run_dir: Path, node: int) -> Path:
    return Path(run_dir) / schema.RANKS_DIR / f"node{node:05d}.json"


def _numbered(folder: Path, pattern: re.Pattern, suffix: str) -> dict[int, Path]:
    out = {}
    for p in folder.glob(f"*{suffix}"):
        m = pattern.match(p.name[: -len(suffix)])
        if m:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def rank_sample_files(run_dir: Path) -> dict[int, Path]:
    return _numbered(Path(run_dir) / schema.SAMPLES_DIR, _RANK_FILE, ".csv")


def node_sample_files(run_dir: Path) -> dict[int, Path]:
    return _numbered(Path(run_dir) / schema.SAMPLES_DIR, _NODE_FILE, ".parquet")


# -- reading --------------------------------------------------------------------------------------


def read_rank_csv(path: Path) -> Columns:
    """One rank's samples as columns: 'phase' as text, every other column float (empty = NaN).
    ResultsError naming the file when a column is missing, a row is short or a value is not a number."""
    try:  # Arrow's C parser; anything it does not read cleanly goes through the checking reader below
        table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
            column_types={"phase": pa.string()}, strings_can_be_null=False))
        names, types = table.column_names, table.schema.types
    except (pa.ArrowException, OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return _read_rank_csv_checked(path)
    if any(c not in names for c in schema.SAMPLE_COLUMNS) or any(
            n != "phase" and not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t))
            for n, t in zip(names, types)):
        return _read_rank_csv_checked(path)
    return _columns(table)


def _columns(table: pa.Table) -> Columns:
    cols: Columns = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name == "phase":
            if pa.types.is_dictionary(col.type):  # packed files: a few distinct words, decoded once
                words = np.asarray(col.dictionary.to_pylist(), dtype=str)
                cols[name] = words[col.indices.to_numpy(zero_copy_only=False)]
            else:
                cols[name] = col.to_numpy(zero_copy_only=False).astype(str)
        elif name != RANK_COLUMN:
            cols[name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return cols


def _read_rank_csv_checked(path: Path) -> Columns:
    reader = csv.reader(io.StringIO(read_text(path)))
    header = next(reader, None)
    missing = [c for c in schema.SAMPLE_COLUMNS if header is None or c not in header]
    if missing:
        raise ResultsError(f"{path}: not a samples file (column {missing[0]!r} missing)")
    rows = list(reader)
    for n, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise ResultsError(f"{path} line {n}: {len(row)} values for {len(header)} columns (truncated?)")
    cols: Columns = {}
    for i, name in enumerate(header):
        values = [r[i] for r in rows]
        if name == "phase":
            cols[name] = np.array(values, dtype=str)
            continue
        try:
            cols[name] = np.array([float(v) if v != "" else np.nan for v in values], dtype=float)
        except ValueError:
            bad = next(v for v in values if v != "" and not _is_number(v))
            raise ResultsError(f"{path}: column {name!r} holds {bad!r}, not a number") from None
    return cols


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_node_parquet(path: Path) -> Iterator[tuple[int, Columns]]:
    """The ranks of one packed node file, each as columns like read_rank_csv's."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"{path}: not a readable Parquet samples file ({str(e).splitlines()[0][:200]})") from None
    missing = [c for c in (RANK_COLUMN, *schema.SAMPLE_COLUMNS) if c not in table.column_names]
    if missing:
        raise ResultsError(f"{path}: not a samples file (column {missing[0]!r} missing)")
    ranks = table.column(RANK_COLUMN).to_numpy(zero_copy_only=False)
    if ranks.size and np.any(np.diff(ranks) <= -1):
        raise ResultsError(f"{path}: rows are not in rank order")
    cols = _columns(table)
    starts = np.flatnonzero(np.r_[True, ranks[1:] != ranks[:-1]]) if ranks.size else np.zeros(0, dtype=int)
    for s, e in zip(starts, np.r_[starts[1:], ranks.size]):
        yield int(ranks[s]), {name: v[s:e] for name, v in cols.items()}


def iter_rank_samples(run_dir: Path) -> Iterator[tuple[int, Columns]]:
    """Every rank's samples once, one rank at a time (packed node files first, then per-rank CSVs of
    ranks no node file holds): a reader holds one node's rows at most."""
    seen: set[int] = set()
    for path in node_sample_files(run_dir).values():
        for rank, cols in read_node_parquet(path):
            seen.add(rank)
            yield rank, cols
    for rank, path in rank_sample_files(run_dir).items():
        if rank not in seen:
            yield rank, read_rank_csv(path)


def load_rank_samples(run_dir: Path) -> dict[int, Columns]:
    """All ranks' samples in memory: for small runs and the analyses that need every row."""
    return dict(sorted(iter_rank_samples(run_dir)))


def read_rank_infos(run_dir: Path) -> dict[int, dict]:
    """Every rank's record (ranks/rankNNNNN.json or the packed ranks/nodeNNNNN.json), by rank. Parsed
    once per state of its files (names, sizes, modification times): several analyses ask, and at 16k
    ranks each parse reads thousands of files. Callers must not modify what they get."""
    folder = Path(run_dir) / schema.RANKS_DIR
    stamp = []
    for p in sorted(folder.glob("*.json")):
        try:
            st = p.stat()
            stamp.append((p.name, st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append((p.name, -1, -1))
    return _read_rank_infos(str(folder.resolve()), tuple(stamp))


@functools.lru_cache(maxsize=8)
def _read_rank_infos(folder_name: str, stamp: tuple) -> dict[int, dict]:
    folder = Path(folder_name)
    out: dict[int, dict] = {}
    for path in _numbered(folder, _NODE_FILE, ".json").values():
        records = read_json(path)
        if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("rank"), int)
                                                    for r in records):
            raise ResultsError(f"{path}: expected a list of rank records, each with an integer 'rank'")
        out.update({r["rank"]: r for r in records})
    for rank, path in _numbered(folder, _RANK_FILE, ".json").items():
        if rank not in out:
            record = read_json(path)
            if not isinstance(record, dict):
                raise ResultsError(f"{path}: expected a JSON object")
            out[rank] = record
    return dict(sorted(out.items()))


# -- packing --------------------------------------------------------------------------------------


def pack_per_node(run_dir: Path) -> list[Path]:
    """Pack a finished run's per-rank samples and rank records into one file of each per node (the
    node from each rank's record; node 0 when it has none). Each node file is written whole (temporary
    name, fsync, rename) before that node's per-rank files are removed, so a stop in between leaves
    both, which readers take, never neither. Returns the files written."""
    run_dir = Path(run_dir)
    infos = read_rank_infos(run_dir)
    csvs = rank_sample_files(run_dir)
    nodes: dict[int, list[int]] = {}
    for rank in sorted(set(infos) | set(csvs)):
        node = infos.get(rank, {}).get("node_rank")
        nodes.setdefault(node if isinstance(node, int) and node >= 0 else 0, []).append(rank)
    written = []
    for node, ranks in sorted(nodes.items()):
        with_samples = [r for r in ranks if r in csvs]
        samples = [(r, read_rank_csv(csvs[r])) for r in with_samples]
        if len({tuple(cols) for _, cols in samples}) > 1:  # ranks with different columns keep their files
            with_samples = []
        if with_samples:
            written.append(_write_node_samples(node_samples_path(run_dir, node), samples))
        with_info = [r for r in ranks if r in infos]
        if with_info:
            path = node_ranks_path(run_dir, node)
            write_json_atomic(path, [infos[r] for r in with_info])
            written.append(path)
        for r in with_samples:
            csvs[r].unlink()
        for r in with_info:
            schema.rank_info_path(run_dir, r).unlink(missing_ok=True)
    return written


def _write_node_samples(path: Path, ranks: list[tuple[int, Columns]]) -> Path:
    arrays = {RANK_COLUMN: pa.array(np.concatenate([np.full(cols["step"].size, r, dtype=np.int32)
                                                    for r, cols in ranks]))}
    for name in ranks[0][1]:
        parts = [cols[name] for _, cols in ranks]
        if name == "phase":
            arrays[name] = pa.array(np.concatenate(parts).tolist(), type=pa.string()).dictionary_encode()
        else:
            arrays[name] = pa.array(np.concatenate(parts).astype(np.float64))
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(arrays), tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
