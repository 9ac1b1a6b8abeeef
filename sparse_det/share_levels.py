"""Training at several kept shares (train.keep_share_range).

A network trained on the top 2.5 % of voxels reads a tomogram kept at another share worse
(4 %: -0.015 ± 0.008 on the tuning runs), although a larger share is what proposes the
small particles of a noisy tomogram at all (docs/experiments.md, *Where the held-out
families lose their particles*). So each training run is sparsified once at the largest
share with its features left unstandardised, and every crop reads it at one of
N_LEVELS shares: the voxels the selection score ranks within that share, standardised over
the run's kept set at that share. Median and MAD are affine-equivariant, so this is exactly
what sparsifying the run at that share gives (up to the sampled quantile sparsify
thresholds at), without filtering the tomogram again for each share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data_tools.features import kept_affine
from data_tools.sparsify import keep_share, selection_score
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.structures import SparseVolume

N_LEVELS = 8  # shares drawn from, spaced geometrically over the range


@dataclass
class ShareLevels:
    """One run's kept voxels at N_LEVELS shares: level l keeps the voxels with
    rank < counts[l] and standardises them with (centre[l], scale[l])."""

    shares: np.ndarray  # [L] keep_fraction of each level
    rank: np.ndarray  # [N] int32, 0 = the voxel the selection score ranks first
    counts: np.ndarray  # [L] voxels kept at each level
    centre: np.ndarray  # [L,C] float32
    scale: np.ndarray  # [L,C] float32

    def read(self, raw_feats: np.ndarray, inside: np.ndarray, level: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """(mask of `inside` voxels kept at `level`, their standardised features)."""
        kept = inside & (self.rank < self.counts[level])
        return kept, (raw_feats[kept] - self.centre[level]) / self.scale[level]


def wide_config(cfg: SparsifyConfig, share_range: tuple[float, float]) -> SparsifyConfig:
    """What the training runs are sparsified with: the largest share, unstandardised."""
    return replace(cfg, keep_fraction=float(max(share_range)), feature_norm="volume")


def wide_shards_dir(shards_dir: str | Path, share_range: tuple[float, float]) -> Path:
    """Their shards live apart: a shard is rewritten when its config differs."""
    return Path(shards_dir) / f"wide_keep{max(share_range):g}"


def share_levels(sv: SparseVolume, cfg: SparsifyConfig, share_range: tuple[float, float],
                 n_levels: int = N_LEVELS) -> ShareLevels:
    """The levels of `sv`, sparsified with wide_config(cfg, share_range); `cfg` is the
    config the network reads (its feature_norm standardises each level)."""
    if sv.config.get("feature_norm") != "volume":
        raise ValueError(f"run {sv.run!r}: share levels need unstandardised features "
                         f"(feature_norm 'volume'), got {sv.config.get('feature_norm')!r}")
    lo, hi = share_range
    # The score sparsify ranked them by, from their unstandardised features.
    score = selection_score(sv.feats[:, 1].astype(np.float64), sv.feats[:, 2], cfg)
    order = np.argsort(-score, kind="stable")
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    depth, n_voxels = sv.shape_zyx[0], int(np.prod(sv.shape_zyx))
    shares = np.geomspace(lo, hi, n_levels) if hi > lo else np.array([hi])
    counts, centres, scales = [], [], []
    for i, s in enumerate(shares):
        share = keep_share(replace(cfg, keep_fraction=float(s)), depth, sv.voxel_size_A)
        # The largest level is the whole wide set; below it, the share of the tomogram.
        n = (len(order) if i == len(shares) - 1
             else max(1, min(len(order), round(n_voxels * share))))
        c, k = kept_affine(sv.feats[order[:n]], shared_bands=cfg.feature_norm == "kept_bands",
                           group_size=cfg.channel_group_size)
        counts.append(n)
        centres.append(c)
        scales.append(k)
    return ShareLevels(shares, rank, np.asarray(counts), np.stack(centres), np.stack(scales))
