"""Warnings of the scaling report on hand-made runs with known answers."""
from __future__ import annotations

import csv

from trainscale.analysis.report import LOADER_BOUND_SHARE, build
from trainscale.scaling.results import schema

from .handmade_results import write_sweep


def _shift_to_data(run_dir, share: float) -> None:
    """Make each step spend `share` of its time waiting for data (step times unchanged)."""
    for path in (run_dir / schema.SAMPLES_DIR).glob("rank*.csv"):
        rows = list(csv.DictReader(path.open()))
        for r in rows:
            s = float(r["step_s"])
            r["data_s"], r["compute_s"], r["optimizer_s"] = share * s, (0.9 - share) * s, 0.1 * s
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=rows[0].keys())
            w.writeheader()
            w.writerows(rows)


def test_a_loader_bound_world_size_is_named_and_the_others_are_not(tmp_path):
    sweep = write_sweep(tmp_path / "s", {1: 0.1, 2: 0.12})
    _shift_to_data(sweep / "runs" / "1x2-r0", 0.4)
    warnings = [w for w in build(sweep).warnings if w.startswith("Loader-bound")]
    assert len(warnings) == 1 and "world size 2" in warnings[0] and "40%" in warnings[0]
    assert f"above {LOADER_BOUND_SHARE:.0%}" in warnings[0]
