"""bench/misses.py: each missed reference lands in the bin that says what would have found
it, on a hand-made run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from data_tools.particles import ParticleTable
from sparse_det.structures import Detections

_spec = importlib.util.spec_from_file_location(
    "bench_misses", Path(__file__).resolve().parents[1] / "bench" / "misses.py")
bench_misses = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_misses)


def _dets(per_class: dict) -> Detections:
    return Detections("r", {k: (np.array(x, float).reshape(-1, 3), np.array(s, float))
                            for k, (x, s) in per_class.items()})


def test_each_miss_in_its_bin():
    """Apo-ferritin (radius 60 Å, hit within 30 Å), threshold 0.5: five references —
    found; a passing detection 40 Å off (displaced); a candidate at 0.2 on it (low score);
    only a ribosome detection passing on it (other class); nothing near (no candidate)."""
    table = ParticleTable.competition()
    ref = np.array([[1000, 1000, 500], [2000, 1000, 500], [3000, 1000, 500],
                    [4000, 1000, 500], [5000, 1000, 500]], float)
    dets = _dets({
        "apo-ferritin": ([[1010, 1000, 500], [2040, 1000, 500], [3000, 1005, 500]],
                         [0.9, 0.8, 0.2]),
        "ribosome": ([[4000, 1010, 500]], [0.9]),
    })
    thresholds = {p.name: 0.5 for p in table}
    rows = bench_misses.miss_bins(dets, {"apo-ferritin": ref}, table, thresholds)
    assert rows["apo-ferritin"] == {"references": 5, "found": 1, "ceiling": 2,
                                    "displaced": 1, "low score": 1, "other class": 1,
                                    "no candidate": 1}
    # A class without references counts none, and every bin sums to the references.
    assert rows["ribosome"]["references"] == 0
    assert all(r["found"] + sum(r[b] for b in bench_misses.BINS) == r["references"]
               for r in rows.values())
