"""Test-time mirrors (`--tta flip|flip4`): the passes' outputs are averaged voxel by voxel,
so the averaged prediction is exactly equivariant to every mirror in the set (a group),
and the checkpoint carries the setting its thresholds were tuned with."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, write_retuned
from sparse_det.inference import TTA_MIRRORS, Picker, mirrored, predict_sparse


@pytest.fixture(scope="module")
def picked(tmp_path_factory):
    # 96 slices: the shipped checkpoint misses almost everything in slabs of 64 (640 Å)
    project = simulate_project(tmp_path_factory.mktemp("tta") / "p", 1, 3, (96, 256, 256),
                               ranges=SimRanges(snr=(1.5, 2.0), crowding=(2.0, 2.0)),
                               progress=False)
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu", tta="none", rescore=False)
    return project, picker, picker.sparse(project, project.runs()[0])


def test_mirror_is_its_own_inverse(picked):
    _, _, sv = picked
    m = mirrored(sv, (1, 2))
    assert not np.array_equal(m.coords_zyx, sv.coords_zyx)
    np.testing.assert_array_equal(m.coords_zyx[:, 0], sv.coords_zyx[:, 0])
    np.testing.assert_array_equal(m.coords_zyx[:, 1], sv.shape_zyx[1] - 1 - sv.coords_zyx[:, 1])
    np.testing.assert_array_equal(mirrored(m, (1, 2)).coords_zyx, sv.coords_zyx)
    assert mirrored(sv, ()) is sv


@pytest.mark.parametrize("tta,axes", [("flip", (1, 2)), ("flip4", (0,)), ("flip4", (0, 1, 2))])
def test_averaged_prediction_is_equivariant(picked, tta, axes):
    """Predicting the mirrored volume gives the same probabilities per voxel and the offsets
    mirrored; without TTA the network alone is not (which is why averaging helps)."""
    _, picker, sv = picked
    model, dev = picker.ckpt.model, picker.device
    p, o = predict_sparse(model, sv, dev, amp=False, tta=tta)
    pm, om = predict_sparse(model, mirrored(sv, axes), dev, amp=False, tta=tta)
    torch.testing.assert_close(pm, p, atol=2e-5, rtol=1e-4)
    om[:, list(axes)] *= -1
    torch.testing.assert_close(om, o, atol=2e-4, rtol=1e-4)
    p1, _ = predict_sparse(model, sv, dev, amp=False)
    pm1, _ = predict_sparse(model, mirrored(sv, axes), dev, amp=False)
    assert (p1 - pm1).abs().max() > 1e-3


def _hits(picker, sv, truth) -> dict[str, int]:
    """True particles of each scored class with a pick within half a radius."""
    dets = picker.pick(picker.detect(sv))
    out = {}
    for p in picker.particles:
        centres, ref = dets[p.name][0], truth[p.name]
        if p.weight and len(ref):
            d = (np.linalg.norm(ref[:, None] - centres[None], axis=2).min(axis=1)
                 if len(centres) else np.full(len(ref), np.inf))
            out[p.name] = int((d < 0.5 * p.radius_A).sum())
    return out


def test_flip_finds_the_particles_plain_inference_finds(picked):
    project, picker, sv = picked
    truth = project.read_picks(sv.run)
    plain = _hits(picker, sv, truth)
    flip = _hits(Picker.load(DEFAULT_CHECKPOINT, "cpu", tta="flip", rescore=False), sv, truth)
    n_true = sum(len(truth[k]) for k in plain)
    assert sum(plain.values()) >= 0.45 * n_true, (plain, n_true)  # a case worth comparing
    assert sum(flip.values()) >= sum(plain.values()) - 1, (plain, flip)
    for name, n in plain.items():
        assert flip[name] >= n - 1, (name, n, flip[name])


def test_checkpoint_carries_the_tta_it_was_tuned_with(tmp_path):
    src = load_checkpoint(DEFAULT_CHECKPOINT)
    # The mirrors by default (with the default's rescorer they beat one pass on the tuning
    # runs by more than two standard errors); one pass carries a set of its own.
    assert src.config.postprocess.tta == "flip"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_pass = Picker.load(DEFAULT_CHECKPOINT, "cpu", tta="none")
    assert one_pass.tta == "none" and one_pass.thresholds != src.thresholds
    for tta in ("flip", "flip4"):
        out = write_retuned(DEFAULT_CHECKPOINT, tmp_path / f"{tta}.pt",
                            thresholds=src.thresholds, calibration=src.calibration, extra={},
                            postprocess={"tta": tta})
        assert Picker.load(out, "cpu").tta == tta
        with pytest.warns(UserWarning, match=f"tuned with --tta {tta}, not none"):
            assert Picker.load(out, "cpu", tta="none").tta == "none"
    with pytest.raises(ValueError, match="tta must be one of"):
        Picker.load(out, "cpu", tta="rot90")
    assert set(TTA_MIRRORS) == {"none", "flip", "flip4"}


def test_each_tta_keeps_its_own_thresholds(tmp_path):
    """A checkpoint tuned for several settings answers each with its own set; a setting
    it was not tuned for keeps the default set and says so; a re-tune drops old sets."""
    src = load_checkpoint(DEFAULT_CHECKPOINT)
    one_pass = {k: v / 2 for k, v in src.thresholds.items()}
    one_pass_cal = {k: [a, b - 1.0] for k, (a, b) in src.calibration.items()}
    both = write_retuned(DEFAULT_CHECKPOINT, tmp_path / "both.pt", thresholds=src.thresholds,
                         calibration=src.calibration, extra={}, postprocess={"tta": "flip"},
                         other_tta={"none": (one_pass, one_pass_cal)})
    default = Picker.load(both, "cpu")
    assert default.tta == "flip" and default.thresholds == src.thresholds
    fast = Picker.load(both, "cpu", tta="none")
    assert fast.tta == "none" and fast.thresholds == pytest.approx(one_pass)
    assert all(fast.ckpt.calibration[k] == pytest.approx(v) for k, v in one_pass_cal.items())
    with pytest.warns(UserWarning, match="tuned with --tta flip, not flip4"):
        untuned = Picker.load(both, "cpu", tta="flip4")
    assert untuned.tta == "flip4" and untuned.thresholds == src.thresholds
    again = write_retuned(both, tmp_path / "again.pt", thresholds=src.thresholds,
                          calibration=src.calibration, extra={}, postprocess={"tta": "flip"})
    with pytest.warns(UserWarning, match="not none"):
        assert Picker.load(again, "cpu", tta="none").thresholds == src.thresholds
