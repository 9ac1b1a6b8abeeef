"""The torch sparsifier (data_tools/sparsify_torch.py, for accelerators) against the scipy one
it stands in for, run here on the CPU: the same kept voxels, features equal within float32
rounding, the same polarity decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from data_tools import sparsify_torch as st
from data_tools.features import shared_scale_source
from data_tools.sparsify import sparsify
from data_tools.sparsify_config import SparsifyConfig


def _tomogram(shape=(40, 96, 96), seed=0, bright=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    for c in rng.uniform(4, np.array(shape) - 4, (30, 3)):
        vol[tuple(np.round(c).astype(int))] = -400.0
    vol = ndimage.gaussian_filter(vol, 2.0) + rng.standard_normal(shape).astype(np.float32)
    return (-vol if bright else vol) * 1e3 + 7.0


@pytest.mark.parametrize("sigma", [0.6, 1.5, 5.0])
def test_gaussian_filter_matches_scipy(sigma):
    x = np.random.default_rng(1).standard_normal((9, 20, 31)).astype(np.float32)
    want = ndimage.gaussian_filter(x, sigma, truncate=3.0)
    got = st.gaussian_filter(torch.from_numpy(x), sigma).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_binary_dilation_matches_scipy():
    m = np.random.default_rng(2).random((10, 12, 14)) > 0.97
    want = ndimage.binary_dilation(m, iterations=2)
    np.testing.assert_array_equal(st.binary_dilation(torch.from_numpy(m), 2).numpy(), want)


@pytest.mark.parametrize("settings", [
    {},
    {"feature_norm": "kept"},
    {"polarity": "dark", "select_mode": "smooth", "dilate_vox": 1},
    {"feature_norm": "kept", "bright": True},
    {"feature_norm": "kept_bands"},
    {"feature_norm": "kept", "whiten_sigma_A": 20.0, "clip_sigma": 20.0},
    {"whiten_sigma_A": 30.0, "bright": True},
    {"feature_norm": "kept", "whiten_sigma_A": 20.0, "whitened_channels": True},
    {"feature_norm": "kept_bands", "whiten_sigma_A": 20.0, "whitened_channels": True},
    {"feature_norm": "kept", "whiten_sigma_A": 20.0, "clip_sigma": 20.0, "raw_channels": True},
])
def test_torch_sparsifier_equals_scipy(settings):
    settings = dict(settings)
    vol = _tomogram(bright=settings.pop("bright", False))
    cfg = SparsifyConfig(keep_fraction=0.03, **settings)
    ref = sparsify(vol, 20.0, cfg, "r")
    got = sparsify(vol, 20.0, cfg, "r", device="cpu")
    assert got.input["polarity"] == ref.input["polarity"]
    a = {tuple(c) for c in ref.coords_zyx.tolist()}
    b = {tuple(c) for c in got.coords_zyx.tolist()}
    # float32 sums in another order may swap a voxel sitting exactly at the threshold
    assert len(a ^ b) <= 2, f"{len(a ^ b)} kept voxels differ"
    if a == b:
        np.testing.assert_allclose(got.feats, ref.feats, atol=1e-4)
    assert got.feature_names == ref.feature_names and got.coords_zyx.dtype == np.int32


def test_torch_sparsifier_keeps_the_dense_channels_scipy_keeps():
    """keep_dense on the device path: the same first feature volumes as the numpy path's,
    as float16 tensors on the device (what the candidate rescorer gathers from there
    instead of filtering again)."""
    vol = _tomogram()
    cfg = SparsifyConfig(keep_fraction=0.03, feature_norm="kept", whiten_sigma_A=20.0,
                         clip_sigma=20.0)
    ref = sparsify(vol, 20.0, cfg, "r", keep_dense=4)
    got = sparsify(vol, 20.0, cfg, "r", device="cpu", keep_dense=4)
    assert len(got.dense) == len(ref.dense) == 4
    for a, b in zip(got.dense, ref.dense, strict=True):
        assert isinstance(a, torch.Tensor) and a.dtype == torch.float16
        assert b.dtype == np.float16 and a.device.type == "cpu" and a.shape == vol.shape
        # float32 values 1e-7 apart may round to neighbouring float16s
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-3, atol=1e-3)
    assert sparsify(vol, 20.0, cfg, "r", device="cpu").dense is None


def test_kept_bands_keeps_the_band_ratios_that_blur_changes():
    """"kept" gives every channel unit robust spread; "kept_bands" gives the band-passes the
    smooth channel's scale, so a blurred tomogram's finest band comes out weaker than a
    sharp one's, and the rest of the features are the same as "kept"'s up to that scale."""
    sharp = _tomogram()
    blurred = ndimage.gaussian_filter(sharp, 1.2)

    def spread(vol, norm):
        f = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03, feature_norm=norm),
                     "r").feats
        return 1.4826 * np.median(np.abs(f - np.median(f, axis=0)), axis=0), f

    (s_kept, f_kept), (s_bands, f_bands) = spread(sharp, "kept"), spread(sharp, "kept_bands")
    np.testing.assert_allclose(s_kept, 1.0, atol=1e-3)
    np.testing.assert_allclose(s_bands[:2], 1.0, atol=1e-3)  # intensity and smooth: as "kept"
    np.testing.assert_allclose(f_bands[:, :2], f_kept[:, :2], atol=1e-5)
    ratio = s_bands[2:]  # each band in units of the smooth channel
    np.testing.assert_allclose(f_bands[:, 2:], f_kept[:, 2:] * ratio, atol=1e-4)
    finest_sharp = ratio[0]
    finest_blurred = spread(blurred, "kept_bands")[0][2]
    assert finest_blurred < 0.7 * finest_sharp, (finest_blurred, finest_sharp)


def test_kept_bands_scales_each_channel_group_on_its_own():
    """With whitened channels the usual five and the whitened five are two groups: in each,
    the bands take that group's smooth channel's scale, so the whitened group's smooth
    channel keeps unit spread instead of taking the usual one's."""
    cfg = SparsifyConfig(keep_fraction=0.03, feature_norm="kept_bands", whiten_sigma_A=20.0,
                         whitened_channels=True)
    assert cfg.channel_group_size == 5
    np.testing.assert_array_equal(shared_scale_source(10, 5), [0, 1, 1, 1, 1, 5, 6, 6, 6, 6])
    f = sparsify(_tomogram(), 20.0, cfg, "r").feats
    spread = 1.4826 * np.median(np.abs(f - np.median(f, axis=0)), axis=0)
    np.testing.assert_allclose(spread[[0, 1, 5, 6]], 1.0, atol=1e-3)
    plain = sparsify(_tomogram(), 20.0, SparsifyConfig(keep_fraction=0.03,
                                                       feature_norm="kept_bands"), "r").feats
    np.testing.assert_allclose(f[:, :5], plain, atol=1e-5)  # the usual group: unchanged


@pytest.mark.gpu
def test_cuda_sparsifier_and_decoding_equal_the_cpu():
    """The whole device path on CUDA: the kept voxels and features as scipy makes them, and
    the clusters of the same votes as on the CPU."""
    from sparse_det.postprocess import detect

    vol = _tomogram()
    cfg = SparsifyConfig(keep_fraction=0.03, feature_norm="kept")
    ref = sparsify(vol, 20.0, cfg, "r")
    got = sparsify(vol, 20.0, cfg, "r", device="cuda")
    assert len({tuple(c) for c in ref.coords_zyx.tolist()}
               ^ {tuple(c) for c in got.coords_zyx.tolist()}) <= 2
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.3, len(ref)).astype(np.float32)
    offsets = rng.normal(0, 1.5, (len(ref), 3)).astype(np.float32)
    kw = dict(prob_floor=0.3, cluster_radius_fraction=0.5, nms_radius_fraction=0.5,
              min_votes=2)
    a = detect(ref.coords_zyx, probs, offsets, [3.0, 5.0], **kw)
    b = detect(torch.from_numpy(ref.coords_zyx).cuda(), torch.from_numpy(probs).cuda(),
               torch.from_numpy(offsets).cuda(), [3.0, 5.0], **kw)
    for (ca, sa), (cb, sb) in zip(a, b, strict=True):
        np.testing.assert_allclose(cb, ca, atol=1e-4)
        np.testing.assert_allclose(sb, sa, rtol=1e-5)
