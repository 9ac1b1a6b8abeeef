"""Adaptation to unlabelled runs: the mirror mapping, the flip-consistency filter, the
safeguards, and the command end to end on runs where the starting checkpoint is already
right (it must not get worse)."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.adapt import (
    _stop_reason,
    agreement,
    consistent,
    main,
    shifted_classes,
    unmirror_xyz_A,
)
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint
from sparse_det.inference import mirrored
from sparse_det.structures import SparseVolume


def test_mirror_round_trip_in_angstrom():
    sv = SparseVolume(np.array([[1, 2, 3], [4, 10, 0]]), np.zeros((2, 5), np.float32),
                      (8, 12, 6), 20.0, "r", origin_A=5.0)
    m = mirrored(sv, (1, 2))
    np.testing.assert_array_equal(m.coords_zyx, [[1, 9, 2], [4, 1, 5]])
    # voxel (z, y, x) sits at x = 20 x + 5 Å; its mirror image maps back onto it
    xyz_mirror = m.coords_zyx[:, ::-1] * 20.0 + 5.0
    np.testing.assert_allclose(unmirror_xyz_A(xyz_mirror, sv), sv.coords_zyx[:, ::-1] * 20.0
                               + 5.0)


def test_consistent_keeps_pairs_within_radius():
    a = (np.array([[0, 0, 0], [100, 0, 0.0]]), np.array([0.9, 0.8]))
    b = (np.array([[3, 0, 0], [160, 0, 0.0]]), np.array([0.7, 0.95]))
    xyz, s = consistent(a, b, radius_A=10.0)
    np.testing.assert_allclose(xyz, [[1.5, 0, 0]])
    np.testing.assert_allclose(s, [0.7])


def test_safeguards():
    class P:
        def __init__(self, name):
            self.name, self.radius_A = name, 100.0

    one = [{"a": np.array([[0, 0, 0.0], [500, 0, 0]]), "b": np.zeros((0, 3))}]
    two = [{"a": np.array([[10, 0, 0.0]]), "b": np.zeros((0, 3))}]
    assert agreement(one, one, [P("a"), P("b")]) == 1.0
    assert agreement(one, two, [P("a"), P("b")]) == pytest.approx(2 * 1 / 3)
    assert shifted_classes({"a": 10, "b": 3}, {"a": 21, "b": 0}) == ["a"]
    # CLASS_SHIFT 1.5: within [n/1.5, 1.5 n] is kept, both bounds included; a doubling is not
    assert shifted_classes({"a": 10}, {"a": 7}) == []
    assert shifted_classes({"a": 20}, {"a": 30}) == []
    assert shifted_classes({"a": 21}, {"a": 42}) == ["a"]
    assert shifted_classes({"a": 10, "c": 10}, {"a": 30, "c": 1}, {"c"}) == ["c"]


def test_a_round_is_refused_for_drift_from_the_start_or_any_class_growing():
    class P:
        def __init__(self, name, weight):
            self.name, self.weight = name, weight

    parts = [P("scored", 1), P("unscored", 0)]
    start = {"picks": {"scored": 20, "unscored": 10}}
    ok = {"picks": {"scored": 25, "unscored": 15}, "agreement": 0.9, "agreement_start": 0.85}
    assert _stop_reason(ok, [start], parts) is None
    # an unscored class tripling its picks takes scored classes' voxels: refused
    grown = ok | {"picks": {"scored": 20, "unscored": 30}}
    assert "moved for unscored" in _stop_reason(grown, [start], parts)
    # close to the labels it learnt from, but drifted from the start's over two rounds
    drifted = ok | {"agreement_start": 0.72}
    assert "start's labels 0.720 under 0.8" in _stop_reason(drifted, [start, ok], parts)
    fell = ok | {"agreement": 0.85}
    assert "agreement fell (0.900 -> 0.850)" in _stop_reason(fell, [start, ok], parts)


@pytest.mark.slow
def test_adapt_does_not_lower_f4_where_the_start_is_right(tmp_path):
    """Runs from the training ranges: the shipped checkpoint is already right there. Two
    rounds of self-training on them, unlabelled, do not lower weighted F4 (at the shipped
    thresholds), and the summary says which model was kept and why."""
    from data_tools.copick_io import CopickProject
    from sparse_det.metric import score_tables
    from sparse_det.stream import infer_project
    from sparse_det.writers import project_solution, to_submission

    project = simulate_project(tmp_path / "p", 2, 11, (96, 384, 384),
                               SimRanges(snr=(1.5, 2.5), crowding=(0.8, 1.0)), progress=False)
    out = tmp_path / "adapted.pt"
    assert main(["--project", str(project.path), "--out", str(out), "--steps", "20",
                 "--rounds", "2", "--device", "cpu", "--quiet"]) == 0
    summary = read_checkpoint(out)["extra"]["adapt"]
    assert summary["models"][0]["model"] == str(DEFAULT_CHECKPOINT)
    assert len(summary["models"]) >= 2 and "agreement" in summary["models"][1]
    assert sum(summary["models"][0]["counts"].values()) > 20, summary["models"][0]

    truth = project_solution(CopickProject(project.path))

    def score(ckpt) -> float:
        sub = to_submission(infer_project(project, ckpt, device="cpu"))
        return score_tables(truth, sub, project.particles).score

    before, after = score(DEFAULT_CHECKPOINT), score(out)
    assert after >= before, f"adapted {after:.3f} vs start {before:.3f}"


def test_rounds_are_judged_at_the_base_networks_own_thresholds(tmp_path):
    """A trained round is a network alone. The default carries a candidate rescorer, whose
    thresholds and calibration map the rescorer's probabilities; a round judged and written
    at those passed nearly every candidate. The rounds take the network's own set instead,
    and a checkpoint without a rescorer is its own."""
    from sparse_det.adapt import _network_alone
    from sparse_det.checkpoint import NETWORK_TUNED, checkpoint_settings

    alone = _network_alone(DEFAULT_CHECKPOINT, tmp_path / "work")
    own = read_checkpoint(DEFAULT_CHECKPOINT)["extra"][NETWORK_TUNED]
    settings, base = checkpoint_settings(alone), checkpoint_settings(DEFAULT_CHECKPOINT)
    assert base.has_rescorer and not settings.has_rescorer
    assert settings.thresholds == own["thresholds"] != base.thresholds
    assert settings.calibration == own["calibration"]
    assert settings.config.postprocess.tta == own["tta"]
    assert _network_alone(alone, tmp_path / "again") == alone


def test_the_network_prior_of_a_rescored_checkpoint_is_its_networks_set():
    """Settings.network_prior: a rescored checkpoint's set for its network alone, at its
    own test-time setting or another it was tuned for; a checkpoint without a rescorer's
    prior is its own."""
    from sparse_det.checkpoint import NETWORK_TUNED, checkpoint_settings

    settings = checkpoint_settings(DEFAULT_CHECKPOINT)
    own = read_checkpoint(DEFAULT_CHECKPOINT)["extra"][NETWORK_TUNED]
    assert settings.network_prior(own["tta"]) == (own["thresholds"], own["calibration"])
    for tta, tuned in own["tuned_for_tta"].items():
        assert settings.network_prior(tta) == (tuned["thresholds"], tuned["calibration"])
    assert settings.network_prior("no such setting") is None
    plain = checkpoint_settings(DEFAULT_CHECKPOINT.parent / "simulator_shapes.pt")
    assert not plain.has_rescorer
    assert plain.network_prior(plain.config.postprocess.tta) == plain.prior(
        plain.config.postprocess.tta)
