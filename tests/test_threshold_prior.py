"""Re-tuning on a few runs keeps a class's threshold from the checkpoint unless the runs'
best leads it run by run (sparse_det.calibrated_tuning.keep_prior_unless_beaten): hand-built runs
with known counts."""

import numpy as np
import pytest

from data_tools.particles import ParticleTable
from sparse_det.calibrated_tuning import calibrate_and_tune, carried_prior, prior_thresholds_in
from sparse_det.structures import Detections

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


def _scaled(run, factor: float, extra_false_mass: float | None = None):
    """The run's detections with every vote mass × factor (a network whose masses mean
    something else), and optionally 5 more false detections at `extra_false_mass`."""
    dets, truth = run
    cand, mass = dets["ribosome"]
    if extra_false_mass is not None:
        far = np.stack([np.arange(5) * 700.0, np.full(5, -50000.0), np.zeros(5)], 1)
        cand, mass = np.concatenate([cand, far]), np.concatenate(
            [mass, np.full(5, extra_false_mass / factor)])
    return Detections(dets.run, {"ribosome": (cand, mass * factor)}), truth


def _carry_args(base, fine):
    return [d for d, _ in base], [d for d, _ in fine]


def _truths(runs):
    return [t for _, t in runs], PARTICLES


def test_a_fine_tunes_prior_passes_as_many_picks_as_the_bases():
    base = [_run(i, false_at_10=0, weak_hits=2) for i in range(2)]
    fine = [_scaled(r, 0.01, extra_false_mass=0.05) for r in base]
    # The base's threshold (mass 5) passes all 20 of its detections; of the fine-tune's,
    # masses 1 (16), 0.1 (4) and 0.05 (10 false), the same 20 pass halfway between 0.1 and
    # 0.05 in log mass.
    thresholds, calibration = carried_prior(*_carry_args(base, fine), PRIOR, *_truths(fine))
    assert calibration == {} and np.isclose(thresholds["ribosome"], np.sqrt(0.1 * 0.05))
    # A calibrated prior stands for the same vote mass: the same count.
    cal = {"ribosome": [2.0, -3.0]}
    p = 1 / (1 + np.exp(-(2.0 * np.log(5.0) - 3.0)))
    again, _ = carried_prior(*_carry_args(base, fine), ({"ribosome": p}, cal), *_truths(fine))
    assert np.isclose(again["ribosome"], thresholds["ribosome"])
    # Above every base detection: above every fine-tune one too.
    none, _ = carried_prior(*_carry_args(base, fine), ({"ribosome": 1000.0}, {}),
                            *_truths(fine))
    assert none["ribosome"] > 1.0


def test_a_prior_carried_by_vote_mass_can_lose_a_class_that_counting_keeps():
    """One run (no scatter: the prior stays). The fine-tune finds the same 10 ribosomes at a
    hundredth of the base's vote mass: the base's threshold as a mass passes none of them,
    as a count all ten."""
    base = _run(0, false_at_10=0, weak_hits=2)
    fine = _scaled(base, 0.01)
    by_mass = _tune([fine])
    assert by_mass.kept_prior == ("ribosome",) and by_mass.per_class["ribosome"].tp == 0
    by_count = _tune([fine], prior=carried_prior([base[0]], [fine[0]], PRIOR,
                                                 *_truths([fine])))
    c = by_count.per_class["ribosome"]
    assert (c.tp, c.fp, c.fn) == (10, 0, 0), c


def test_where_the_base_under_detects_the_mass_it_stood_for_passes_more():
    """The fine-tune's true ribosomes score 10 times the base's vote mass: counted, the base's
    threshold would pass only the 16 the base passed (its weak hits at mass 10 fall under
    threshold 50); as the mass it stood for, all 20 pass, and that is what is kept."""
    base = [_run(i, false_at_10=0, weak_hits=2) for i in range(2)]
    fine = [_scaled(r, 10.0) for r in base]
    thresholds, _ = carried_prior(*_carry_args(base, fine), ({"ribosome": 50.0}, {}),
                                  *_truths(fine))
    assert np.isclose(thresholds["ribosome"], 50.0)
    found = sum(int((d["ribosome"][1] >= thresholds["ribosome"]).sum()) for d, _ in fine)
    assert found == 20


def test_a_rescored_bases_threshold_is_no_vote_mass():
    """The default's raw scores are its rescorer's probabilities: the base finds each run's
    10 ribosomes at 0.9 and 20 false ones at 0.09, and its threshold 0.5 passes the 10. A
    fine-tune's vote masses are 100 (true) and 10 (false). Read as a vote mass, 0.5 passes
    all 30 of the fine-tune's a run; counted, the 10 true ones (halfway between 100 and 10
    in log mass)."""
    base = [_scaled(_run(i, false_at_10=20, weak_hits=0), 0.009) for i in range(3)]
    fine = [_run(i, false_at_10=20, weak_hits=0) for i in range(3)]
    prior = ({"ribosome": 0.5}, {})
    as_mass, _ = carried_prior(*_carry_args(base, fine), prior, *_truths(fine))
    counted, _ = carried_prior(*_carry_args(base, fine), prior, *_truths(fine),
                               base_rescored=True)
    assert as_mass["ribosome"] == 0.5
    assert np.isclose(counted["ribosome"], np.sqrt(100.0 * 10.0))
    c = _tune(fine, prior=(counted, {})).per_class["ribosome"]
    assert (c.tp, c.fp, c.fn) == (30, 0, 0), c


def test_a_calibrated_prior_carries_its_probability_where_the_count_passes_fewer():
    """A rescored base under-detects: its calibrated threshold passes the 8 strong ribosomes
    a run and not the 2 weak ones. The fine-tune finds all 10 (8 at mass 100, 2 at 10) and
    20 false ones at mass 1. Counted, the carry passes 8 a run; the probability the base's
    threshold stands for, in the fine-tune's own calibration on these runs, falls between
    masses 1 and 10 and passes all 10 and nothing false."""
    base = [_scaled(_run(i, false_at_10=20, weak_hits=2), 0.009) for i in range(3)]
    fine = []
    for i in range(3):
        dets, truth = _run(i, false_at_10=20, weak_hits=2)
        cand, mass = dets["ribosome"]
        fine.append((Detections(dets.run, {"ribosome": (cand, np.where(
            np.arange(len(mass)) < 10, mass, 1.0))}), truth))
    base_cal = {"ribosome": [1.0, 0.0]}  # p = score / (1 + score)
    prior = ({"ribosome": 0.5 / 1.5}, base_cal)  # stands for score 0.5: 8 of the base's 10
    counted = carried_prior(*_carry_args(base, fine), ({"ribosome": 0.5}, {}), *_truths(fine),
                            base_rescored=True)[0]["ribosome"]
    carried = carried_prior(*_carry_args(base, fine), prior, *_truths(fine),
                            base_rescored=True)[0]["ribosome"]
    assert np.isclose(counted, np.sqrt(100.0 * 10.0))
    assert 1.0 < carried < 10.0
    c = _tune(fine, prior=({"ribosome": carried}, {})).per_class["ribosome"]
    assert (c.tp, c.fp, c.fn) == (30, 0, 0), c


def test_a_class_no_run_annotates_keeps_the_checkpoints_threshold():
    """Runs annotating apo-ferritin alone cannot set the ribosome's threshold: fitting every
    threshold from them (no prior), the ribosome takes the checkpoint's (mass 5) rather than
    the default 0.5 of an uncalibrated map (mass 1); apo-ferritin is fitted as before."""
    runs = []
    for i in range(3):
        dets, truth = _run(i, false_at_10=0, weak_hits=0)
        apo = (truth["ribosome"] + [0, 3000.0, 0], np.full(10, 50.0))
        runs.append((Detections(dets.run, dets.per_class | {"apo-ferritin": apo}),
                     {"apo-ferritin": apo[0] - 2.0}))
    dets, truths = (list(x) for x in zip(*runs, strict=True))
    prior = ({"ribosome": 5.0, "apo-ferritin": 1000.0}, {})
    free = calibrate_and_tune(dets, truths, PARTICLES)[0]
    kept = calibrate_and_tune(dets, truths, PARTICLES, unannotated_from=prior)
    tuning, cal = kept
    assert cal["ribosome"] == [1.0, 0.0]  # no run says what its masses mean
    assert free.thresholds["ribosome"] == 0.5
    assert tuning.thresholds["ribosome"] == pytest.approx(5.0 / 6.0)  # sigmoid(ln 5)
    assert tuning.kept_prior == ("ribosome",)
    assert tuning.thresholds["apo-ferritin"] == free.thresholds["apo-ferritin"]
    assert tuning.per_class["apo-ferritin"].tp == 30 and tuning.score == free.score


def test_a_kept_class_passes_as_many_as_the_base():
    """A class whose annotations are the base's own picks (keep_classes): each run's 10
    base picks are the truth; the fine-tune finds 8 of them at vote mass 1, 10 others at
    0.50-0.30 and the last 2 at 0.1. F4 against those picks passes all 20 a run (recall
    1 at precision 0.5 beats 0.8 at 1); as_many_as_base passes as many as the base's
    threshold (mass 5) passes of its own: 10 a run, 20 in all."""
    from sparse_det.calibrated_tuning import as_many_as_base

    ref = np.stack([np.arange(10) * 1000.0, np.zeros(10), np.zeros(10)], 1)
    far = np.stack([np.arange(10) * 500.0, np.full(10, 50000.0), np.zeros(10)], 1)
    fine_masses = np.concatenate([np.ones(8), [0.1, 0.1], np.linspace(0.5, 0.3, 10)])
    base, fine, truths = [], [], []
    for i in range(2):
        base.append(Detections(f"r{i}", {"ribosome": (
            np.concatenate([ref, far[:5]]), np.concatenate([np.full(10, 100.0),
                                                            np.ones(5)]))}))
        fine.append(Detections(f"r{i}", {"ribosome": (np.concatenate([ref, far]),
                                                      fine_masses)}))
        truths.append({"ribosome": ref})
    tuned = calibrate_and_tune(fine, truths, PARTICLES)
    assert tuned[0].per_class["ribosome"].tp + tuned[0].per_class["ribosome"].fp == 40
    tuning, cal = as_many_as_base(tuned, base, fine, truths, PARTICLES, PRIOR, ["ribosome"])
    c = tuning.per_class["ribosome"]
    assert (c.tp, c.fp, c.fn) == (16, 4, 4), c
    assert cal is tuned[1] and len(tuning.per_run) == 2
    # Another class is left as tuned.
    assert tuning.thresholds["apo-ferritin"] == tuned[0].thresholds["apo-ferritin"]


def test_class_run_scores_and_the_classes_a_fine_tune_costs():
    """Each class's F4 run by run, counted by hand: at a vote mass of 50 the first run finds
    7 of its 10 ribosomes and nothing false (F4 = 17 · 0.7 / 16.7), the second all 10 and 2
    false ones at mass 100 placed far away (precision 10/12: F4 = 17 · (5/6) / (16 · 5/6 + 1));
    a run that does not annotate a class has no score for it."""
    from sparse_det.against_base import classes_it_costs
    from sparse_det.thresholds import class_run_scores

    weak, _ = _run(0, false_at_10=0, weak_hits=3)
    ref = np.stack([np.arange(10) * 1000.0, np.zeros(10), np.zeros(10)], 1)
    far = np.array([[0.0, 9000.0, 0.0], [0.0, 9500.0, 0.0]])
    strong = Detections("r1", {"ribosome": (np.concatenate([ref, far]), np.full(12, 100.0))})
    truths = [{"ribosome": ref}, {"ribosome": ref, "apo-ferritin": np.zeros((0, 3))}]
    f4 = class_run_scores([weak, strong], truths, PARTICLES,
                          dict.fromkeys(PARTICLES.names, 50.0))
    assert f4["ribosome"] == pytest.approx([17 * 0.7 / 16.7, 17 * (5 / 6) / (16 * 5 / 6 + 1)])
    assert all(np.isnan(f4["apo-ferritin"])), "none annotated, none picked: nothing to score"
    assert "beta-amylase" not in f4, "unscored"
    # A class falls when its run-by-run lead is below zero by more than 2 SE.
    assert classes_it_costs({"a": [-0.10, 0.02], "b": [-0.10, 0.06], "c": [0.05, 0.01]}) == {
        "a": [-0.10, 0.02]}
