"""The sparsifier's memory savings change no number: a tomogram handed over (`own`) is
flattened, filled and normalised where it lies and gives exactly what a copy gives, a
tomogram not handed over is never written, the selection score added up a few sections at a
time keeps the voxels the whole score keeps, and the volumes kept with a sparse volume are
float16 copies of the features it was selected from."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from data_tools import sparsify as sp
from data_tools.blank import blank_mask, without_blank
from data_tools.features import feature_volumes
from data_tools.sparsify import sparsify
from data_tools.sparsify_config import SparsifyConfig


def _tomogram(shape=(24, 96, 96), seed=0, blank=False) -> np.ndarray:
    """Dark blobs in noise with a ramp across x; `blank`: a fifth of x holds one value."""
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    for c in rng.uniform(3, np.array(shape) - 3, (30, 3)):
        vol[tuple(np.round(c).astype(int))] = -300.0
    vol = ndimage.gaussian_filter(vol, 1.5) + rng.standard_normal(shape).astype(np.float32)
    vol += np.linspace(-1, 1, shape[2], dtype=np.float32)  # shading, flattened away
    if blank:
        vol[:, :, :19] = 0.25
    return vol


# without whitening; whitened (the whitened volume is written over the one handed over);
# whitened with the raw channels too (then both are kept)
WHITENING = [{}, {"whiten_sigma_A": 100.0}, {"whiten_sigma_A": 100.0, "raw_channels": True}]


@pytest.mark.parametrize("blank", [False, True])
@pytest.mark.parametrize("axis", ["y", "x"])
@pytest.mark.parametrize("whitening", WHITENING)
def test_a_tomogram_handed_over_gives_what_a_copy_gives(blank, axis, whitening):
    # 96 voxels of 50 Å: a field wide enough to be flattened
    cfg = SparsifyConfig(keep_fraction=0.03, tilt_axis=axis, keep_min_depth_A=1.0,
                         **whitening)
    vol = _tomogram(blank=blank)
    original = vol.copy()
    ref = sparsify(vol, 50.0, cfg, "r", keep_dense=2, reselectable=True)
    np.testing.assert_array_equal(vol, original, err_msg="a volume not handed over changed")
    got = sparsify(vol, 50.0, cfg, "r", keep_dense=2, reselectable=True, own=True)
    assert not np.array_equal(vol, original), "handed over, it is worked on where it lies"
    np.testing.assert_array_equal(got.coords_zyx, ref.coords_zyx)
    np.testing.assert_array_equal(got.feats, ref.feats)
    assert got.input == ref.input and ("blank_share" in got.input) == blank
    for a, b in zip(got.dense, ref.dense, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(ref) > 500


@pytest.mark.parametrize("voxel_A", [50.0, 20.0])  # flattened, and too narrow for that
def test_a_volume_not_of_float32_or_read_only_is_copied_not_written(voxel_A):
    cfg = SparsifyConfig(keep_fraction=0.03, tilt_axis="y")
    vol = _tomogram()
    ref = sparsify(vol.copy(), voxel_A, cfg, "r")
    frozen = vol.copy()
    frozen.flags.writeable = False
    as64 = vol.astype(np.float64)
    for v in (frozen, as64):
        before = v.copy()
        got = sparsify(v, voxel_A, cfg, "r", own=True)
        np.testing.assert_array_equal(v, before)
        np.testing.assert_array_equal(got.coords_zyx, ref.coords_zyx)


@pytest.mark.parametrize("select_mode", ["smooth+fine", "smooth"])
def test_the_score_added_up_in_slabs_keeps_what_the_whole_score_keeps(select_mode, monkeypatch):
    cfg = SparsifyConfig(keep_fraction=0.03, tilt_axis="y", select_mode=select_mode)
    vol = _tomogram(blank=True)
    kept = {}
    for slab in (1, 7, 10_000):  # one section, slabs that do not divide 24, all at once
        monkeypatch.setattr(sp, "SCORE_SLAB", slab)
        kept[slab] = sparsify(vol, 50.0, cfg, "r")
    for slab in (1, 7):
        np.testing.assert_array_equal(kept[slab].coords_zyx, kept[10_000].coords_zyx)
        np.testing.assert_array_equal(kept[slab].feats, kept[10_000].feats)
    # and it is the score's top share: no kept voxel ranks below a voxel left out
    feats, _ = feature_volumes(without_blank(vol, "r", True, 50.0)[0], cfg, 50.0, "r")
    score = sp.volume_score(feats, cfg, blank_mask(vol))
    mask = np.zeros(vol.shape, bool)
    mask[tuple(kept[1].coords_zyx.T)] = True
    assert score[mask].min() > score[~mask].max()
    assert mask[:, :, :19].sum() == 0, "a blank voxel was kept"


def test_kept_volumes_are_float16_copies_of_the_features():
    cfg = SparsifyConfig(keep_fraction=0.03, tilt_axis="y")
    vol = _tomogram()
    sv = sparsify(vol, 50.0, cfg, "r", keep_dense=4, reselectable=True)
    feats, _ = feature_volumes(without_blank(vol, "r", True, 50.0)[0], cfg, 50.0, "r")
    _, held = sv.selected_from
    assert all(a is b for a, b in zip(sv.dense, held[:4], strict=True))
    assert len(held) == 5 and all(v.dtype == np.float16 for v in held)
    for h, f in zip(held, feats, strict=True):
        np.testing.assert_array_equal(h, f.astype(np.float16))
    # the kept voxels' features are the float32 ones, not their float16 copies
    np.testing.assert_array_equal(sv.feats[:, 1], feats[1][tuple(sv.coords_zyx.T)])


@pytest.mark.parametrize("whitening", WHITENING)
def test_the_volume_handed_over_is_the_intensity_channel_whitened_or_not(whitening):
    """Handed over, the tomogram's own memory holds the first feature volume, whitened or
    not, so that no second full volume lives while the bands are made; where the raw
    channels follow the whitened ones it holds the raw intensity, as it must."""
    cfg = SparsifyConfig(tilt_axis="y", **whitening)
    vol = without_blank(_tomogram(), "r", True, 50.0)[0]
    ref, _ = feature_volumes(vol.copy(), cfg, 50.0, "r")
    feats, _ = feature_volumes(vol, cfg, 50.0, "r", own=True)
    held_by = [np.shares_memory(f, vol) for f in feats]
    assert held_by.index(True) == (5 if whitening.get("raw_channels") else 0)
    assert sum(held_by) == 1
    for a, b in zip(feats, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float16_copies_are_numpys_rounding_to_the_bit():
    """as_float16 (torch's conversion where torch is loaded) gives numpy's float16 bits:
    halfway cases to even, subnormals, overflow to infinity, signed zeros, random values."""
    import torch  # loaded: the torch path is the one taken

    assert sp.sys.modules.get("torch") is torch
    halfway = np.float32(1 + 2**-11)  # between 1 and the next float16: to even, 1
    special = np.array([halfway, 1 + 3 * 2**-11, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 65504.0,
                        65520.0, 1e6, -0.0, 0.0, -halfway, np.inf, -np.inf], np.float32)
    rng = np.random.default_rng(0)
    bits = rng.integers(0x33000000, 0x47800000, 200_000, dtype=np.uint32).view(np.float32)
    for a in (special, bits * rng.choice([-1, 1], bits.shape).astype(np.float32),
              rng.standard_normal((7, 30, 33)).astype(np.float32)):
        with np.errstate(over="ignore"):  # 65520 and up: infinity, as intended
            want = a.astype(np.float16)
        np.testing.assert_array_equal(sp.as_float16(a).view(np.uint16), want.view(np.uint16))
    assert sp.as_float16(special)[0] == 1.0
