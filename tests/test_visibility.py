"""bench/visibility.py: a matched radial template scores planted blobs far above noise and
random points near zero (known answers on a synthetic volume)."""

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "visibility", Path(__file__).resolve().parents[1] / "bench" / "visibility.py")
visibility = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(visibility)


def _volume(centres, amplitude, rng):
    vol = rng.normal(0.0, 1.0, (40, 64, 64)).astype(np.float32)
    zz, yy, xx = np.indices(vol.shape)
    for c in centres:
        r2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        vol -= amplitude * np.exp(-r2 / (2 * 2.0**2))  # dark protein, sigma 2 voxels
    return vol


def test_planted_blobs_score_high_and_noise_scores_near_zero():
    rng = np.random.default_rng(0)
    centres = np.array([[20, 16, 16], [20, 16, 48], [20, 48, 16], [20, 48, 48], [12, 32, 32]])
    rmax = 5
    shells = visibility.shell_voxels(rmax)
    bg_at = rng.uniform(rmax, np.array([40, 64, 64]) - rmax - 1, size=(300, 3))

    strong = _volume(centres, 1.5, rng)
    z = visibility.template_z(visibility.radial_profiles(strong, centres, rmax),
                              visibility.radial_profiles(strong, bg_at, rmax), shells)
    assert len(z) == 5 and np.all(z > 5), z

    empty = _volume(centres, 0.0, rng)
    z0 = visibility.template_z(visibility.radial_profiles(empty, centres, rmax),
                               visibility.radial_profiles(empty, bg_at, rmax), shells)
    assert np.median(np.abs(z0)) < 3, z0  # a template fit to noise at 5 points stays small
    # cubes that leave the volume are skipped, not wrapped
    assert len(visibility.radial_profiles(strong, np.array([[1, 1, 1]]), rmax)) == 0
