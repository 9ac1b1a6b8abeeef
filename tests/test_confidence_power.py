"""PostprocessConfig.confidence_power: vote masses divided by the tomogram's confidence ** k,
and k chosen on annotated runs by their F4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_tools.particles import ParticleTable
from sparse_det.calibrated_tuning import tune_confidence_power
from sparse_det.confidence import class_confidence, tomogram_confidence
from sparse_det.metric import ClassScore
from sparse_det.structures import Detections
from sparse_det.thresholds import Tuning, keep_first_unless_beaten


def test_confidence_is_the_mean_top_probability_over_predicted_particle_voxels():
    probs = torch.tensor([[0.9, 0.05, 0.05],   # background: left out
                          [0.2, 0.7, 0.1],     # particle, top 0.7
                          [0.1, 0.0, 0.9],     # particle, top 0.9
                          [0.6, 0.3, 0.1]])    # background
    assert tomogram_confidence(probs) == pytest.approx(0.8)
    assert tomogram_confidence(np.array([[1.0, 0.0], [0.7, 0.3]])) == 1.0  # none: 1
    # Per class: "a" tops one voxel at 0.7, "b" one at 0.9; background's are left out.
    assert class_confidence(probs, ["a", "b"]) == pytest.approx({"a": 0.7, "b": 0.9})
    assert class_confidence(probs[[0, 3]], ["a", "b"]) == {}


def test_confidence_power_rescales_and_round_trips():
    xyz = np.zeros((2, 3))
    d = Detections("r", {"ribosome": (xyz, np.array([4.0, 1.0]))}, confidence=0.5)
    up = d.with_confidence_power(0.0, 2.0)
    np.testing.assert_allclose(up["ribosome"][1], [16.0, 4.0])  # / 0.5 ** 2
    assert up.confidence == 0.5 and up.threshold({"ribosome": 5.0}, 1.0).confidence == 0.5
    np.testing.assert_allclose(up.with_confidence_power(2.0, 0.0)["ribosome"][1], [4.0, 1.0])
    # Each class by its own confidence; a class without one keeps its scores.
    two = Detections("r", {"ribosome": (xyz, np.array([4.0, 1.0])),
                           "apo-ferritin": (xyz, np.array([2.0, 1.0]))},
                     confidence=0.5, class_confidence={"ribosome": 0.8})
    by_class = two.with_confidence_power(0.0, 1.0, "class")
    np.testing.assert_allclose(by_class["ribosome"][1], [5.0, 1.25])
    np.testing.assert_allclose(by_class["apo-ferritin"][1], [2.0, 1.0])
    assert by_class.class_confidence == {"ribosome": 0.8}


def test_detections_from_outputs_divide_masses_by_confidence_power(small_project):
    from data_tools.sparsify import sparsify_run
    from data_tools.sparsify_config import SparsifyConfig
    from sparse_det.config import PostprocessConfig
    from sparse_det.inference import detections_from_outputs

    run = small_project.runs()[0]
    sv = sparsify_run(small_project, run, SparsifyConfig(bin_factor=2))
    particles = small_project.particles
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(sv), len(particles) + 1)).astype(np.float32)
    logits[:, 1 + particles.class_index("ribosome") - 1] += 2.0  # plenty of votes
    probs = torch.softmax(torch.from_numpy(logits), 1)
    offsets = rng.normal(0, 0.3, (len(sv), 3)).astype(np.float32)
    plain = detections_from_outputs(sv, probs, offsets, particles,
                                    PostprocessConfig(confidence_power=0.0))
    scaled = detections_from_outputs(sv, probs, offsets, particles,
                                     PostprocessConfig(confidence_power=3.0))
    c = tomogram_confidence(probs)
    assert 0 < c < 1 and plain.confidence == scaled.confidence == pytest.approx(c)
    assert plain.class_confidence == pytest.approx(
        class_confidence(probs, [p.name for p in particles]))
    n = 0
    for name in plain.per_class:
        np.testing.assert_allclose(scaled[name][1], plain[name][1] / c ** 3, rtol=1e-12)
        np.testing.assert_array_equal(scaled[name][0], plain[name][0])
        n += len(plain[name][1])
    assert n > 0


def test_tuning_chooses_the_power_that_separates_less_confident_runs():
    """Runs A (confidence 0.9): true masses 10, false 4. Runs B (0.5): true 3, false 0.6.
    No one threshold on the masses takes every true particle without A's false ones;
    divided by the confidence (k = 1: A 11.1 / 4.4, B 6 / 1.2) one does."""
    particles = ParticleTable.competition()
    rng = np.random.default_rng(1)
    dets, truths = [], []
    kinds = [("A", 0.9, 10.0, 4.0)] * 4 + [("B", 0.5, 3.0, 0.6)] * 2
    for i, (kind, conf, m_true, m_false) in enumerate(kinds):
        run = f"{kind}{i}"
        ref = rng.uniform(0, 5000, (20, 3))
        far = rng.uniform(20000, 30000, (20, 3))
        cand = np.concatenate([ref, far])
        mass = np.concatenate([np.full(20, m_true), np.full(20, m_false)])
        mass = mass * rng.uniform(0.95, 1.05, 40)
        dets.append(Detections(run, {"ribosome": (cand, mass)}, confidence=conf))
        truths.append({"ribosome": ref})
    best, by_power = tune_confidence_power(dets, truths, particles, [0.0, 1.0, 3.0], 0.0)
    one, zero = ("tomogram", 1.0), ("tomogram", 0.0)
    assert len(by_power[one].per_run) == len(kinds)
    assert best == one, {k: t.score for k, t in by_power.items()}
    assert by_power[one].per_class["ribosome"].fbeta == pytest.approx(1.0)
    assert by_power[zero].per_class["ribosome"].fbeta < 0.99
    # Detections made at another power are brought back to each candidate first.
    at_two = [d.with_confidence_power(0.0, 2.0) for d in dets]
    again, _ = tune_confidence_power(at_two, truths, particles, [0.0, 1.0], 2.0)
    assert again == one
    # The ribosome's own confidence is the tomogram's here: "class" does as well, and the
    # earlier setting stays on the tie; power 0 is tried once.
    for d in dets:
        d.class_confidence["ribosome"] = d.confidence
    best, by_power = tune_confidence_power(dets, truths, particles, [0.0, 1.0], 0.0,
                                           ("tomogram", "class"))
    assert list(by_power) == [zero, one, ("class", 1.0)] and best == one
    assert by_power[("class", 1.0)].score == by_power[one].score
    with pytest.raises(ValueError, match=">= 0"):
        tune_confidence_power(dets, truths, particles, [-1.0], 0.0)


def _tuning(score, per_run):
    return Tuning({}, {"ribosome": ClassScore(1, 0, 0)}, score, tuple(per_run))


def test_the_first_setting_stays_unless_another_leads_by_two_standard_errors():
    base = _tuning(0.80, [0.80, 0.70, 0.90, 0.80])
    # +0.0125 pooled, but run by run +0.05, -0.05, +0.05, 0: inside the scatter.
    noisy = _tuning(0.8125, [0.85, 0.65, 0.95, 0.80])
    assert keep_first_unless_beaten({0.0: base, 8.0: noisy}) == 0.0
    # +0.02 on every run: beyond any scatter.
    clear = _tuning(0.82, [0.82, 0.72, 0.92, 0.82])
    assert keep_first_unless_beaten({0.0: base, 8.0: noisy, 2.0: clear}) == 2.0
    # The best pooled one is the candidate: here the noisy one, which does not displace.
    assert keep_first_unless_beaten({0.0: base, 2.0: clear,
                                     8.0: _tuning(0.90, [1.0, 0.5, 1.0, 1.0])}) == 0.0
    assert keep_first_unless_beaten({4.0: base}) == 4.0
