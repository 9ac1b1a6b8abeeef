"""bench/denoisers.py: the denoised copies it scores, on real zarr files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "bench_denoisers", Path(__file__).resolve().parents[1] / "bench" / "denoisers.py")
bench_denoisers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_denoisers)


def test_the_median_keeps_its_width_in_angstrom():
    """A 3-voxel dark cube is 60 Å at 20 Å (the median of 3 keeps its centre) and 30 Å at
    10 Å (the median of 5 there, the same 60 Å, removes it)."""
    vol = np.zeros((15, 15, 15), np.float32)
    vol[6:9, 6:9, 6:9] = -10.0
    assert bench_denoisers.denoise_at(vol, "median", 1.0, 20.0)[7, 7, 7] == -10.0
    assert bench_denoisers.denoise_at(vol, "median", 1.0, 10.0)[7, 7, 7] == 0.0


def test_a_copy_is_denoised_once_and_keeps_the_picks(small_project, tmp_path):
    run = small_project.runs()[0]
    src = small_project.read_tomogram(run).data
    same = bench_denoisers.denoised_copy(small_project, tmp_path / "none", "none", 1.0)
    np.testing.assert_array_equal(same.read_tomogram(run).data, src)
    for name, pts in small_project.read_picks(run).items():
        np.testing.assert_array_equal(same.read_picks(run)[name], pts)

    dest = tmp_path / "diffusion"
    smooth = bench_denoisers.denoised_copy(small_project, dest, "diffusion", 1.0)
    out = smooth.read_tomogram(run).data
    # the finest detail (neighbour differences) is mostly gone, the tomogram is not flat
    assert np.abs(np.diff(out, axis=2)).mean() < 0.5 * np.abs(np.diff(src, axis=2)).mean()
    assert np.corrcoef(out.ravel(), src.ravel())[0, 1] > 0.5
    stamp = (dest / ".denoised").stat().st_mtime_ns
    again = bench_denoisers.denoised_copy(small_project, dest, "diffusion", 1.0)
    assert (dest / ".denoised").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.read_tomogram(run).data, out)


def test_input_variants_rewrite_only_what_they_name(small_project, tmp_path):
    """bench/input_variants.py's copies: protein bright is the tomogram negated; tilted
    about x swaps y and x in the tomogram and in every pick (Å); the blank fifth is the
    mean there, the rest untouched, and drops exactly the picks it touches; the IMOD-oriented
    MRC comes back through import_mrc as the tomogram standardised (float16's rounding)."""
    spec = importlib.util.spec_from_file_location(
        "bench_input_variants", Path(__file__).resolve().parents[1] / "bench" / "input_variants.py")
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    run = small_project.runs()[0]
    src = small_project.read_tomogram(run).data
    bright = variants.write_variant(small_project, tmp_path / "b", "bright protein")
    np.testing.assert_array_equal(bright.read_tomogram(run).data, -src)
    tilted = variants.write_variant(small_project, tmp_path / "t", "tilted about x")
    np.testing.assert_array_equal(tilted.read_tomogram(run).data, src.transpose(0, 2, 1))
    for name, pts in small_project.read_picks(run).items():
        np.testing.assert_array_equal(tilted.read_picks(run)[name], pts[:, [1, 0, 2]])
    blank = variants.write_variant(small_project, tmp_path / "z", variants.BLANK)
    vol, edge = blank.read_tomogram(run).data, src.shape[2] // 5
    np.testing.assert_allclose(vol[:, :, :edge], src.mean(), rtol=1e-5)
    np.testing.assert_array_equal(vol[:, :, edge:], src[:, :, edge:])
    voxel_A = small_project.read_tomogram(run).voxel_size_A
    dropped = 0
    for name, pts in small_project.read_picks(run).items():
        inside = pts[:, 0] <= edge * voxel_A + small_project.particles[name].radius_A
        np.testing.assert_array_equal(blank.read_picks(run).get(name, pts[:0]), pts[~inside])
        dropped += inside.sum()
    assert dropped > 0
    imported, cost = variants.imported_mrc_variant(small_project, tmp_path / "m",
                                                   variants.MRC_VARIANTS[0])
    back = imported.read_tomogram(run, round(voxel_A, 3), "wbp").data
    z = (src - src.mean()) / src.std()
    np.testing.assert_allclose(back, z, atol=1e-3 * np.abs(z).max())
    assert cost["import_peak_GB"] > 0 and cost["files_GB"] > 0


def test_n2n_trains_on_the_halves_and_names_a_run_without_them(small_project, tmp_path):
    """--denoisers n2n: a tilt-series run simulated with its frame-split halves is denoised
    from them alone (the copy's tomogram is smoother than either half, and follows their
    mean); a run without halves is refused by name, and the copy is never marked done (so
    the next call makes it again instead of reading a half-made copy)."""
    import pytest

    from data_tools.particles import DataError
    from data_tools.simulate import simulate_project
    from data_tools.tilt_ranges import TiltRanges

    with pytest.raises(DataError, match=f"{small_project.runs()[0]} has no frame-split halves"):
        bench_denoisers.denoised_copy(small_project, tmp_path / "refused", "n2n", 1.0, 5)
    assert not (tmp_path / "refused" / ".denoised").exists()
    src = simulate_project(tmp_path / "halves", n_runs=1, seed=3, shape_zyx=(64, 96, 96),
                           physics="tilt", tilt=TiltRanges(halves=True), progress=False)
    run = src.runs()[0]
    spacing_A = src.voxel_spacings(run)[0]
    even, odd = (src.read_tomogram(run, spacing_A, k).data for k in ("wbp-even", "wbp-odd"))
    out = bench_denoisers.denoised_copy(src, tmp_path / "n2n", "n2n", 1.0, 40)
    den = out.read_tomogram(run, spacing_A).data
    assert den.shape == even.shape
    rough = lambda v: np.abs(np.diff(v, axis=2)).mean() / v.std()  # noqa: E731
    assert rough(den) < 0.5 * rough(even)
    assert np.corrcoef(den.ravel(), ((even + odd) / 2).ravel())[0, 1] > 0.3

    # --denoisers general: one network trained across runs' halves, applied to each run's
    # wbp; the copy holds exactly its output, and asking for it without weights is refused.
    from data_tools.n2n import denoise_general, load_general
    from data_tools.n2n import main as train_general

    weights = tmp_path / "general.pt"
    assert train_general(["--project", str(src.path), "--out", str(weights), "--steps", "2"]) == 0
    out = bench_denoisers.denoised_copy(src, tmp_path / "general", "general", 1.0,
                                        general=str(weights))
    wbp = src.read_tomogram(run, spacing_A, "wbp")
    np.testing.assert_allclose(
        out.read_tomogram(run, spacing_A).data,
        denoise_general(load_general(weights), np.asarray(wbp.data), wbp.voxel_size_A),
        rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit):
        bench_denoisers.main(["--project", str(src.path), "--denoisers", "general"])
