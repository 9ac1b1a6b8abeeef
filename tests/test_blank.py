"""Blank regions (one value through the whole depth, as outside a reconstruction's footprint)
are found by known answer, never in noise or a quantised vacuum layer, kept out of the
sparse set and out of its share; a run with a fifth blank at a value far from its data is
picked, away from the blank, as the original is."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from data_tools.blank import blank_mask, filled
from data_tools.copick_io import CopickProject, copy_without_tomograms
from data_tools.sparsify import sparsify
from data_tools.sparsify_config import SparsifyConfig


def _noise(shape=(24, 60, 70), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_blank_columns_are_found_exactly():
    vol = _noise()
    vol[:, :, :14] = 3.5  # a side strip, all z
    vol[:, 50:, 60:] = 0.0  # a corner, another fill value
    blank = blank_mask(vol)
    expected = np.zeros(vol.shape, bool)
    expected[:, :, :14] = True
    expected[:, 50:, 60:] = True
    np.testing.assert_array_equal(blank, expected)
    out = filled(vol, blank)
    assert np.all(out[blank] == np.median(vol[~blank]))
    np.testing.assert_array_equal(out[~blank], vol[~blank])


def test_noise_a_quantised_vacuum_layer_and_a_small_patch_are_not_blank():
    vol = _noise()
    assert blank_mask(vol) is None
    quantised = np.round(vol * 1.5)
    quantised[:6] = 0.0  # a vacuum layer: constant, but not through the whole depth
    assert blank_mask(quantised) is None
    vol[:, :2, :2] = 7.0  # 4 columns of 4200: under the smallest blank share
    assert blank_mask(vol) is None


def _dark_blobs(shape=(32, 96, 96), n=40, seed=1):
    """Dark Gaussian blobs in correlated noise, so that the sparse set holds structure."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.normal(size=shape), 1.0).astype(np.float32)
    zz, yy, xx = np.indices(shape)
    for z, y, x in rng.uniform([6, 4, 4], [shape[0] - 6, shape[1] - 4, shape[2] - 4],
                               size=(n, 3)):
        vol -= 1.5 * np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / 8.0)
    return vol


def test_the_kept_share_counts_the_voxels_that_hold_data_and_none_blank_is_kept():
    cfg = SparsifyConfig()
    vol = _dark_blobs()
    plain = sparsify(vol, 20.0, cfg, "plain")
    assert "blank_share" not in plain.input
    blanked = vol.copy()
    blanked[:, :, :24] = vol.min() - 40 * vol.std()  # a fill far from the data's level
    sv = sparsify(blanked, 20.0, cfg, "blanked")
    assert sv.input["blank_share"] == pytest.approx(0.25)
    assert sv.coords_zyx[:, 2].min() >= 24
    # a quarter of the volume holds no data, so a quarter fewer voxels are kept
    assert len(sv) == pytest.approx(0.75 * len(plain), rel=0.05)
    # and the kept voxels are where the original's are, away from the blank's border
    far = plain.coords_zyx[plain.coords_zyx[:, 2] >= 30]
    found = {tuple(c) for c in sv.coords_zyx}
    assert np.mean([tuple(c) in found for c in far]) > 0.8
    # the torch sparsifier (the device path, here on the CPU) keeps the same voxels
    on_torch = sparsify(blanked, 20.0, cfg, "blanked", device="cpu")
    assert on_torch.input["blank_share"] == sv.input["blank_share"]
    assert np.mean([tuple(c) in found for c in on_torch.coords_zyx]) > 0.99
    assert len(on_torch) == pytest.approx(len(sv), rel=0.01)


def test_the_rescorers_channels_of_a_blanked_tomogram_are_the_sparsifiers():
    """Read again from a shard's run, the dense channels see the blank filled as the
    sparsifier did, not the raw fill."""
    from sparse_det.rescore import PROFILE_CHANNELS, channels_of

    cfg = SparsifyConfig()
    vol = _dark_blobs()
    vol[:, :20, :] = 0.0
    sv = sparsify(vol, 20.0, cfg, "b", keep_dense=PROFILE_CHANNELS)
    for kept, again in zip(sv.dense, channels_of(vol, 20.0, cfg, "b"), strict=True):
        np.testing.assert_array_equal(kept, again)


def test_a_run_with_a_fifth_blank_far_from_its_level_is_picked_as_the_original(
        small_project, tmp_path):
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT
    from sparse_det.inference import Picker

    src = CopickProject(small_project.path)
    run = src.runs()[0]
    tomo = src.read_tomogram(run)
    vol = np.asarray(tomo.data, np.float32)
    edge = vol.shape[2] // 5
    dest = copy_without_tomograms(src, tmp_path / "blank")
    blanked = vol.copy()
    blanked[:, :, :edge] = vol.min() - 10 * vol.std()
    dest.write_tomogram(run, blanked, tomo.voxel_size_A)
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    original = picker.pick(picker.detect_run(src, run))
    with_blank = picker.pick(picker.detect_run(dest, run))
    far_A = (edge + 12) * tomo.voxel_size_A  # beyond the blank and a ribosome's diameter
    n = 0
    for p in (p for p in picker.particles if p.weight > 0):  # the scored classes
        a, b = original[p.name][0], with_blank[p.name][0]
        assert np.sum(b[:, 0] < edge * tomo.voxel_size_A) == 0, p.name  # none in the blank
        a, b = a[a[:, 0] > far_A], b[b[:, 0] > far_A]
        n += len(a)
        assert abs(len(a) - len(b)) <= max(2, 0.1 * len(a)), (p.name, len(a), len(b))
        if len(a) and len(b):
            d, _ = cKDTree(b).query(a)
            assert np.mean(d < 0.3 * p.radius_A) >= 0.85, p.name
    assert n > 20
