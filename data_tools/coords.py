"""The two conversions between picks (x, y, z in Å, as copick and the competition keep them)
and arrays (z, y, x voxel indices); nobody else converts."""

from __future__ import annotations

import numpy as np


def xyz_A_to_zyx_vox(points_xyz_A: np.ndarray, voxel_size_A: float,
                     origin_A: float = 0.0) -> np.ndarray:
    """[N,3] x,y,z in Å → [N,3] z,y,x in (fractional) voxel indices.

    origin_A is where voxel 0's centre lies: 0 at full resolution; a 2x mean-binned level's
    voxel 0 covers full-resolution voxels 0 and 1, so its centre lies at 0.5 full voxels."""
    pts = np.asarray(points_xyz_A, dtype=np.float64).reshape(-1, 3)
    return (pts[:, ::-1] - origin_A) / voxel_size_A


def zyx_vox_to_xyz_A(points_zyx_vox: np.ndarray, voxel_size_A: float,
                     origin_A: float = 0.0) -> np.ndarray:
    """[N,3] z,y,x voxel indices → [N,3] x,y,z in Å (inverse of xyz_A_to_zyx_vox)."""
    pts = np.asarray(points_zyx_vox, dtype=np.float64).reshape(-1, 3)
    return pts[:, ::-1] * voxel_size_A + origin_A
