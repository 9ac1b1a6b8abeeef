"""Losses: focal, class-weighted cross-entropy for the heavy background (a partial-label
term where a run leaves classes unannotated), L1 offsets on particles."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from data_tools.particles import ParticleTable
from sparse_det.config import ConfigError

# A run's unknown bits (RunSample.unknown_bits): bit k where network class k is not
# annotated there, bit PARTLY_SHIFT + k where it is picked in part; one int64 holds both.
PARTLY_SHIFT = 32


def unknown_bits_of(particles: ParticleTable, unannotated: list[str],
                    partly_picked: list[str]) -> int:
    """The bits detection_losses reads for a run (network class k = table index + 1)."""
    if not unannotated and not partly_picked:
        return 0  # a run annotated in full trains with a table of any size
    if len(particles) + 1 > PARTLY_SHIFT - 1:
        raise ConfigError(f"partial annotation takes at most {PARTLY_SHIFT - 2} particles, "
                          f"the table has {len(particles)}")
    return (sum(1 << particles.class_index(n) for n in unannotated)
            | sum(1 << (PARTLY_SHIFT + particles.class_index(n)) for n in partly_picked))


def label_weights(particles: ParticleTable, *, background_weight: float,
                  class_weights: dict[str, float]) -> torch.Tensor:
    """The class-loss weight of each label [K+1] (0 = background), from the config's names."""
    unknown = sorted(set(class_weights) - set(particles.names))
    if unknown:
        raise ConfigError(f"loss.class_weights: unknown particle(s) {unknown}; "
                          f"known: {particles.names}")
    bad = {k: v for k, v in class_weights.items()
           if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0}
    if bad:
        raise ConfigError(f"loss.class_weights: weights must be positive numbers, got {bad}")
    if not background_weight > 0:
        raise ConfigError(f"loss.background_weight must be positive, got {background_weight}")
    return torch.tensor([background_weight]
                        + [float(class_weights.get(n, 1.0)) for n in particles.names],
                        dtype=torch.float32)


def detection_losses(cls_logits: torch.Tensor, offsets: torch.Tensor, labels: torch.Tensor,
                     offset_targets: torch.Tensor, *, background_weight: float,
                     focal_gamma: float, offset_weight: float,
                     label_weight: torch.Tensor | None = None,
                     unknown_bits: torch.Tensor | None = None,
                     unpicked_share: float = 1.0) -> dict[str, torch.Tensor]:
    """The weights come from the config's `loss:` section (LossConfig).

    Args:
        cls_logits [N, K+1], offsets [N,3] (voxels), labels [N] int64 (0 = background),
        offset_targets [N,3] (voxels; used where labels > 0).
        label_weight [K+1]: each label's class-loss weight (label_weights); when given it
        replaces background_weight.
        unknown_bits [N] int64: bit k set where a background voxel may also be class k (a
        run that does not annotate k); read on background voxels only. Its class term is
        then the partial-label loss −log(p(background) + Σ p(k)): read as plain background,
        the unannotated particles there would be taught as background (a run where only
        ribosomes were picked is not a run without apo-ferritin). Bit PARTLY_SHIFT + k:
        class k is picked in part there; its term is −log(p(background) + unpicked_share ·
        p(k)), the likelihood of "not picked" when a share of k's copies went unpicked.
        With a share below 1 a background voxel read as k still costs something: at 1 a
        run whose every particle is picked in part teaches no background at all.
    Returns a flat dict: loss_cls, loss_offset (each already weighted) and loss (their sum).
    """
    logp = F.log_softmax(cls_logits.float(), dim=1)
    if unknown_bits is None:
        logp_t = logp.gather(1, labels[:, None]).squeeze(1)
    else:
        bits = torch.arange(logp.shape[1], device=logp.device)
        background = labels[:, None] == 0
        unknown = (((unknown_bits[:, None] >> bits) & 1) > 0) & background
        partly = (((unknown_bits[:, None] >> (bits + PARTLY_SHIFT)) & 1) > 0) & background
        allowed = unknown | partly | (labels[:, None] == bits)
        shifted = logp + torch.where(partly & ~unknown, math.log(unpicked_share), 0.0)
        logp_t = torch.logsumexp(shifted.masked_fill(~allowed, float("-inf")), dim=1)
    if label_weight is None:
        w = torch.where(labels == 0, background_weight, 1.0).to(logp.dtype)
    else:
        w = label_weight.to(device=logp.device, dtype=logp.dtype)[labels]
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


def distill_loss(cls_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                 classes: torch.Tensor | None = None) -> torch.Tensor:
    """Mean KL(teacher ‖ model) of the class probabilities over the voxels, [N, K+1] logits
    each. `classes`: the labels both distributions are taken over (renormalised), default
    all. (Read on background voxels alone it fine-tuned 4 tilt series to 0.826 out of fold
    against 0.847 on every voxel: docs/experiments.md, *Learning without forgetting*.)"""
    if len(cls_logits) == 0:
        return cls_logits.sum() * 0.0
    if classes is not None:
        cls_logits, teacher_logits = cls_logits[:, classes], teacher_logits[:, classes]
    logp = F.log_softmax(cls_logits.float(), dim=1)
    logq = F.log_softmax(teacher_logits.float(), dim=1)
    return (logq.exp() * (logq - logp)).sum(dim=1).mean()
