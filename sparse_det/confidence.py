"""How surely the network reads a tomogram, and each class in it: the mean top-class
probability over the voxels it reads as particles. Vote masses may be divided by it to the
power `postprocess.confidence_power` (Detections.with_confidence_power; 0 by default,
masses as voted): a tomogram read less surely gives its true particles less vote mass,
which one calibration for every tomogram would drop under the thresholds.
"""

from __future__ import annotations

import torch


def confidences(probs, names: list[str]) -> tuple[float, dict[str, float]]:
    """(the tomogram's confidence: the mean top-class probability over the voxels whose top
    class is a particle, 1.0 when there are none; per particle class, names[k] ↔ column
    k + 1: the same over the voxels whose top class it is, classes no voxel takes left
    out). One pass over the voxels and one transfer to the host: on a GPU each transfer is
    a synchronisation of the decode."""
    probs = torch.as_tensor(probs)
    top, cls = probs.max(dim=1)
    n = torch.bincount(cls, minlength=probs.shape[1])
    total = torch.zeros(probs.shape[1], dtype=torch.float64, device=probs.device)
    total.index_add_(0, cls, top.double())
    n, total = torch.stack([n.double(), total]).cpu().numpy()
    n_fg = n[1:].sum()
    per_class = {name: float(total[k + 1] / n[k + 1]) for k, name in enumerate(names)
                 if n[k + 1] > 0}
    return (float(total[1:].sum() / n_fg) if n_fg > 0 else 1.0), per_class


def tomogram_confidence(probs) -> float:
    """confidences' first part: how surely the network reads this tomogram."""
    return confidences(probs, [])[0]


def class_confidence(probs, names: list[str]) -> dict[str, float]:
    """confidences' second part: each class's own."""
    return confidences(probs, names)[1]
