"""Shading across the field (uneven ice or illumination): a quadratic surface in (y, x) is
removed by known answer, blank columns are left out of the fit, a field too narrow to tell
shading from structure is left alone, and the sparsifier keeps the same voxels of a
tomogram with and without a strong ramp."""

from __future__ import annotations

import numpy as np

from data_tools.blank import FLATTEN_MIN_FIELD_A, blank_mask, flattened, without_blank
from data_tools.sparsify import sparsify
from data_tools.sparsify_config import SparsifyConfig


def _structure(shape=(20, 48, 56), seed=0) -> np.ndarray:
    """Noise with a few dense blobs: what a tomogram holds apart from its shading."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(size=shape).astype(np.float32)
    z, y, x = np.indices(shape)
    for cz, cy, cx in rng.uniform((4, 8, 8), np.array(shape) - (4, 8, 8), size=(6, 3)):
        vol -= 3 * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / 8.0)
    return vol


def _shading(shape) -> np.ndarray:
    """A ramp along x, another along y and a bowl: 2 to 3 noise sigmas across the field."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[1]), np.linspace(-1, 1, shape[2]),
                       indexing="ij")
    return (1.5 * x - 0.8 * y + 1.2 * (x * x + y * y) - 0.5 * x * y).astype(np.float32)


def test_a_quadratic_shading_is_removed_exactly():
    vol = _structure()
    shade = _shading(vol.shape)
    np.testing.assert_allclose(flattened(vol + shade[None]), flattened(vol), atol=2e-5)
    # what is not shading stays: the change is one surface, the same through the depth
    change = flattened(vol) - vol
    assert np.ptp(change, axis=0).max() < 1e-5


def test_a_hot_voxel_does_not_tilt_the_fitted_shading():
    """Two voxels a million sigma out (hot pixels) moved the column means they sit in by
    tens of thousands of sigma, and the least-squares surface with them; clipped at the
    guard (300 robust sigmas) before the fit, they move it by under a quarter of the noise's
    sigma (without the guard: by hundreds)."""
    vol = _structure() + _shading((20, 48, 56))[None]
    hot = vol.copy()
    hot[3, 10, 12], hot[15, 40, 50] = 1e6, -1e6
    change, change_hot = flattened(vol) - vol, flattened(hot) - hot
    np.testing.assert_allclose(change_hot, change, atol=0.25,
                               err_msg="the hot voxels moved the fitted surface")


def test_blank_columns_stay_one_value_and_stay_out_of_the_fit():
    vol = _structure() + _shading((20, 48, 56))[None]
    vol[:, :, :10] = 7.0  # outside the reconstruction's footprint, far from the data
    # 48 voxels of 100 Å: a field wide enough to be flattened
    out, blank, info = without_blank(vol, "test", flatten=True, voxel_size_A=100.0)
    assert blank is not None and blank[:, :, :10].all() and info["blank_share"] > 0.15
    assert np.ptp(out[blank]) == 0, "blank voxels must stay one value"
    ref = _structure()
    ref[:, :, :10] = 0.0
    ref_out = flattened(ref, blank_mask(vol))
    np.testing.assert_allclose(out[:, :, 10:], ref_out[:, :, 10:], atol=2e-4,
                               err_msg="the blank fill leaked into the fitted shading")


def test_the_sparsifier_keeps_the_same_voxels_under_a_ramp():
    """A 4,800 Å field at 20 Å with a ramp of ±2 sigma across x keeps exactly the voxels,
    and features, of the same tomogram without it; with flattening off the kept voxels
    crowd to the ramp's bright side."""
    vol = _structure((40, 240, 240), seed=3)
    ramp = 2 * vol.std() * np.linspace(-1, 1, 240, dtype=np.float32)
    cfg = SparsifyConfig(polarity="dark", tilt_axis="y")
    plain = sparsify(vol, 20.0, cfg, "plain")
    shaded = sparsify(vol + ramp, 20.0, cfg, "shaded")
    np.testing.assert_array_equal(shaded.coords_zyx, plain.coords_zyx)
    np.testing.assert_allclose(shaded.feats, plain.feats, atol=1e-3)
    off = sparsify(vol + ramp, 20.0, SparsifyConfig(polarity="dark", tilt_axis="y",
                                                    flatten=False), "off")
    # protein is dark: after the sign flip the ramp's low-x side reads bright
    assert np.mean(off.coords_zyx[:, 2] < 120) > 0.6 > np.mean(plain.coords_zyx[:, 2] < 120)


def test_a_narrow_field_is_left_alone():
    vol = _structure() + _shading((20, 48, 56))[None]  # 48 voxels of 20 Å: 960 Å
    assert FLATTEN_MIN_FIELD_A > 48 * 20.0
    out, _, _ = without_blank(vol, "narrow", flatten=True, voxel_size_A=20.0)
    np.testing.assert_array_equal(out, vol)
