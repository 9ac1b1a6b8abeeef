"""The cryoCARE-like denoiser the benchmarks judge the picker on (data_tools/n2n.py): trained
on two noisy halves alone, it gets closer to the clean volume than their average does."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from data_tools.n2n import N2NConfig, UNet3d, apply_n2n, denoise_n2n

SMALL = N2NConfig(steps=60, patch_vox=16, batch=4, channels=8, lr=2e-3, seed=3)


def _blobs_and_halves(seed: int = 0, shape=(24, 48, 48), noise_sd: float = 1.5):
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape, np.float32)
    for c in rng.integers(4, np.array(shape) - 4, size=(25, 3)):
        clean[tuple(c)] = 1.0
    clean = ndimage.gaussian_filter(clean, 2.0)
    clean = ((clean - clean.mean()) / clean.std()).astype(np.float32)
    even, odd = (clean + rng.normal(0, noise_sd, shape).astype(np.float32) for _ in range(2))
    return clean, even, odd


def test_trained_on_halves_alone_it_denoises():
    clean, even, odd = _blobs_and_halves()
    out = denoise_n2n(even, odd, SMALL)
    mse = lambda v: float(((v - clean) ** 2).mean())  # noqa: E731
    # Averaging the halves halves the noise variance (2.25 → 1.1); the network, never shown
    # the clean volume, must do far better.
    assert mse(out) < 0.3 * mse((even + odd) / 2), (mse(out), mse((even + odd) / 2))
    np.testing.assert_array_equal(out, denoise_n2n(even, odd, SMALL))  # a seed's output


def test_slabs_join_without_seams():
    """Applied in y slabs with margins, the network gives what one pass over the whole
    volume gives (shapes not a multiple of 4 included)."""
    import torch

    torch.manual_seed(0)
    net = UNet3d(4).eval()
    vol = np.random.default_rng(1).normal(size=(22, 150, 37)).astype(np.float32)
    whole = apply_n2n(net, vol, 0.0, 1.0, slab_vox=1000)
    slabs = apply_n2n(net, vol, 0.0, 1.0, slab_vox=40)
    assert whole.shape == vol.shape
    np.testing.assert_allclose(slabs, whole, atol=1e-5)


def test_a_general_denoiser_reads_tomograms_of_any_scale(tmp_path):
    """Trained across two runs' halves of different gain and offset, saved and loaded with
    weights_only, it denoises a third run of yet another scale, returned in that run's own
    units: far closer to the clean volume than the noisy one is."""
    from data_tools.n2n import denoise_general, load_general, save_general, train_general_n2n

    pairs = []
    for seed, (gain, offset) in zip((0, 1), ((100.0, 5.0), (0.01, -3.0)), strict=True):
        _, even, odd = _blobs_and_halves(seed)
        pairs.append((even * gain + offset, odd * gain + offset))
    net = train_general_n2n(pairs, SMALL)
    path = tmp_path / "general.pt"
    save_general(net, path, SMALL, ["a", "b"])
    loaded = load_general(path)
    clean, even, _ = _blobs_and_halves(7, noise_sd=1.0)
    gain, offset = 30.0, 40.0
    out = denoise_general(loaded, even * gain + offset, voxel_A=20.0)
    err = lambda v: float((((v - offset) / gain - clean) ** 2).mean())  # noqa: E731
    assert err(out) < 0.4 * err(even * gain + offset), (err(out), err(even * gain + offset))
    np.testing.assert_array_equal(out, denoise_general(net, even * gain + offset, 20.0))


def test_a_general_denoiser_runs_on_its_own_grid_and_refuses_bad_files(tmp_path):
    """A 10 Å tomogram is denoised binned to 20 Å and brought back to its shape (odd sizes
    included); a missing or foreign file is a DataError naming it."""
    import torch

    from data_tools.n2n import denoise_general, load_general
    from data_tools.particles import DataError

    torch.manual_seed(0)
    net = UNet3d(4).eval()
    vol = np.random.default_rng(1).normal(size=(21, 50, 33)).astype(np.float32) * 7 + 2
    out = denoise_general(net, vol, voxel_A=10.0)
    assert out.shape == vol.shape and np.isfinite(out).all()
    with pytest.raises(DataError, match="nothing.pt: no general denoiser"):
        load_general(tmp_path / "nothing.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="foreign.pt: not a general denoiser"):
        load_general(tmp_path / "foreign.pt")


def test_the_command_trains_on_every_runs_halves(tmp_path):
    """`python -m data_tools.n2n` reads each run's wbp-even/wbp-odd from a copick project and
    writes a loadable denoiser that records its runs; a run without halves is named."""
    import torch

    from data_tools.copick_io import CopickProject
    from data_tools.n2n import main
    from data_tools.particles import DataError

    (tmp_path / "p" / "static").mkdir(parents=True)
    project = CopickProject(tmp_path / "p")
    for i, run in enumerate(("TS_a", "TS_b")):
        _, even, odd = _blobs_and_halves(i, shape=(32, 40, 40))  # a default patch fits
        project.write_tomogram(run, even, 20.0, "wbp-even", 20.0, n_levels=1)
        project.write_tomogram(run, odd, 20.0, "wbp-odd", 20.0, n_levels=1)
    out = tmp_path / "g.pt"
    assert main(["--project", str(project.path), "--out", str(out), "--steps", "3"]) == 0
    doc = torch.load(out, weights_only=True)
    assert doc["trained_on"] == [f"{project.path}:TS_a", f"{project.path}:TS_b"]
    project.write_tomogram("TS_c", even, 20.0, "wbp", 20.0, n_levels=1)
    with pytest.raises(DataError, match="run TS_c has no frame-split halves"):
        main(["--project", str(project.path), "--out", str(out), "--steps", "3"])
    assert CopickProject(project.path).runs() == ["TS_a", "TS_b", "TS_c"]
