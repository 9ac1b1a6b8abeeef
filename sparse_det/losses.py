"""Losses: focal, class-weighted cross-entropy for the heavy background, L1 offsets on particles."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def detection_losses(cls_logits: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor,
                     offset_targets: torch.Tensor, *, background_weight: float,
                     focal_gamma: float, offset_weight: float) -> dict[str, torch.Tensor]:
    """The weights come from the config's `loss:` section (LossConfig).

    Args:
        cls_logits [N, K+1], offsets [N,3] (voxels), labels [N] int64 (0 = background),
        offset_targets [N,3] (voxels; used where labels > 0).
    Returns a flat dict: loss_cls, loss_offset (each already weighted) and loss (their sum).
    """
    logp = F.log_softmax(cls_logits.float(), dim=1)
    logp_t = logp.gather(1, labels[:, None]).squeeze(1)
    w = torch.where(labels == 0, background_weight, 1.0).to(logp.dtype)
    focal = (1.0 - logp_t.exp()).clamp(min=0.0) ** focal_gamma if focal_gamma else 1.0
    loss_cls = -(w * focal * logp_t).sum() / w.sum().clamp(min=1e-6)
    fg = labels > 0
    if fg.any():
        loss_off = F.smooth_l1_loss(offsets[fg].float(), offset_targets[fg].float(),
                                    beta=1.0, reduction="mean")
    else:
        loss_off = offsets.sum() * 0.0  # keeps the graph for DDP when a crop has no particle
    loss_off = offset_weight * loss_off
    return {"loss_cls": loss_cls, "loss_offset": loss_off, "loss": loss_cls + loss_off}
