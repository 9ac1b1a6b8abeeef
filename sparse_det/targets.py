"""Per-voxel training targets from ground-truth centres: class and offset to the centre."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def make_targets(coords_zyx: np.ndarray, centers_zyx_vox: np.ndarray, class_idx: np.ndarray,
                 radii_vox: np.ndarray, *, radius_fraction: float | np.ndarray = 1.0,
                 max_neighbors: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Args:
        coords_zyx: [N,3] voxel indices of the kept voxels.
        centers_zyx_vox: [M,3] particle centres in (fractional) voxels, same frame.
        class_idx: [M] network class of each particle, 1..K (0 is background).
        radii_vox: [M] particle radii in voxels.
        radius_fraction: a voxel within this fraction of a radius belongs to that particle
            (one for all, or [M] one per particle: particle_fractions);
            where particles' spheres overlap, the one nearest in units of its radius wins.
    Returns:
        labels [N] int64 (0 = background) and offsets [N,3] float32, centre − coord (voxels;
        zero on background).
    """
    n = len(coords_zyx)
    labels = np.zeros(n, np.int64)
    offsets = np.zeros((n, 3), np.float32)
    if n == 0 or len(centers_zyx_vox) == 0:
        return labels, offsets
    centers = np.asarray(centers_zyx_vox, np.float64).reshape(-1, 3)
    radii = np.asarray(radii_vox, np.float64) * radius_fraction
    k = min(max_neighbors, len(centers))
    dist, idx = cKDTree(centers).query(coords_zyx, k=k, distance_upper_bound=radii.max())
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    valid = idx < len(centers)
    safe = np.where(valid, idx, 0)
    norm = np.where(valid, dist / radii[safe], np.inf)
    norm[norm > 1.0] = np.inf
    best = norm.argmin(axis=1)
    has = np.isfinite(norm[np.arange(n), best])
    owner = safe[np.arange(n), best][has]
    labels[has] = np.asarray(class_idx)[owner]
    offsets[has] = (centers[owner] - coords_zyx[has]).astype(np.float32)
    return labels, offsets


def particle_fractions(class_idx: np.ndarray, radius_fraction: float,
                       by_class: dict[int, float]) -> np.ndarray:
    """[M] each particle's radius fraction: its class's in `by_class` (network class 1..K ->
    fraction), else `radius_fraction`."""
    fractions = np.full(len(class_idx), float(radius_fraction))
    for k, fraction in by_class.items():
        if not fraction > 0:
            raise ValueError(f"class {k}: radius fraction {fraction} must be above 0")
        fractions[np.asarray(class_idx) == k] = fraction
    return fractions
