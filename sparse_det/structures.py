"""SparseBatch: several sparse volumes concatenated, PointGroup-style."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SparseBatch:
    coords_bzyx: torch.Tensor  # int32 [N,4]: batch index, z, y, x (voxels), C-contiguous
    feats: torch.Tensor  # float32 [N,C]
    spatial_shape_zyx: tuple[int, int, int]
    batch_size: int

    def to(self, device: torch.device | str) -> SparseBatch:
        return SparseBatch(self.coords_bzyx.to(device), self.feats.to(device),
                           self.spatial_shape_zyx, self.batch_size)

    @classmethod
    def from_numpy(cls, coords_zyx_list: list[np.ndarray], feats_list: list[np.ndarray],
                   spatial_shape_zyx: tuple[int, int, int]) -> SparseBatch:
        """Concatenates per-volume coords [Ni,3] and feats [Ni,C]; forces C-contiguous int32
        indices (spconv on the CPU silently computes garbage on F-ordered index arrays)."""
        coords = [np.concatenate([np.full((len(c), 1), b, np.int32),
                                  np.asarray(c, np.int32)], axis=1)
                  for b, c in enumerate(coords_zyx_list)]
        c = np.ascontiguousarray(np.concatenate(coords), dtype=np.int32)
        f = np.ascontiguousarray(np.concatenate(feats_list), dtype=np.float32)
        if len(c) and (c[:, 1:].min() < 0 or np.any(c[:, 1:].max(0) >= spatial_shape_zyx)):
            raise ValueError(f"coords outside spatial shape {spatial_shape_zyx}")
        return cls(torch.from_numpy(c), torch.from_numpy(f), tuple(spatial_shape_zyx),
                   len(coords_zyx_list))
