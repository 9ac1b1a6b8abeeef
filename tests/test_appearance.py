"""Appearance randomisation and per-tomogram standardisation of the kept voxels: each
randomisation is deterministic for a seed and does what its name says; standardised
features do not depend on the tomogram's contrast gain or noise level."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.appearance import (
    BANDS_A,
    AppearanceRanges,
    randomise_appearance,
    reweight_bands,
)
from data_tools.features import standardise_kept
from data_tools.sparsify import sparsify
from data_tools.sparsify_config import SparsifyConfig

SPACING_A = 20.0


def _blobs(shape=(32, 64, 64), n=12, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Dark Gaussian blobs (sigma 2 voxels) on a flat background, and their centres."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(6, np.array(shape) - 6, (n, 3))
    grid = np.indices(shape, dtype=np.float32)
    vol = np.zeros(shape, np.float32)
    for c in centres:
        d2 = sum((grid[i] - c[i]) ** 2 for i in range(3))
        vol -= np.exp(-d2 / (2 * 2.0**2)).astype(np.float32)
    return vol, centres


def test_each_variant_is_deterministic_for_its_seed():
    vol, _ = _blobs()
    ranges = AppearanceRanges()
    a = ranges.draw(np.random.default_rng(7))
    b = ranges.draw(np.random.default_rng(7))
    c = ranges.draw(np.random.default_rng(8))
    assert a == b and a != c
    np.testing.assert_array_equal(randomise_appearance(vol, SPACING_A, a),
                                  randomise_appearance(vol, SPACING_A, b))
    assert not np.allclose(randomise_appearance(vol, SPACING_A, a),
                           randomise_appearance(vol, SPACING_A, c))


def test_band_gain_scales_only_its_band():
    """White noise re-weighted with gain 2 on the finest band only: its power grows ×4 at
    wavelengths well under the band's edge and stays at wavelengths well above it."""
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((32, 64, 64)).astype(np.float32)
    out = reweight_bands(vol, [2.0, 1.0, 1.0, 1.0], SPACING_A)
    f_in, f_out = np.abs(np.fft.rfftn(vol)) ** 2, np.abs(np.fft.rfftn(out)) ** 2
    freq = [np.fft.fftfreq(32), np.fft.fftfreq(64), np.fft.rfftfreq(64)]
    k = np.sqrt(freq[0][:, None, None] ** 2 + freq[1][None, :, None] ** 2
                + freq[2][None, None, :] ** 2) / SPACING_A
    fine = k > 2 / BANDS_A[0]  # an octave under the edge: the step is 98 % done
    coarse = (k > 0) & (k < 1 / (4 * BANDS_A[0]))
    assert f_out[fine].sum() / f_in[fine].sum() == pytest.approx(4.0, rel=0.03)
    assert f_out[coarse].sum() / f_in[coarse].sum() == pytest.approx(1.0, rel=0.05)


def test_flip_makes_protein_bright_and_noise_is_added():
    vol, centres = _blobs()
    base = {"band_gain": [1.0] * 4, "blur_vox": 0.0, "noise_rel": 0.0,
            "noise_blur_vox": 0.0, "gamma": 1.0, "noise_seed": 3}
    c = tuple(np.round(centres[0]).astype(int))
    plain = randomise_appearance(vol, SPACING_A, base | {"flip": False})
    flipped = randomise_appearance(vol, SPACING_A, base | {"flip": True})
    assert plain[c] < 0 < flipped[c]
    np.testing.assert_allclose(flipped, -plain, atol=1e-5)
    noisy = randomise_appearance(vol, SPACING_A, base | {"flip": False, "noise_rel": 1.0})
    # the background far from any blob gains noise of about the requested size
    assert np.std(noisy - plain) > 0.5 * np.std(plain[np.abs(plain) > 1e-3])


def test_kept_features_do_not_depend_on_contrast_gain_or_noise_level():
    """The same blobs at two noise levels: with feature_norm 'volume' the kept voxels'
    features shrink as noise grows; with 'kept' their median and robust sigma are 0 and 1
    whatever the level."""
    vol, _ = _blobs(n=20)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(vol.shape).astype(np.float32)
    medians = {}
    for norm in ("volume", "kept"):
        cfg = SparsifyConfig(keep_fraction=0.05, polarity="dark", feature_norm=norm)
        for level in (0.05, 0.4):
            sv = sparsify(vol + level * noise, SPACING_A, cfg, "r")
            medians[norm, level] = np.median(sv.feats, axis=0)
            if norm == "kept":
                np.testing.assert_allclose(medians[norm, level], 0.0, atol=1e-5)
    assert np.all(medians["volume", 0.4][1:] < 0.7 * medians["volume", 0.05][1:])


def test_standardise_kept_survives_a_clipped_channel():
    """A channel where most kept voxels sit at the clip has zero MAD: its scale falls back to
    a share of its standard deviation instead of dividing by zero."""
    f = np.zeros((100, 2), np.float32)
    f[:, 0] = 6.0
    f[:10, 0] = np.linspace(2, 5, 10)
    f[:, 1] = np.linspace(-1, 1, 100)
    out = standardise_kept(f)
    assert np.isfinite(out).all()
    assert out[:, 0].max() == 0.0 and out[:, 0].min() < -1.0
    const = standardise_kept(np.ones((10, 1), np.float32))
    np.testing.assert_array_equal(const, 0.0)


def test_training_variants_are_cached_and_keep_the_truth(tmp_path):
    """data.appearance_variants: each training run comes with that many randomised copies,
    sparsified once into their own shard folders, with the run's ground truth, the same on
    a second load."""
    from data_tools.simulate import simulate_project
    from sparse_det.config import config_from_dict
    from sparse_det.data import load_samples

    project = simulate_project(tmp_path / "p", 1, 3, (48, 128, 128), progress=False)
    cfg = config_from_dict({"data": {"project": str(project.path),
                                     "shards": str(tmp_path / "shards"),
                                     "appearance_variants": 2},
                            "sparsify": {"feature_norm": "kept"}})
    run = project.runs()[0]
    first = load_samples(cfg, project, [run], variants=2)
    assert len(first) == 3
    assert [s.sv.input.get("appearance") is None for s in first] == [True, False, False]
    assert first[1].sv.input["appearance"] != first[2].sv.input["appearance"]
    assert not np.array_equal(first[0].sv.feats[:100], first[1].sv.feats[:100])
    for s in first[1:]:  # the copy's polarity is the run's, flipped when the draw flipped
        flipped = s.sv.input["appearance"]["flip"]
        assert (s.sv.input["polarity"] != first[0].sv.input["polarity"]) == flipped
    for s in first:
        assert s.truth_xyz_A.keys() == first[0].truth_xyz_A.keys()
        assert (s.labels > 0).any(), "particles must stay labelled in every variant"
    folders = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert len([f for f in folders if f.startswith("appearance_")]) == 2, folders
    again = load_samples(cfg, project, [run], variants=2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.sv.coords_zyx, b.sv.coords_zyx)
        np.testing.assert_array_equal(a.sv.feats, b.sv.feats)


def test_config_ranges_override_the_defaults_and_unknown_names_are_refused():
    """data.appearance sets AppearanceRanges fields; the defaults keep their shard key (so
    older shard folders still match) and other ranges get another folder."""
    from sparse_det.config import ConfigError
    from sparse_det.data import appearance_ranges

    assert appearance_ranges({}) == AppearanceRanges()
    strong = appearance_ranges({"noise_rel": [0.0, 3.0], "flip_probability": 0.3})
    assert strong.noise_rel == (0.0, 3.0) and strong.flip_probability == 0.3
    assert strong.blur_vox == AppearanceRanges().blur_vox
    assert strong.key() != AppearanceRanges().key()
    draws = [strong.draw(np.random.default_rng(s))["noise_rel"] for s in range(200)]
    assert max(draws) > 1.5, "the wider noise range must be drawn from"
    with pytest.raises(ConfigError, match="noise_level"):
        appearance_ranges({"noise_level": [0, 1]})


def test_ranges_without_a_median_keep_their_draws_and_shard_names():
    """The median option draws nothing at probability 0: the training configs' ranges keep
    the shard folder their variants were written to (appearance_bfe53c8d_*) and the same
    draws; at probability 1 every draw names a footprint and the draws before it stay."""
    from sparse_det.data import appearance_ranges

    shipped = {"band_gain": [0.4, 2.5], "blur_vox": [0.0, 2.0], "noise_rel": [0.0, 2.5],
               "noise_blur_vox": [0.0, 2.0], "gamma": [0.6, 1.6]}
    plain = appearance_ranges(shipped)
    assert plain.key() == "bfe53c8d"
    assert "median" not in plain.draw(np.random.default_rng(5))
    median = appearance_ranges(shipped | {"median_probability": 1.0})
    assert median.key() != plain.key()
    draws = [median.draw(np.random.default_rng(i)) for i in range(20)]
    assert {d["median"] for d in draws} == {"cross", "cube"}
    assert draws[3] == median.draw(np.random.default_rng(3))
    before = plain.draw(np.random.default_rng(3))
    assert {k: v for k, v in draws[3].items() if k != "median"} == before
    from sparse_det.config import ConfigError
    with pytest.raises(ConfigError, match="probabilities must lie in"):
        appearance_ranges({"median_probability": 1.5})


def test_median_removes_a_spike_and_keeps_a_particle():
    """Noise, one voxel 60σ bright and a dark ball 3σ deep and 9 voxels across: either
    footprint puts the spike back into the noise and leaves the ball's centre dark; without
    a median the spike stays."""
    rng = np.random.default_rng(0)
    shape = (24, 48, 48)
    vol = rng.standard_normal(shape).astype(np.float32)
    grid = np.indices(shape)
    ball = sum((grid[i] - c) ** 2 for i, c in enumerate((12, 24, 24))) <= 4**2
    vol[ball] -= 3.0
    vol[6, 10, 10] = 60.0
    base = {"band_gain": [1.0] * 4, "blur_vox": 0.0, "noise_rel": 0.0, "noise_blur_vox": 0.0,
            "gamma": 1.0, "flip": False, "noise_seed": 0}
    none = randomise_appearance(vol, SPACING_A, base)
    assert none[6, 10, 10] > 30
    for footprint in ("cross", "cube"):
        out = randomise_appearance(vol, SPACING_A, base | {"median": footprint})
        assert abs(out[6, 10, 10]) < 3, footprint
        assert out[12, 24, 24] < -2, footprint
        assert not np.allclose(out, none)


def test_a_learnt_denoiser_draws_last_and_cleans_the_copy(tmp_path):
    """learnt_denoiser_probability draws after every other field (the draws before it and
    the median's stay), names the network only for the copies it picks (and then no median),
    and the copy it picks is cleaner: the added noise mostly gone, the particles kept. A
    missing path is a ConfigError naming it."""
    import torch

    from data_tools.n2n import N2NConfig, save_general, train_general_n2n
    from sparse_det.config import ConfigError
    from sparse_det.data import appearance_ranges

    clean, centres = _blobs()
    rng = np.random.default_rng(1)
    pairs = [(clean + rng.normal(0, 0.3, clean.shape).astype(np.float32),
              clean + rng.normal(0, 0.3, clean.shape).astype(np.float32))]
    torch.manual_seed(0)
    net = train_general_n2n(pairs, N2NConfig(steps=80, patch_vox=16, batch=4, channels=8,
                                             lr=2e-3, seed=1))
    path = tmp_path / "general.pt"
    save_general(net, path, N2NConfig(channels=8), ["blobs"])
    shipped = {"band_gain": [0.4, 2.5], "noise_rel": [0.0, 2.5], "median_probability": 0.5}
    plain = appearance_ranges(shipped)
    learnt = appearance_ranges(shipped | {"learnt_denoiser_probability": 0.5,
                                          "learnt_denoiser": str(path)})
    assert learnt.key() != plain.key()
    draws = [learnt.draw(np.random.default_rng(i)) for i in range(30)]
    for i, d in enumerate(draws):
        before = plain.draw(np.random.default_rng(i))
        new = ("learnt_denoiser", "learnt_denoiser_digest", "median")
        assert {k: v for k, v in d.items() if k not in new} == {
            k: v for k, v in before.items() if k != "median"}
        assert d["median"] == ("none" if d["learnt_denoiser"] else before["median"])
    assert {d["learnt_denoiser"] for d in draws} == {"", str(path)}
    # Weights retrained at the same path: another shard folder and other draws' digests.
    digest = next(d for d in draws if d["learnt_denoiser"])["learnt_denoiser_digest"]
    key = learnt.key()
    save_general(net, path, N2NConfig(channels=8), ["blobs", "again"])
    assert learnt.key() != key
    assert learnt.draw(np.random.default_rng(draws.index(next(
        d for d in draws if d["learnt_denoiser"]))))["learnt_denoiser_digest"] != digest
    # A tomogram with noise of its own (so its robust sigma is the noise's), and as much
    # again added by the copy.
    vol = clean + np.random.default_rng(2).normal(0, 0.3, clean.shape).astype(np.float32)
    base = {"band_gain": [1.0] * 4, "blur_vox": 0.0, "noise_rel": 1.0, "noise_blur_vox": 0.0,
            "gamma": 1.0, "flip": False, "noise_seed": 4}
    noisy = randomise_appearance(vol, SPACING_A, base)
    denoised = randomise_appearance(vol, SPACING_A, base | {"learnt_denoiser": str(path)})

    def error(v):  # against the clean volume, both scaled to unit std
        return float(np.mean((v / v.std() - clean / clean.std()) ** 2))

    assert error(denoised) < 0.5 * error(noisy), (error(denoised), error(noisy))
    at = tuple(np.round(centres[0]).astype(int))
    assert denoised[at] < -1.0  # the first particle is still dark
    with pytest.raises(ConfigError, match="nowhere.pt: no such file"):
        appearance_ranges({"learnt_denoiser_probability": 0.5, "learnt_denoiser": "nowhere.pt"})
    with pytest.raises(ConfigError, match="needs learnt_denoiser"):
        appearance_ranges({"learnt_denoiser_probability": 0.5})
