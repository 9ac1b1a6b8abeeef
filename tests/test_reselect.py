"""A crowded run is kept at a larger share (tests/test_crowded_keep.py). Its second selection
comes from the score and feature volumes the first sparsification kept
(data_tools.sparsify.reselect), not from filtering the tomogram again: the same kept
voxels and features exactly, on the scipy and the torch path, tilted about y or x; and the
network's first pass alone decides crowding, so a crowded run's mirrored pass is read on
the larger set only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from data_tools.sparsify import reselect, sparsify
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.inference import Picker, mirrored, predict_sparse
from sparse_det.structures import swap_yx


def _tomogram(shape=(40, 96, 96), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    for c in rng.uniform(4, np.array(shape) - 4, (40, 3)):
        vol[tuple(np.round(c).astype(int))] = -400.0
    return ndimage.gaussian_filter(vol, 2.0) + rng.standard_normal(shape).astype(np.float32)


def _rows_by_voxel(sv) -> dict[tuple[int, int, int], int]:
    return {tuple(c): i for i, c in enumerate(sv.coords_zyx.tolist())}


@pytest.mark.parametrize("device", [None, "cpu"])
@pytest.mark.parametrize("axis, blank", [("y", False), ("x", False), ("y", True), ("x", True)])
def test_reselect_is_sparsifying_again(device, axis, blank):
    """Also where a fifth of x holds no data (blank voxels never kept, the share counted on
    the rest): reselect adds the score up again and cuts the same blank out. It reads the
    float16 volumes sparsify holds, so the voxels within their rounding of the threshold
    may differ (4-17 of 18-22 thousand here), and the features by that rounding."""
    vol = _tomogram()
    if blank:
        vol[:, :, :19] = 0.5
    cfg = SparsifyConfig(keep_fraction=0.025, feature_norm="kept", whiten_sigma_A=20.0,
                         clip_sigma=20.0, tilt_axis=axis, keep_min_depth_A=1.0)
    sv = sparsify(vol, 20.0, cfg, "r", device=device, keep_dense=2, reselectable=True)
    assert sv.tilted_about_x == (axis == "x")
    grown = reselect(sv, 0.06)
    again = sparsify(vol, 20.0, replace(cfg, keep_fraction=0.06), "r", device=device)
    assert len(grown) > 2 * len(sv)
    a, b = _rows_by_voxel(grown), _rows_by_voxel(again)
    assert len(a.keys() ^ b.keys()) <= 0.002 * len(b)
    common = sorted(a.keys() & b.keys())
    np.testing.assert_allclose(grown.feats[[a[c] for c in common]],
                               again.feats[[b[c] for c in common]], rtol=1e-2, atol=1e-2)
    assert grown.config == again.config and grown.input == again.input
    assert grown.dense is sv.dense  # the rescorer reads the first selection's channels
    assert (sv.input.get("blank_share", 0) > 0.15) == blank, sv.input
    assert not blank or grown.coords_zyx[:, 2].min() >= 19


def test_only_a_reselectable_volume_reselects_and_a_new_frame_drops_its_volumes():
    vol = _tomogram()
    plain = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03), "r")
    assert plain.selected_from is None
    with pytest.raises(ValueError, match="reselectable"):
        reselect(plain, 0.06)
    kept = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03), "r", reselectable=True)
    assert kept.selected_from is not None
    assert mirrored(kept, (1, 2)).selected_from is None
    assert swap_yx(kept).selected_from is None


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    # Crowding 3: twice the training range's top; 64 slices of 10 Å.
    return simulate_project(tmp_path_factory.mktemp("reselect") / "p", 1, 11, (64, 256, 256),
                            SimRanges(snr=(1.5, 2.0), crowding=(3.0, 3.0)), progress=False)


def _passes(model) -> list[int]:
    """The number of voxels of each forward pass of `model` from now on."""
    seen: list[int] = []
    model.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0].feats)))
    return seen


def test_crowding_is_decided_from_the_first_pass(crowded):
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu", tta="flip")
    post = picker.ckpt.config.postprocess
    model, run = picker.ckpt.model, crowded.runs()[0]
    sv = picker.sparse(crowded, run)
    seen = _passes(model)

    target = post.keep_follow_foreground
    post.keep_follow_foreground = 0.6  # not crowded for a rule this lenient
    final, probs, offsets = picker.outputs(sv, resparsify=lambda share: 1 / 0)
    assert seen == [len(sv), len(sv)] and final is sv
    want = predict_sparse(model, sv, picker.device, amp=False, tta="flip")
    # the flip average, summed in the same order
    assert torch.equal(probs, want[0]) and torch.equal(offsets, want[1])

    seen.clear()
    post.keep_follow_foreground, post.grown_mirrors = target, True
    final, probs, offsets = picker.outputs(
        sv, resparsify=picker.resparsifier(crowded, run, None, sv))
    # One pass on the first selection, then identity and mirror on the larger one.
    assert len(final) > 1.5 * len(sv) and seen == [len(sv), len(final), len(final)]
    # the volumes sparsify held, kept at the larger share (test_reselect_is_sparsifying_again)
    again = reselect(sv, final.config["keep_fraction"])
    np.testing.assert_array_equal(final.coords_zyx, again.coords_zyx)
    want = predict_sparse(model, again, picker.device, amp=False, tta="flip")
    assert torch.equal(probs, want[0]) and torch.equal(offsets, want[1])

    # grown_mirrors off: the larger set is read by the identity pass alone.
    seen.clear()
    post.grown_mirrors = False
    final, probs, offsets = picker.outputs(
        sv, resparsify=picker.resparsifier(crowded, run, None, sv))
    assert seen == [len(sv), len(final)]
    want = predict_sparse(model, again, picker.device, amp=False, tta="none")
    assert torch.equal(probs, want[0]) and torch.equal(offsets, want[1])


def test_a_sparse_volume_detected_twice_gives_the_same_picks(crowded):
    """tune reads each run's sparse volume once for every test-time setting: the rescorer's
    profiles must leave the volumes reselect reads unchanged (they were clipped in place,
    and a second crowded detection selected from clipped features)."""
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    assert picker.ckpt.rescorer is not None
    run = crowded.runs()[0]
    sv = picker.sparse(crowded, run)
    before = [v.copy() for v in sv.selected_from[1]]
    first = picker.detect_run(crowded, run, sv=sv, calibrated=False)
    for v, was in zip(sv.selected_from[1], before, strict=True):
        np.testing.assert_array_equal(v, was)
    second = picker.detect_run(crowded, run, sv=sv, calibrated=False)
    for name in first.per_class:
        np.testing.assert_array_equal(first[name][0], second[name][0])
        np.testing.assert_array_equal(first[name][1], second[name][1])
