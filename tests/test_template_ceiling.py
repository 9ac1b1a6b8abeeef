"""bench/template_ceiling.py: the FFT correlation is the direct one, local maxima find planted
blobs, and on a simulated project of easy physics the template picker finds the large
classes it should (real zarr files, the metric's own counts)."""

import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

_spec = importlib.util.spec_from_file_location(
    "template_ceiling", Path(__file__).resolve().parents[1] / "bench" / "template_ceiling.py")
template_ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(template_ceiling)


def test_fft_correlation_is_the_direct_one():
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(12, 17, 15)).astype(np.float32)
    kernel = template_ceiling.template_kernel(np.array([1.0, -0.5, 0.25]))
    assert kernel.shape == (5, 5, 5) and kernel[2, 2, 2] == 1.0 and kernel[0, 0, 0] == 0.0
    direct = ndimage.correlate(vol.astype(np.float64), kernel.astype(np.float64),
                               mode="constant")
    np.testing.assert_allclose(template_ceiling.correlate(vol, kernel), direct, atol=1e-4)


def test_local_maxima_are_the_planted_peaks_strongest_first():
    vol = np.zeros((30, 40, 40), np.float32)
    zz, yy, xx = np.indices(vol.shape)
    planted = [((15, 10, 10), 3.0), ((15, 30, 30), 2.0), ((10, 20, 30), 1.0)]
    for c, a in planted:
        vol += a * np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / 8.0)
    zyx, s = template_ceiling.local_maxima(vol, radius_vox=2, n_max=3)
    np.testing.assert_array_equal(zyx, [c for c, _ in planted])
    assert s[0] > s[1] > s[2]
    # a peak on a face is a candidate too; a weaker one beside a stronger one is not
    vol[0, 20, 20] = 10.0
    vol[0, 20, 21] = 9.0
    zyx, _ = template_ceiling.local_maxima(vol, radius_vox=2, n_max=10)
    assert (zyx[0] == [0, 20, 20]).all() and not any((z == [0, 20, 21]).all() for z in zyx)


def test_easy_project_large_classes_found(small_project):
    project = small_project  # a CopickProject of real zarr files
    for template in ("family", "own"):
        res = template_ceiling.project_scores(project, template, "denoised", 20.0)
        pc = res["per_class"]
        n_ref = sum(len(project.read_picks(r).get("ribosome", [])) for r in project.runs())
        assert pc["ribosome"]["tp"] + pc["ribosome"]["fn"] == n_ref > 0
        # clean physics (SNR 1.5-2): the ribosome and the capsid stand out to a template
        assert pc["ribosome"]["f4"] > 0.6 and pc["virus-like-particle"]["f4"] > 0.6, pc
        assert 0.0 < res["weighted_f4"] <= 1.0
