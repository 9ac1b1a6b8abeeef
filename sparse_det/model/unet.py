"""Sparse 3-D U-Net (spconv): per-voxel class logits and offsets to the particle centre."""

from __future__ import annotations

import re

import torch
from torch import nn

from sparse_det.model import spconv_compat as sc
from sparse_det.structures import SparseBatch


class ResBlock(nn.Module):
    """Two submanifold 3x3x3 convs with a residual (OpenPCDet's SparseBasicBlock)."""

    def __init__(self, channels: int, key: str, algo):
        super().__init__()
        self.conv1 = sc.subm(channels, channels, key, algo)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = sc.subm(channels, channels, key, algo)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x):
        y = self.conv1(x)
        y = y.replace_feature(torch.relu(self.bn1(y.features)))
        y = self.conv2(y)
        return y.replace_feature(torch.relu(self.bn2(y.features) + x.features))


def _bn_relu(x, bn: nn.BatchNorm1d):
    return x.replace_feature(torch.relu(bn(x.features)))


class SparseUNet(nn.Module):
    """Args:
        in_channels: features per voxel (the sparsifier's channels).
        num_classes: K particle classes; the class head has K+1 outputs (0 = background).
        channels: width per level; level i > 0 is reached by a stride-2 sparse conv.
        algo: spconv algorithm (Native on the CPU), see spconv_compat.algo_for.
    """

    def __init__(self, *, in_channels: int, num_classes: int, channels=(16, 32, 64, 64),
                 blocks_per_level: int = 1, algo=None):
        super().__init__()
        self.num_classes = num_classes
        c = list(channels)
        self.stem = sc.subm(in_channels, c[0], "subm0", algo)
        self.stem_bn = nn.BatchNorm1d(c[0])
        self.enc = nn.ModuleList([nn.Sequential(*[ResBlock(c[0], "subm0", algo)
                                                  for _ in range(blocks_per_level)])])
        self.downs, self.down_bns = nn.ModuleList(), nn.ModuleList()
        for i in range(1, len(c)):
            self.downs.append(sc.down(c[i - 1], c[i], f"down{i}", algo))
            self.down_bns.append(nn.BatchNorm1d(c[i]))
            self.enc.append(nn.Sequential(*[ResBlock(c[i], f"subm{i}", algo)
                                            for _ in range(blocks_per_level)]))
        self.ups, self.up_bns, self.fuse, self.fuse_bns, self.dec = (
            nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList())
        for i in range(len(c) - 1, 0, -1):
            self.ups.append(sc.up(c[i], c[i - 1], f"down{i}", algo))
            self.up_bns.append(nn.BatchNorm1d(c[i - 1]))
            self.fuse.append(sc.subm(2 * c[i - 1], c[i - 1], f"subm{i - 1}", algo, k=1))
            self.fuse_bns.append(nn.BatchNorm1d(c[i - 1]))
            self.dec.append(ResBlock(c[i - 1], f"subm{i - 1}", algo))
        self.cls_head = nn.Sequential(nn.Linear(c[0], c[0]), nn.ReLU(),
                                      nn.Linear(c[0], num_classes + 1))
        self.offset_head = nn.Sequential(nn.Linear(c[0], c[0]), nn.ReLU(), nn.Linear(c[0], 3))

    def forward(self, batch: SparseBatch) -> dict[str, torch.Tensor]:
        """Returns cls_logits [N, K+1] and offsets [N, 3] (z,y,x voxels to the centre), in the
        order of batch.coords_bzyx."""
        # Each stride-2 conv floors the grid: an axis under 2^levels cells would reach
        # none at the coarsest level. The cells added hold no voxel, so nothing else moves.
        least = 2 ** len(self.downs)
        shape_zyx = [max(int(n), least) for n in batch.spatial_shape_zyx]
        x = sc.sparse_tensor(batch.feats, batch.coords_bzyx, shape_zyx, batch.batch_size)
        x = _bn_relu(self.stem(x), self.stem_bn)
        skips = [self.enc[0](x)]
        for i, (dn, bn) in enumerate(zip(self.downs, self.down_bns, strict=True), start=1):
            skips.append(self.enc[i](_bn_relu(dn(skips[-1]), bn)))
        x = skips.pop()
        for up, ubn, fuse, fbn, dec in zip(self.ups, self.up_bns, self.fuse, self.fuse_bns,
                                           self.dec, strict=True):
            x = _bn_relu(up(x), ubn)
            skip = skips.pop()
            x = skip.replace_feature(torch.cat([x.features, skip.features], dim=1))
            x = dec(_bn_relu(fuse(x), fbn))
        f = x.features
        return {"cls_logits": self.cls_head(f), "offsets": self.offset_head(f)}


def build_model(*, in_channels: int, num_classes: int, channels, blocks_per_level: int,
                device: torch.device | str) -> SparseUNet:
    model = SparseUNet(in_channels=in_channels, num_classes=num_classes, channels=channels,
                       blocks_per_level=blocks_per_level, algo=sc.algo_for(device))
    return model.to(device)


_ENC_BLOCK = re.compile(r"enc\.(\d+)\.(\d+)\.")


def widen_input(state: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """`state` with its stem taking `in_channels` features instead of fewer: the new
    channels' weights are zero, so the widened network computes exactly what the old one did
    on the old channels and learns what the new ones add."""
    w = state["stem.weight"]  # [out, kz, ky, kx, in]
    if w.shape[-1] > in_channels:
        raise ValueError(f"the state reads {w.shape[-1]} features, more than {in_channels}")
    pad = w.new_zeros((*w.shape[:-1], in_channels - w.shape[-1]))
    return state | {"stem.weight": torch.cat([w, pad], dim=-1)}


CLASS_HEAD = "cls_head.2"  # the last layer of the class head: row 0 background, k class k


def remap_classes(state: dict[str, torch.Tensor], from_names: list[str],
                  to_names: list[str]) -> dict[str, torch.Tensor]:
    """`state`'s class head re-ordered from the particle classes `from_names` to `to_names`,
    by name: a class in both keeps its row wherever it stands, one only `from_names` has is
    dropped, and one new to the state starts with zero weights and the lowest bias of the
    classes it had, so that it fires nowhere until training shows it where (its gradient
    flows at once: zero weights are not a dead unit under a softmax)."""
    w, b = state[f"{CLASS_HEAD}.weight"], state[f"{CLASS_HEAD}.bias"]
    if w.shape[0] != len(from_names) + 1:
        raise ValueError(f"the class head has {w.shape[0] - 1} classes, not the "
                         f"{len(from_names)} named")
    rows_w, rows_b = [w[0]], [b[0]]
    floor = b[1:].min() if len(from_names) else b[0]
    for name in to_names:
        if name in from_names:
            i = from_names.index(name) + 1
            rows_w.append(w[i])
            rows_b.append(b[i])
        else:
            rows_w.append(torch.zeros_like(w[0]))
            rows_b.append(floor.clone())
    return state | {f"{CLASS_HEAD}.weight": torch.stack(rows_w),
                    f"{CLASS_HEAD}.bias": torch.stack(rows_b)}


def load_deepened(model: SparseUNet, state: dict[str, torch.Tensor]) -> list[int]:
    """Loads `state`, the weights of a model with fewer encoder blocks per level, into
    `model`; each block the state lacks starts as the identity (its last BatchNorm's scale
    and shift zero, so the residual adds nothing and the block passes its non-negative
    input through its ReLU unchanged). The grown network computes exactly what the old one
    did and training starts from there, not from scratch (Net2Net's deepening). Returns
    the indices of the levels that grew; raises ValueError if `state` does not fit apart
    from whole missing encoder blocks."""
    own = model.state_dict()
    extra = sorted(set(state) - set(own))
    if extra:
        raise ValueError(f"weights the model does not have: {extra[:5]}")
    missing = sorted(set(own) - set(state))
    grown: set[tuple[int, int]] = set()
    for key in missing:
        m = _ENC_BLOCK.match(key)
        if m is None or int(m.group(2)) == 0:
            raise ValueError(f"weight missing from the state: {key}")
        grown.add((int(m.group(1)), int(m.group(2))))
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)}, the model has "
                             f"{tuple(own[key].shape)}")
    merged = {k: state.get(k, v) for k, v in own.items()}
    for level, block in grown:
        for name in ("weight", "bias"):
            key = f"enc.{level}.{block}.bn2.{name}"
            merged[key] = torch.zeros_like(own[key])
    model.load_state_dict(merged)
    return sorted({level for level, _ in grown})
