"""Per-step per-rank samples, streamed to ``samples/rankNNNNN.csv.partial`` and renamed to the final
name when the rank finishes: a rank that dies leaves its partial file as evidence, never a file
that looks complete."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch

from trainscale.scaling.results import schema
class SampleRecorder:
    FLUSH_EVERY = 16  # rows; losses stay tensors until then so accelerators are not synced per step

    def __init__(self, run_dir: Path, rank: int, extra_columns: tuple[str, ...] = ()) -> None:
        self.final = schema.samples_path(run_dir, rank)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.final.with_suffix(".csv.partial")
        if self.partial.exists():  # an earlier attempt of a restarted group: kept as evidence, never overwritten
            attempts = self.final.parent / schema.ATTEMPTS_DIR
            attempts.mkdir(exist_ok=True)
            n = len(list(attempts.glob(f"{self.final.stem}-attempt*.csv")))
            os.replace(self.partial, attempts / f"{self.final.stem}-attempt{n}.csv")
        self.columns = schema.SAMPLE_COLUMNS + tuple(extra_columns)
        self._file = open(self.partial, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()
        self._rows: list[dict[str, Any]] = []

    def add(self, **row: Any) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        for row in self._rows:
            out = {}
            for k, v in row.items():
                if isinstance(v, torch.Tensor):
                    v = v.item()
                out[k] = f"{v:.9g}" if isinstance(v, float) else v
            self._writer.writerow(out)
        self._rows.clear()
        self._file.flush()

    def close(self) -> None:
        self.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.final)
