"""What a floor on the scores keeps (thresholds.precision_recall_at_floors, which tune and
bench/min_score.py report), on a hand-made case."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from data_tools.particles import ParticleTable
from sparse_det.structures import Detections
from sparse_det.thresholds import precision_recall_at_floors

_spec = importlib.util.spec_from_file_location(
    "min_score", Path(__file__).resolve().parents[1] / "bench" / "min_score.py")
min_score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(min_score)
markdown = min_score.markdown


def test_floors_keep_what_passes_the_threshold_and_the_floor():
    """Ribosomes (hit radius 75 Å) at scores 0.9 (true), 0.6 (false), 0.2 (true) and a
    missed one, threshold 0.1: F4's picks are all three (P 2/3, R 2/3); a floor of 0.5 keeps
    0.9 and 0.6 (P 1/2, R 1/3); 0.7 keeps 0.9 (P 1, R 1/3); 0.95 keeps none (P 0, R 0)."""
    particles = ParticleTable.competition()
    truth = {"ribosome": np.array([[1000.0, 1000, 500], [3000, 3000, 500], [5000, 500, 500]])}
    xyz = np.array([[1010.0, 1000, 500], [2000, 2000, 500], [3000, 3040, 500]])
    dets = Detections("TS", {"ribosome": (xyz, np.array([0.9, 0.6, 0.2]))})
    rows = precision_recall_at_floors([dets], [truth], particles,
                                      {p.name: 0.1 for p in particles}, [0.5, 0.7, 0.95])
    got = {f: (r["ribosome"]["precision"], r["ribosome"]["recall"], r["ribosome"]["picks"])
           for f, r in rows.items()}
    assert got == {"F4": (pytest.approx(2 / 3), pytest.approx(2 / 3), 3),
                   "0.5": (0.5, pytest.approx(1 / 3), 2),
                   "0.7": (1.0, pytest.approx(1 / 3), 1), "0.95": (0.0, 0.0, 0)}
    table = markdown([{"project": "data/p", "runs": 1, "floors": rows}])
    assert "| p | ribosome | 0.67 / 0.67 | 0.50 / 0.33 | 1.00 / 0.33 | 0.00 / 0.00 |" in table
