"""Re-tuning on a few runs keeps a class's threshold from the checkpoint unless the runs'
best leads it run by run (sparse_det.thresholds.keep_prior_unless_beaten): hand-built runs
with known counts."""

import numpy as np

from data_tools.particles import ParticleTable
from sparse_det.structures import Detections
from sparse_det.thresholds import calibrate_and_tune, prior_thresholds_in

PARTICLES = ParticleTable.competition()
PRIOR = ({"ribosome": 5.0}, {})  # an uncalibrated checkpoint: the threshold is a vote mass


def _run(i: int, *, false_at_10: int, weak_hits: int):
    """10 ribosomes 1000 Å apart; those beyond `weak_hits` found at vote mass 100, the weak
    ones at 10, and `false_at_10` false detections far from any at mass 10."""
    ref = np.stack([np.arange(10) * 1000.0, np.zeros(10), np.zeros(10)], 1)
    mass = np.where(np.arange(10) < 10 - weak_hits, 100.0, 10.0)
    far = np.stack([np.arange(false_at_10) * 500.0, np.full(false_at_10, 50000.0),
                    np.zeros(false_at_10)], 1)
    cand = np.concatenate([ref + 5.0, far])
    return (Detections(f"r{i}", {"ribosome": (cand, np.concatenate(
        [mass, np.full(false_at_10, 10.0)]))}), {"ribosome": ref})


def _tune(runs, prior=PRIOR):
    dets, truths = zip(*runs, strict=True)
    return calibrate_and_tune(list(dets), list(truths), PARTICLES, prior)[0]


def test_one_runs_accident_does_not_move_the_threshold():
    # Run 0 has 300 false detections at mass 10; in runs 1 and 2 two real ribosomes score 10.
    # Pooled, cutting at mass 10 wins (F4 0.63 -> 0.87): it sheds run 0's false ones and
    # loses the other runs' weak hits. Run by run it gains 0.64 in one run and loses 0.19
    # in two: mean +0.086 ± 0.276, no lead.
    runs = [_run(0, false_at_10=300, weak_hits=0), _run(1, false_at_10=0, weak_hits=2),
            _run(2, false_at_10=0, weak_hits=2)]
    free = _tune(runs, prior=None)
    assert (free.per_class["ribosome"].tp, free.per_class["ribosome"].fp) == (26, 0)
    kept = _tune(runs)
    assert kept.kept_prior == ("ribosome",)
    c = kept.per_class["ribosome"]
    assert (c.tp, c.fp, c.fn) == (30, 300, 0), c  # everything at mass >= 5 passes
    assert kept.score < free.score, "in-sample the free fit must look better"


def test_a_threshold_wrong_in_every_run_is_replaced():
    runs = [_run(i, false_at_10=100, weak_hits=0) for i in range(3)]
    tuned = _tune(runs)
    assert tuned.kept_prior == ()
    c = tuned.per_class["ribosome"]
    assert (c.tp, c.fp, c.fn) == (30, 0, 0), c


def test_one_run_gives_no_scatter_to_judge_by():
    tuned = _tune([_run(0, false_at_10=100, weak_hits=0)])
    assert tuned.kept_prior == ("ribosome",)
    assert tuned.per_class["ribosome"].fp == 100


def test_prior_thresholds_map_through_the_vote_mass():
    old = {"ribosome": [2.0, -6.0]}
    new = {"ribosome": [0.5, 1.0]}
    mass = 20.0
    p_old = 1 / (1 + np.exp(-(2.0 * np.log(mass) - 6.0)))
    p_new = prior_thresholds_in({"ribosome": p_old}, old, new)["ribosome"]
    assert np.isclose(p_new, 1 / (1 + np.exp(-(0.5 * np.log(mass) + 1.0))))
    assert np.isclose(prior_thresholds_in({"ribosome": p_old}, old, old)["ribosome"], p_old)
    # Uncalibrated (a vote mass) and a class the new calibration lacks.
    assert np.isclose(prior_thresholds_in({"ribosome": mass}, {}, new)["ribosome"], p_new)
    assert prior_thresholds_in({"apo-ferritin": 0.5}, {}, new) == {}
