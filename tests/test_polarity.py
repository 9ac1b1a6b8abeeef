"""Auto polarity reads the beam projection: the missing wedge's lobes, which drown a 3-D
statistic, are not in it. Shards made by the older rule are remade, not read."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from data_tools.features import POLARITY_MIN_SKEW, decide_polarity, robust_normalise, skewness
from data_tools.shards import SHARD_FORMAT, read_shard_attrs, shard_matches, write_shard
from data_tools.sparsify import sparsify
from data_tools.sparsify_config import SparsifyConfig


def _wedged_crowd(seed: int = 0, tilt_deg: float = 60.0, shape=(48, 128, 128)) -> np.ndarray:
    """Dense balls (protein dark) seen through a tilt series' missing wedge about y, with
    correlated noise: a crowded slab whose wedge lobes are as strong as the cores."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    zz, yy, xx = np.mgrid[:Z, :Y, :X]
    vol = np.zeros(shape, np.float32)
    for c in rng.uniform([0.3 * Z, 8, 8], [0.7 * Z, Y - 8, X - 8], (30, 3)):
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 9] += 1.0
    kz = np.fft.fftfreq(Z)[:, None, None]
    kx = np.fft.rfftfreq(X)[None, None, :]
    measured = np.abs(kz) <= np.tan(np.radians(tilt_deg)) * kx
    measured[0] = True  # the central section kz = 0: every tilt measures it
    spec = np.fft.rfftn(vol, axes=(0, 1, 2)) * measured
    spec[0, 0, 0] = 0
    out = -np.fft.irfftn(spec, s=shape, axes=(0, 1, 2)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1)
    return out + 0.5 * out.std() * noise / noise.std()


def test_projection_reads_polarity_where_the_wedge_drowns_the_3d_skewness():
    vol = _wedged_crowd()
    x = np.clip(robust_normalise(vol, "t"), -6, 6)
    blur_skew = skewness(ndimage.gaussian_filter(x, 3.0, truncate=3.0))
    assert abs(blur_skew) < 1.0, "the case should be one a 3-D blur cannot call"
    polarity, info = decide_polarity("auto", x.mean(axis=0), 20.0, "t")
    assert polarity == "dark" and info["polarity_skew"] < -5 * POLARITY_MIN_SKEW, info
    polarity, info = decide_polarity("auto", -x.mean(axis=0), 20.0, "t")
    assert polarity == "bright" and info["polarity_skew"] > 5 * POLARITY_MIN_SKEW, info


def test_noise_alone_is_uncertain_and_taken_as_dark(caplog):
    x = np.random.default_rng(1).standard_normal((48, 160, 160)).astype(np.float32)
    polarity, info = decide_polarity("auto", x.mean(axis=0), 20.0, "noise")
    assert polarity == "dark" and info["polarity_by"] == "auto (uncertain)", info
    assert "polarity uncertain" in caplog.text
    assert decide_polarity("bright", None, 20.0, "t")[1]["polarity_by"] == "setting"


def test_bright_copy_keeps_the_same_voxels_and_features():
    vol = _wedged_crowd(seed=2)
    cfg = SparsifyConfig(bin_factor=1, keep_fraction=0.05)
    dark = sparsify(vol, 20.0, cfg, "dark")
    bright = sparsify(-vol, 20.0, cfg, "bright")
    assert (dark.input["polarity"], bright.input["polarity"]) == ("dark", "bright")
    np.testing.assert_array_equal(dark.coords_zyx, bright.coords_zyx)
    np.testing.assert_allclose(dark.feats, bright.feats, atol=1e-5)


def test_shards_of_an_older_format_are_remade(tmp_path):
    import zarr

    sv = sparsify(_wedged_crowd(seed=3), 20.0, SparsifyConfig(bin_factor=1), "r")
    path = write_shard(sv, tmp_path)
    assert read_shard_attrs(path)["format"] == SHARD_FORMAT
    assert shard_matches(path, sv.config)
    g = zarr.open_group(str(path), mode="r+")
    del g.attrs["format"]  # as written before the format was recorded
    assert not shard_matches(path, sv.config)


@pytest.mark.parametrize("setting", ["dark", "bright"])
def test_a_set_polarity_is_obeyed(setting):
    vol = _wedged_crowd(seed=4)
    sv = sparsify(vol, 20.0, SparsifyConfig(bin_factor=1, polarity=setting), "r")
    assert sv.input["polarity"] == setting and sv.input["polarity_by"] == "setting"


def test_keep_share_follows_the_depth_of_thin_slabs():
    """Particles come per area: a slab thinner than keep_min_depth_A / keep_fraction keeps
    keep_min_depth_A per column; a full-size tomogram keeps keep_fraction."""
    from data_tools.sparsify import MAX_KEEP_SHARE, keep_share

    cfg = SparsifyConfig()  # 2.5 %, 40 Å
    assert keep_share(cfg, 92, 20.0) == pytest.approx(0.025)  # 1,840 Å: 46 Å > 40 Å
    assert keep_share(cfg, 32, 20.0) == pytest.approx(40 / 640)
    assert keep_share(cfg, 24, 20.0) == pytest.approx(40 / 480)
    assert keep_share(cfg, 2, 20.0) == MAX_KEEP_SHARE
    assert keep_share(SparsifyConfig(keep_min_depth_A=0.0), 32, 20.0) == pytest.approx(0.025)
