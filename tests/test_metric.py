"""The competition metric on hand-worked cases."""

import numpy as np
import pandas as pd
import pytest

from data_tools.particles import DataError, ParticleTable
from sparse_det.metric import ClassScore, match_counts, score_tables

TABLE = ParticleTable.competition()


def df(rows):
    return pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y", "z"])


def test_boundary_is_inclusive_at_half_radius():
    ref = np.array([[0.0, 0.0, 0.0]])
    # ribosome radius 150 Å → hit distance 75 Å: 75 is a hit, 75.01 is not.
    assert match_counts(ref, np.array([[75.0, 0, 0]]), 75.0) == (1, 0, 0), "75 Å must hit"
    assert match_counts(ref, np.array([[75.01, 0, 0]]), 75.0) == (0, 1, 1), "75.01 Å must miss"


def test_duplicate_on_found_particle_is_false_positive():
    ref = np.array([[0.0, 0, 0], [1000.0, 0, 0]])
    cand = np.array([[1.0, 0, 0], [2.0, 0, 0]])  # two candidates on the first reference
    assert match_counts(ref, cand, 30.0) == (1, 1, 1), "second hit on a found particle is a FP"


def test_fbeta_hand_computed():
    c = ClassScore(tp=3, fp=1, fn=1)  # P = 0.75, R = 0.75 → F = 0.75
    assert c.fbeta == pytest.approx(0.75), f"F4 {c.fbeta}"
    c = ClassScore(tp=1, fp=3, fn=0)  # P = 0.25, R = 1 → 17·0.25 / (16·0.25 + 1) = 0.85
    assert c.fbeta == pytest.approx(17 * 0.25 / 5.0), f"F4 {c.fbeta}"
    assert ClassScore(0, 0, 0).fbeta == 0.0, "undefined F-beta must be 0"


def test_micro_average_and_weights():
    sol = df([("a", "ribosome", 0, 0, 0), ("b", "ribosome", 0, 0, 0),
              ("a", "thyroglobulin", 500, 500, 500), ("a", "beta-amylase", 9, 9, 9)])
    sub = df([("a", "ribosome", 10, 0, 0),  # hit
              ("b", "ribosome", 900, 0, 0),  # miss in b
              ("a", "thyroglobulin", 510, 500, 500),  # hit
              ("c", "ribosome", 0, 0, 0)])  # experiment not in solution: ignored
    s = score_tables(sol, sub, TABLE)
    ribo = s.per_class["ribosome"]
    assert (ribo.tp, ribo.fp, ribo.fn) == (1, 1, 1), f"ribosome counts {ribo}"
    assert "beta-amylase" not in s.per_class, "beta-amylase is unscored"
    # ribosome F4 = 0.5 (P = R = 0.5), thyroglobulin 1.0 (w 2), other classes 0 (no refs).
    expected = (1 * 0.5 + 2 * 1.0) / 7
    assert s.score == pytest.approx(expected), f"score {s.score} != {expected}"


def test_unknown_particle_is_an_error():
    sol = df([("a", "ribosome", 0, 0, 0)])
    with pytest.raises(DataError, match="unknown particle_type"):
        score_tables(sol, df([("a", "tubulin", 0, 0, 0)]), TABLE)


def test_perfect_submission_scores_one():
    rng = np.random.default_rng(0)
    rows = [("r", p.name, *rng.uniform(0, 6000, 3)) for p in TABLE for _ in range(4)]
    s = score_tables(df(rows), df(rows), TABLE)
    assert s.score == pytest.approx(1.0), f"perfect submission scored {s.score}"
