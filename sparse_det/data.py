"""Training data: shards with their targets, and random sparse crops with augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_tools.copick_io import CopickProject, xyz_A_to_zyx_vox
from data_tools.particles import ParticleTable
from data_tools.shards import SparseVolume
from data_tools.sparsify import SparsifyConfig, shard_or_sparsify
from sparse_det.structures import SparseBatch
from sparse_det.targets import make_targets


@dataclass
class RunSample:
    sv: SparseVolume
    labels: np.ndarray  # [N] int64, 0 = background
    offsets: np.ndarray  # [N,3] float32 voxels
    centers_zyx: np.ndarray  # [M,3] ground-truth centres, working voxels
    center_class: np.ndarray  # [M] 1..K
    truth_xyz_A: dict[str, np.ndarray]


def ensure_shard(project: CopickProject, shards_dir: str | Path, cfg: SparsifyConfig,
                 run: str) -> SparseVolume:
    """Reads the run's shard when it matches the config; else sparsifies and writes it."""
    return shard_or_sparsify(project, run, cfg, shards_dir, write=True)


def truth_in_voxels(sv: SparseVolume, truth_xyz_A: dict[str, np.ndarray],
                    particles: ParticleTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres [M,3] working voxels, classes [M] 1..K, radii [M] voxels)."""
    cs, ks, rs = [np.zeros((0, 3))], [np.zeros(0, np.int64)], [np.zeros(0)]
    for name, pts in truth_xyz_A.items():
        cs.append(xyz_A_to_zyx_vox(pts, sv.voxel_size_A, sv.origin_A))
        ks.append(np.full(len(pts), particles.class_index(name), np.int64))
        rs.append(np.full(len(pts), particles[name].radius_A / sv.voxel_size_A))
    return np.concatenate(cs), np.concatenate(ks), np.concatenate(rs)


def load_run_sample(project: CopickProject, shards_dir: str | Path, cfg: SparsifyConfig,
                    run: str, radius_fraction: float) -> RunSample:
    sv = ensure_shard(project, shards_dir, cfg, run)
    truth = project.read_picks(run)
    centers, classes, radii = truth_in_voxels(sv, truth, project.particles)
    labels, offsets = make_targets(sv.coords_zyx, centers, classes, radii, radius_fraction)
    return RunSample(sv, labels, offsets, centers, classes, truth)


class CropSampler:
    """Random crops of the kept voxels. Most crops are centred near a particle of a class
    drawn uniformly, so rare classes are seen as often as common ones; flips in x and y
    keep the missing wedge (tilt axis y) where it is."""

    def __init__(self, runs: list[RunSample], *, crop_zyx, flip_xy: bool = True,
                 intensity_jitter: float = 0.1, particle_focus: float = 0.8, seed: int = 0):
        if not runs:
            raise ValueError("no training runs")
        self.runs, self.crop = runs, np.asarray(crop_zyx)
        self.flip_xy, self.jitter, self.focus = flip_xy, intensity_jitter, particle_focus
        self.rng = np.random.default_rng(seed)

    def _origin(self, r: RunSample, crop: np.ndarray) -> np.ndarray:
        shape = np.asarray(r.sv.shape_zyx)
        if len(r.centers_zyx) and self.rng.random() < self.focus:
            classes = np.unique(r.center_class)
            k = self.rng.choice(classes)
            i = self.rng.choice(np.flatnonzero(r.center_class == k))
            centre = r.centers_zyx[i] + self.rng.uniform(-0.3, 0.3, 3) * crop
        else:
            centre = self.rng.uniform(0, 1, 3) * shape
        return np.clip(np.round(centre - crop / 2), 0, np.maximum(shape - crop, 0)).astype(int)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r = self.runs[self.rng.integers(len(self.runs))]
        crop = np.minimum(self.crop, r.sv.shape_zyx)
        o = self._origin(r, crop)
        inside = np.all((r.sv.coords_zyx >= o) & (r.sv.coords_zyx < o + crop), axis=1)
        coords = r.sv.coords_zyx[inside] - o
        feats = r.sv.feats[inside].copy()
        labels, offsets = r.labels[inside], r.offsets[inside].copy()
        if self.flip_xy:
            for ax in (1, 2):
                if self.rng.random() < 0.5:
                    coords[:, ax] = crop[ax] - 1 - coords[:, ax]
                    offsets[:, ax] *= -1
        if self.rng.random() < 0.5:  # z flip: the wedge is symmetric in z too
            coords[:, 0] = crop[0] - 1 - coords[:, 0]
            offsets[:, 0] *= -1
        if self.jitter:
            c = feats.shape[1]
            feats = feats * (1 + self.rng.uniform(-self.jitter, self.jitter, c)).astype(
                np.float32) + self.rng.normal(0, self.jitter / 2, c).astype(np.float32)
        return coords, feats, labels, offsets

    def batch(self, batch_size: int) -> tuple[SparseBatch, torch.Tensor, torch.Tensor]:
        items = [self.sample() for _ in range(batch_size)]
        b = SparseBatch.from_numpy([i[0] for i in items], [i[1] for i in items],
                                   tuple(int(s) for s in self.crop))
        labels = torch.from_numpy(np.concatenate([i[2] for i in items]))
        offsets = torch.from_numpy(np.concatenate([i[3] for i in items]))
        return b, labels, offsets
