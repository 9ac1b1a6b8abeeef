"""Training at several kept shares: a level of a run sparsified once at the largest share,
unstandardised, is exactly the run sparsified at that level's share (same voxels, same
standardised features); crops draw every level; the config refuses what cannot work."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from data_tools.features import standardise_kept
from data_tools.sparsify import selection_score, sparsify
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.config import ConfigError, TrainConfig, config_from_dict
from sparse_det.data import CropSampler, RunSample
from sparse_det.share_levels import share_levels, wide_config
from sparse_det.targets import make_targets

SHARES = (0.025, 0.06)


def _tomogram(seed: int = 0) -> np.ndarray:
    """Noise with 24 dark blobs (protein dark, as in a tomogram), 96×64×64 voxels: deep
    enough that keep_min_depth_A does not raise the share."""
    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.normal(size=(96, 64, 64)), 0.7)
    blobs = np.zeros_like(vol)
    for z, y, x in rng.uniform([6, 6, 6], [90, 58, 58], (24, 3)).astype(int):
        blobs[z, y, x] = 1.0
    return (vol - 6.0 * ndimage.gaussian_filter(blobs, 1.5) / 0.0094).astype(np.float32)


def _cfg() -> SparsifyConfig:
    return SparsifyConfig(keep_fraction=SHARES[0], feature_norm="kept", whiten_sigma_A=20.0,
                          clip_sigma=20.0, polarity="dark", tilt_axis="y")


def test_a_level_is_the_run_sparsified_at_its_share():
    vol, cfg = _tomogram(), _cfg()
    wide = sparsify(vol, 20.0, wide_config(cfg, SHARES), "syn")
    for share in (0.025, 0.04):
        direct = sparsify(vol, 20.0, replace(cfg, keep_fraction=share), "syn")
        # Its voxels are the wide set's best by the selection score, exactly...
        score = selection_score(wide.feats[:, 1].astype(np.float64), wide.feats[:, 2], cfg)
        order = np.argsort(-score, kind="stable")
        top = order[:len(direct)]
        assert ({tuple(c) for c in wide.coords_zyx[top]}
                == {tuple(c) for c in direct.coords_zyx})
        # ...and standardising them over themselves gives its features.
        by_coord = {tuple(c): i for i, c in enumerate(wide.coords_zyx[top])}
        mine = standardise_kept(wide.feats[top])
        again = mine[[by_coord[tuple(c)] for c in direct.coords_zyx]]
        np.testing.assert_allclose(again, direct.feats, atol=2e-4)
    levels = share_levels(wide, cfg, SHARES)
    assert levels.shares[0] == pytest.approx(0.025)
    assert levels.shares[-1] == pytest.approx(0.06)
    assert np.all(np.diff(levels.counts) > 0) and levels.counts[-1] == len(wide)
    # The first level keeps the share of the tomogram; sparsify's own count misses it by
    # its quantile's sampling error (every second voxel in each axis): a few percent.
    assert levels.counts[0] == round(0.025 * vol.size)
    direct = sparsify(vol, 20.0, cfg, "syn")
    assert abs(levels.counts[0] - len(direct)) <= 0.05 * len(direct)


def test_levels_need_unstandardised_features():
    vol, cfg = _tomogram(), _cfg()
    with pytest.raises(ValueError, match="feature_norm 'volume'"):
        share_levels(sparsify(vol, 20.0, cfg, "syn"), cfg, SHARES)


def test_crops_read_every_level_standardised():
    vol, cfg = _tomogram(1), _cfg()
    wide = sparsify(vol, 20.0, wide_config(cfg, SHARES), "syn")
    centres = np.array([[48.0, 32.0, 32.0]])
    labels, offsets = make_targets(wide.coords_zyx, centres, np.ones(1, np.int64),
                                   np.full(1, 4.0))
    sample = RunSample(wide, labels, offsets, centres, np.ones(1, np.int64), {},
                       levels=share_levels(wide, cfg, SHARES))
    train = TrainConfig(crop_zyx=(96, 64, 64), intensity_jitter=0.0, flip_xy=False,
                        flip_z=False)
    sampler = CropSampler([sample], train, seed=0)
    seen = {}
    for _ in range(60):
        coords, feats, labels_c, _, _ = sampler.sample()
        seen.setdefault(len(coords), (coords, feats, labels_c))
    # The whole run in every crop: one voxel count per level, the level's best-ranked
    # voxels with their own labels, each level standardised over itself.
    assert sorted(seen) == sorted(sample.levels.counts.tolist())
    for n, (coords, feats, labels_c) in seen.items():
        best = sample.levels.rank < n
        np.testing.assert_array_equal(coords, wide.coords_zyx[best])
        np.testing.assert_array_equal(labels_c, labels[best])
        np.testing.assert_allclose(np.median(feats, axis=0), 0.0, atol=1e-5)


def test_config_checks_the_share_range():
    with pytest.raises(ConfigError, match="keep_share_range"):
        config_from_dict({"train": {"keep_share_range": [0.06, 0.025]},
                          "sparsify": {"feature_norm": "kept"}})
    with pytest.raises(ConfigError, match="feature_norm"):
        config_from_dict({"train": {"keep_share_range": [0.025, 0.06]}})
    cfg = config_from_dict({"train": {"keep_share_range": [0.025, 0.06]},
                            "sparsify": {"feature_norm": "kept"}})
    assert cfg.train.keep_share_range == [0.025, 0.06]
