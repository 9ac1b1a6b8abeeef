"""The tilt axis read from the missing wedge, and tomograms tilted about x read by the
network as the tomograms about y it learnt: the same picks, with y and x swapped."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project, simulate_tilt_run
from data_tools.tilt_ranges import TiltRanges
from data_tools.wedge import X_AXIS_RATIO, tilt_axis
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.data import RunSample, in_network_frame
from sparse_det.inference import Picker, predict_sparse
from sparse_det.structures import swap_yx

TABLE = ParticleTable.competition()


def test_tilt_axis_is_read_from_the_wedge():
    tomos, _, _ = simulate_tilt_run("r", (96, 192, 192), TABLE, SimRanges(snr=(0.5, 0.5)),
                                    TiltRanges(), [3, 0])
    vol = tomos["denoised"]
    axis, ratio = tilt_axis(vol)
    assert axis == "y" and ratio < 0.3, ratio
    axis, ratio = tilt_axis(np.ascontiguousarray(vol.transpose(0, 2, 1)))
    assert axis == "x" and ratio > 3 * X_AXIS_RATIO, ratio
    # No wedge at all (isotropic noise): no axis to swap to.
    axis, ratio = tilt_axis(np.random.default_rng(0).standard_normal((48, 96, 96)))
    assert axis == "y" and 0.7 < ratio < 1.4, ratio


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A simulated run and the same run with y and x swapped (tilted about x)."""
    root = tmp_path_factory.mktemp("wedge")
    src = simulate_project(root / "y", 1, 3, (96, 256, 256),
                           ranges=SimRanges(snr=(1.5, 2.0), crowding=(2.0, 2.0)),
                           progress=False)
    run = src.runs()[0]
    (root / "x" / "static").mkdir(parents=True)
    (root / "x" / "overlay").mkdir()
    dst = CopickProject(root / "x", TABLE)
    t = src.read_tomogram(run)
    dst.write_tomogram(run, np.ascontiguousarray(t.data.transpose(0, 2, 1)), t.voxel_size_A)
    for name, pts in src.read_picks(run).items():
        dst.write_picks(run, name, pts[:, [1, 0, 2]])
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu", tta="none", rescore=False)
    return picker, src, dst, run


def test_a_run_tilted_about_x_gives_the_swapped_picks(pair):
    picker, src, dst, run = pair
    sv_y, sv_x = picker.sparse(src, run), picker.sparse(dst, run)
    assert not sv_y.tilted_about_x and sv_x.tilted_about_x
    assert sv_x.input["wedge_ratio"] > X_AXIS_RATIO
    # It is filtered with y and x swapped back (the whitening's shell means are not
    # symmetric in y and x): the same kept voxels, y and x swapped, the same features,
    # the same picks (before, 1.1 % of the kept voxels differed).
    order_y = np.lexsort(sv_y.coords_zyx.T[::-1])
    swapped = swap_yx(sv_x).coords_zyx
    order_x = np.lexsort(swapped.T[::-1])
    np.testing.assert_array_equal(swapped[order_x], sv_y.coords_zyx[order_y])
    # (to float rounding: binning to the working grid sums y and x in the file's order)
    np.testing.assert_allclose(sv_x.feats[order_x], sv_y.feats[order_y], atol=1e-4)
    dy, dx = picker.pick(picker.detect(sv_y)), picker.pick(picker.detect(sv_x))
    total = 0
    for p in picker.particles:
        cy, sy = dy[p.name]
        cx, sx = dx[p.name]
        total += len(cy)
        np.testing.assert_allclose(cx[:, [1, 0, 2]], cy, atol=1e-3)
        np.testing.assert_allclose(sx, sy, atol=1e-4)
    assert total > 20, "too few picks to compare"


def test_swapped_reading_is_exact(pair):
    """The network reads a volume marked as tilted about x exactly as the same voxels
    swapped and marked about y: the same probabilities, the offsets swapped back."""
    picker, src, _, run = pair
    sv = picker.sparse(src, run)
    as_x = replace(swap_yx(sv), input=sv.input | {"tilt_axis": "x"})
    model, dev = picker.ckpt.model, picker.device
    p, o = predict_sparse(model, sv, dev, amp=False)
    px, ox = predict_sparse(model, as_x, dev, amp=False)
    torch.testing.assert_close(px, p)
    torch.testing.assert_close(ox[:, [0, 2, 1]], o)


def test_training_sees_runs_tilted_about_x_in_the_network_frame(pair):
    picker, src, _, run = pair
    sv = picker.sparse(src, run)
    rng = np.random.default_rng(0)
    r = RunSample(sv, np.zeros(len(sv), np.int64), rng.normal(size=(len(sv), 3)).astype(
        np.float32), rng.uniform(0, 50, (4, 3)), np.ones(4, np.int64), {})
    assert in_network_frame(r) is r
    tilted = replace(r, sv=replace(sv, input=sv.input | {"tilt_axis": "x"}))
    seen = in_network_frame(tilted)
    np.testing.assert_array_equal(seen.sv.coords_zyx, sv.coords_zyx[:, [0, 2, 1]])
    np.testing.assert_array_equal(seen.offsets, r.offsets[:, [0, 2, 1]])
    np.testing.assert_array_equal(seen.centers_zyx, r.centers_zyx[:, [0, 2, 1]])
    assert not seen.sv.tilted_about_x and seen.sv.shape_zyx == (
        sv.shape_zyx[0], sv.shape_zyx[2], sv.shape_zyx[1])


def test_the_tilt_axis_can_be_set(pair):
    """--tilt-axis overrides the rule (a user who knows better), and the override reaches
    the sparse volume; an unknown axis is refused."""
    from data_tools.sparsify_config import SparsifyConfig
    from data_tools.tomo_input import add_input_arguments, input_overrides

    picker, _, dst, run = pair
    ap = argparse.ArgumentParser()
    add_input_arguments(ap)
    overrides = input_overrides(ap.parse_args(["--tilt-axis", "y"]))
    assert overrides == {"tilt_axis": "y"}
    forced = Picker.load(DEFAULT_CHECKPOINT, "cpu", input_overrides=overrides, tta="none",
                         rescore=False)
    sv = forced.sparse(dst, run)
    assert not sv.tilted_about_x and sv.input["tilt_axis_by"] == "setting"
    assert picker.sparse(dst, run).input["tilt_axis_by"] == "auto"
    with pytest.raises(ValueError, match="tilt_axis"):
        SparsifyConfig.from_dict({"tilt_axis": "z"})
    assert "tilt_axis" not in SparsifyConfig().to_dict()  # absent means auto


@pytest.mark.parametrize("device", [None, "cpu"])
def test_a_run_tilted_about_x_is_filtered_in_the_network_frame(device):
    """scipy's path and torch's: a volume tilted about x is filtered with y and x swapped,
    so its kept voxels, features and dense channels are exactly those of the same volume
    tilted about y, handed back in its own frame."""
    from data_tools.sparsify import sparsify
    from data_tools.sparsify_config import SparsifyConfig

    tomos, _, _ = simulate_tilt_run("r", (48, 128, 128), TABLE, SimRanges(snr=(1.0, 1.0)),
                                    TiltRanges(), [5, 0])
    vol = tomos["denoised"]
    cfg = SparsifyConfig(keep_fraction=0.03)
    a = sparsify(vol, 20.0, cfg, "r", device=device, keep_dense=2)
    b = sparsify(np.ascontiguousarray(vol.transpose(0, 2, 1)), 20.0, cfg, "r",
                 device=device, keep_dense=2)
    assert a.input["tilt_axis"] == "y" and b.input["tilt_axis"] == "x"
    np.testing.assert_array_equal(b.coords_zyx, a.coords_zyx[:, [0, 2, 1]])
    np.testing.assert_array_equal(b.feats, a.feats)
    for da, db in zip(a.dense, b.dense, strict=True):
        np.testing.assert_array_equal(np.asarray(db), np.asarray(da).transpose(0, 2, 1))
        assert np.asarray(db).flags["C_CONTIGUOUS"]
