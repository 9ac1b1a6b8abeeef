"""bench/host.py: the fixed workload that makes seconds from two hosts comparable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "bench_host", Path(__file__).resolve().parents[1] / "bench" / "host.py")
bench_host = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_host)


def test_the_kept_set_is_fixed_clustered_and_inside_the_tomogram():
    a, b = bench_host.clustered_coords(), bench_host.clustered_coords()
    np.testing.assert_array_equal(a, b)  # the same workload on every host and day
    assert a.dtype == np.int32 and len(np.unique(a, axis=0)) == len(a)
    assert np.all(a >= 0) and np.all(a < np.array(bench_host.SHAPE_ZYX))
    assert 0.9 * bench_host.TARGET_VOXELS < len(a) < 1.2 * bench_host.TARGET_VOXELS
    # Clustered as a kept set is: about half the voxels have all six face neighbours in the
    # set (a ball of radius 4 holds 123 such of 257; uniform scatter of this many voxels
    # would give each neighbour a 2.6 % chance, all six almost never).
    keys = {tuple(c) for c in a[:: 50].tolist()}
    full = set(map(tuple, a.tolist()))
    steps = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    inner = [all(tuple(np.add(k, s)) in full for s in steps) for k in keys]
    assert np.mean(inner) > 0.4
