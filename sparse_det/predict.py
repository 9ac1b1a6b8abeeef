"""Model on a sparse volume → per-class detections (voting + clustering) → table rows in Å."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from data_tools.copick_io import zyx_vox_to_xyz_A
from data_tools.particles import ParticleTable
from data_tools.shards import SparseVolume
from sparse_det.config import PostprocessConfig
from sparse_det.postprocess import detect
from sparse_det.structures import SparseBatch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return dev


@torch.no_grad()
def predict_sparse(model: torch.nn.Module, sv: SparseVolume, device: torch.device,
                   amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Returns probs [N, K+1] and offsets [N,3] (voxels) in the shard's voxel order."""
    batch = SparseBatch.from_numpy([sv.coords_zyx], [sv.feats], sv.shape_zyx).to(device)
    ctx = (torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda"
           else contextlib.nullcontext())
    with ctx:
        out = model(batch)
    probs = torch.softmax(out["cls_logits"].float(), dim=1)
    return probs.cpu().numpy(), out["offsets"].float().cpu().numpy()


def detect_sparse(model: torch.nn.Module, sv: SparseVolume, particles: ParticleTable,
                  post: PostprocessConfig, device: torch.device, amp: bool = True
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Unthresholded detections per particle: {name: (centres x,y,z Å [M,3], scores [M])}."""
    probs, offsets = predict_sparse(model, sv, device, amp)
    radii = [p.radius_A / sv.voxel_size_A for p in particles]
    dets = detect(sv.coords_zyx, probs, offsets, radii, prob_floor=post.prob_floor,
                  cluster_radius_fraction=post.cluster_radius_fraction,
                  nms_radius_fraction=post.nms_radius_fraction, min_votes=post.min_votes)
    return {p.name: (zyx_vox_to_xyz_A(c, sv.voxel_size_A, sv.origin_A), s)
            for p, (c, s) in zip(particles, dets, strict=True)}


def threshold_rows(run: str, dets: dict[str, tuple[np.ndarray, np.ndarray]],
                   thresholds: dict[str, float], default: float) -> list[tuple]:
    """(experiment, particle_type, x, y, z, score) for detections at or above threshold."""
    rows = []
    for name, (xyz, scores) in dets.items():
        thr = thresholds.get(name, default)
        rows += [(run, name, *c, float(s)) for c, s in zip(xyz, scores, strict=True)
                 if s >= thr]
    return rows
