"""Spectral whitening (data_tools/spectrum.py): any low-pass a tomogram went through is undone
where signal dominates, so a blurred particle comes out as wide as a sharp one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from data_tools import sparsify_torch as st
from data_tools.features import robust_normalise
from data_tools.sparsify_config import SparsifyConfig
from data_tools.spectrum import N_SHELLS, power_by_shell, rfft_frequency, shell_of, whiten


def _spheres(shape=(48, 96, 96), radius=4.0, n=40, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Dark solid spheres at random, non-touching centres, and a little white noise."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < n:
        c = rng.uniform(radius + 6, np.array(shape) - radius - 6)
        if all(np.linalg.norm(c - o) > 2 * radius + 6 for o in centres):
            centres.append(c)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    vol = np.zeros(shape, np.float32)
    for c in centres:
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2] = -1.0
    vol += 0.02 * rng.standard_normal(shape).astype(np.float32)
    return vol, np.array(centres)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("radii", [(4.0,), (3.0, 5.0)])
def test_whitening_undoes_a_blur(radii):
    """A blurred copy of a tomogram, whitened, is the whitened original (where the signal
    still beats the noise): the network sees the same particles, not wider ones."""
    sharp = sum(_spheres(radius=r, n=40 // len(radii), seed=i)[0] for i, r in enumerate(radii))
    blurred = ndimage.gaussian_filter(sharp, 1.5)
    before = _corr(sharp, blurred)
    after = _corr(whiten(sharp, 1.0), whiten(blurred, 1.0))
    assert after > 0.95 and after > before + 0.05, (before, after)


def test_whitened_spectrum_is_the_reference():
    x = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal((32, 64, 64)), 1.5)
    y = whiten(x.astype(np.float32), 1.0)
    spec = np.fft.rfftn(y)
    shell = shell_of(rfft_frequency(y.shape))
    counts = np.bincount(shell.ravel(), minlength=N_SHELLS + 1)
    amp = np.sqrt(np.bincount(shell.ravel(), np.abs(spec.ravel()) ** 2, N_SHELLS + 1)
                  / np.maximum(counts, 1))
    q = (np.arange(N_SHELLS + 1) + 0.5) / (2 * N_SHELLS)
    filled = np.arange(N_SHELLS + 1)[2:40][counts[2:40] > 0]  # a small box leaves some empty
    ratio = amp[filled] / np.exp(-2 * (np.pi * q[filled]) ** 2)
    assert ratio.std() / ratio.mean() < 0.02, ratio  # one constant factor: the reference's shape


def test_torch_whitening_equals_scipy():
    x = np.random.default_rng(4).standard_normal((20, 36, 50)).astype(np.float32)
    np.testing.assert_allclose(st.whiten(torch.from_numpy(x), 1.3).numpy(), whiten(x, 1.3),
                               atol=2e-4 * np.abs(whiten(x, 1.3)).max())


def test_whitening_settings_are_checked():
    with pytest.raises(ValueError, match="whiten_sigma_A"):
        SparsifyConfig.from_dict({"whiten_sigma_A": -1.0})
    with pytest.raises(ValueError, match="clip_sigma"):
        SparsifyConfig.from_dict({"clip_sigma": 0.0})
    assert SparsifyConfig.from_dict({}).whiten_sigma_A == 0.0  # checkpoints made before: off


def test_whitened_channels_follow_the_usual_five_unchanged():
    """whitened_channels appends five channels and leaves the usual five (and so the kept
    voxels and a checkpoint's view of them) exactly as without whitening."""
    from data_tools.sparsify import sparsify

    vol, _ = _spheres()
    vol = ndimage.gaussian_filter(vol, 1.0) * 50.0 + 3.0
    plain = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03, feature_norm="kept"), "r")
    both = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03, feature_norm="kept",
                                              whiten_sigma_A=20.0, whitened_channels=True), "r")
    np.testing.assert_array_equal(both.coords_zyx, plain.coords_zyx)
    np.testing.assert_array_equal(both.feats[:, :5], plain.feats)
    assert both.feature_names == plain.feature_names + [f"{n}_white" for n in plain.feature_names]
    assert not np.allclose(both.feats[:, 5:], plain.feats, atol=0.1)
    with pytest.raises(ValueError, match="whitened_channels"):
        SparsifyConfig.from_dict({"whitened_channels": True})


def test_raw_channels_follow_the_whitened_five_unchanged():
    """raw_channels appends the unwhitened tomogram's five channels to the whitened ones and
    leaves the whitened five and the kept voxels exactly as with whitening alone (so a
    whitened-input checkpoint widens to it); at each kept voxel the new five are what the
    unwhitened configuration computes there."""
    from data_tools.sparsify import sparsify

    vol, _ = _spheres()
    vol = ndimage.gaussian_filter(vol, 1.0) * 50.0 + 3.0
    white = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03, whiten_sigma_A=20.0,
                                               clip_sigma=20.0), "r")
    both = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03, whiten_sigma_A=20.0,
                                              clip_sigma=20.0, raw_channels=True), "r")
    plain = sparsify(vol, 20.0, SparsifyConfig(keep_fraction=0.03), "r")
    np.testing.assert_array_equal(both.coords_zyx, white.coords_zyx)
    np.testing.assert_array_equal(both.feats[:, :5], white.feats)
    assert both.feature_names == white.feature_names + [f"{n}_raw" for n in white.feature_names]
    # voxel-wise: the feature volumes are normalised over the whole tomogram ("volume")
    row_of = {tuple(c): i for i, c in enumerate(plain.coords_zyx.tolist())}
    shared = [(i, row_of[tuple(c)]) for i, c in enumerate(both.coords_zyx.tolist())
              if tuple(c) in row_of]
    assert len(shared) > 1000  # voxels both rankings keep
    mine, theirs = np.array(shared).T
    np.testing.assert_allclose(both.feats[mine, 5:], plain.feats[theirs], atol=1e-5)
    assert not np.allclose(both.feats[:, 5:], white.feats, atol=0.1)
    assert "raw_channels" not in SparsifyConfig().to_dict()  # old shards' keys unchanged
    for bad in ({"raw_channels": True},
                {"raw_channels": True, "whiten_sigma_A": 20.0, "whitened_channels": True}):
        with pytest.raises(ValueError, match="raw_channels"):
            SparsifyConfig.from_dict(bad)


def test_shell_amplitude_profile_is_gain_free_and_sees_blur():
    """unit_profile removes the tomogram's gain; a Gaussian blur of σ voxels lowers the
    profile at q by exp(-2 π² σ² q²), as bench/spectra.py reads it."""
    from scipy import ndimage

    from data_tools.spectrum import N_SHELLS, shell_amplitude, unit_profile

    vol = np.random.default_rng(0).normal(size=(32, 64, 64)).astype(np.float32)
    a = unit_profile(shell_amplitude(vol))
    np.testing.assert_allclose(unit_profile(shell_amplitude(7.5 * vol)), a, rtol=1e-5)
    blurred = unit_profile(shell_amplitude(ndimage.gaussian_filter(vol, 1.0, mode="wrap")))
    s = N_SHELLS // 4  # q ≈ 0.125 cycles per voxel
    q = (s + 0.5) / (2 * N_SHELLS)
    ratio = (blurred[s] / blurred[2]) / (a[s] / a[2])
    expected = np.exp(-2 * np.pi**2 * q**2) / np.exp(-2 * np.pi**2 * (2.5 / 128) ** 2)
    assert abs(ratio / expected - 1) < 0.1


def test_shell_index_is_shared_read_only_and_the_same():
    """The cached shell index of a shape is the one computed afresh, read-only, and powers
    summed with it are the coefficients' powers by shell."""
    shape = (12, 20, 18)
    spec = np.fft.rfftn(np.random.default_rng(1).standard_normal(shape)).astype(np.complex64)
    shell, power_sum, counts = power_by_shell(spec, shape)
    fresh = shell_of(rfft_frequency(shape))
    np.testing.assert_array_equal(shell, fresh)
    assert not shell.flags.writeable and power_by_shell(spec, shape)[0] is shell
    np.testing.assert_array_equal(counts, np.bincount(fresh.ravel(), minlength=N_SHELLS + 1))
    want = [float((np.abs(spec[fresh == k]).astype(np.float64) ** 2).sum())
            for k in range(N_SHELLS + 1)]
    np.testing.assert_allclose(power_sum, want, rtol=1e-5)


def test_robust_normalise_copies_unless_told():
    """The same numbers in place or not; not in place leaves the input as it was."""
    x = (5.0 + 2.0 * np.random.default_rng(2).standard_normal((8, 9, 10))).astype(np.float32)
    kept = x.copy()
    out = robust_normalise(x, "vol")
    np.testing.assert_array_equal(x, kept)
    assert out is not x and out.dtype == np.float32
    same = robust_normalise(x, "vol", in_place=True)
    assert same is x
    np.testing.assert_array_equal(same, out)
    sample = kept[::2, ::3, ::3].ravel()  # the subsample the statistics come from
    med = np.median(sample)
    mad = 1.4826 * np.median(np.abs(sample - med))
    np.testing.assert_allclose(out, (kept - med) / mad, rtol=1e-5, atol=1e-5)


def test_whitening_a_few_planes_at_a_time_is_whitening_the_whole_spectrum(monkeypatch):
    """The power and the gain taken SHELL_SLAB planes of the spectrum at a time (to bound
    their temporaries) give the whitening of the spectrum taken whole, and the shells'
    power summed by hand."""
    from data_tools import spectrum

    vol = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal((21, 40, 36)),
                                  1.5).astype(np.float32)
    spec = np.fft.rfftn(vol).astype(np.complex64)
    got = {}
    for slab in (1, 4, 10_000):  # a plane, slabs that do not divide 21, the whole
        monkeypatch.setattr(spectrum, "SHELL_SLAB", slab)
        got[slab] = (whiten(vol, 2.0), power_by_shell(spec, vol.shape)[1])
    for slab in (1, 4):
        np.testing.assert_allclose(got[slab][0], got[10_000][0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[slab][1], got[10_000][1], rtol=1e-12)
    shell = shell_of(rfft_frequency(vol.shape))
    by_hand = np.bincount(shell.ravel(), (np.abs(spec) ** 2).astype(np.float64).ravel(),
                          minlength=N_SHELLS + 1)
    np.testing.assert_allclose(got[1][1], by_hand, rtol=1e-5)
