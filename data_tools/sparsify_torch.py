"""The sparsifier's arithmetic in torch, on any device: on a GPU the tomogram goes up once
and only the kept voxels come back.

The same steps as data_tools/sparsify.py (robust normalisation, clip, Gaussian blurs with
scipy's `reflect` boundary and 3-sigma kernels, polarity, band-pass channels, top fraction,
per-tomogram standardisation), equal to it within float32 rounding (tests/test_sparsify_torch.py).
On this project's 2-core CPU scipy's filters are 5-8x faster than torch's, so the CPU keeps
scipy and this path serves accelerators.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch

from data_tools.features import (
    KEPT_MAD_MIN_SHARE,
    POLARITY_CLIP_SIGMA,
    FeatureOps,
    feature_volumes_with,
    robust_scale,
    shared_scale_source,
)
from data_tools.particles import DataError
from data_tools.sparsify import keep_share
from data_tools.spectrum import N_SHELLS, rfft_frequency, shell_gain, shell_of


def _median(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """numpy's median (the mean of the two middle values for an even count)."""
    return torch.quantile(x, 0.5, dim=dim)


def robust_normalise(vol: torch.Tensor, what: str, in_place: bool = False) -> torch.Tensor:
    """(v - median) / (1.4826 MAD) from the same strided subsample as sparsify.py;
    `in_place`: written over `vol`."""
    sample = vol[::2, ::3, ::3].reshape(-1)
    med = float(_median(sample))
    mad = robust_scale(float(_median((sample - med).abs())) * 1.4826, med,
                       lambda: float(vol.std(correction=0)), what)
    return vol.sub_(med).div_(mad) if in_place else (vol - med) / mad


def _reflect_index(n: int, r: int, device) -> torch.Tensor:
    """Indices of a length-n axis padded by r on each side, scipy's `reflect` (d c b a | a b
    c d | d c b a), for any r."""
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_filter(vol: torch.Tensor, sigma_vox: float, truncate: float = 3.0
                    ) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(vol, sigma_vox, truncate=truncate), axis by axis."""
    r = int(truncate * sigma_vox + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    kernel = (kernel / kernel.sum()).tolist()
    out = vol
    for ax in range(3):
        n = out.shape[ax]
        padded = out.index_select(ax, _reflect_index(n, r, vol.device))
        acc = padded.narrow(ax, 0, n) * kernel[0]
        for i in range(1, 2 * r + 1):
            acc.add_(padded.narrow(ax, i, n), alpha=kernel[i])
        out = acc
    return out


def whiten(vol: torch.Tensor, sigma_ref_vox: float) -> torch.Tensor:
    """data_tools.spectrum.whiten on the volume's device; only the shells' power crosses
    to the host."""
    spec = torch.fft.rfftn(vol)
    shell = shell_of(torch.from_numpy(rfft_frequency(tuple(vol.shape))).to(vol.device))
    power = torch.zeros(N_SHELLS + 1, dtype=torch.float64, device=vol.device).index_add_(
        0, shell.reshape(-1), (spec.real**2 + spec.imag**2).reshape(-1).double())
    counts = torch.bincount(shell.reshape(-1), minlength=N_SHELLS + 1)
    gain = shell_gain(power.cpu().numpy(), counts.cpu().numpy(), sigma_ref_vox)
    spec *= torch.from_numpy(gain.astype(np.float32)).to(vol.device)[shell]
    return torch.fft.irfftn(spec, s=tuple(vol.shape))


def binary_dilation(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """scipy.ndimage.binary_dilation with its default cross (6-neighbour) structure."""
    for _ in range(iterations):
        grown = mask.clone()
        for ax in range(3):
            n = mask.shape[ax]
            grown.narrow(ax, 1, n - 1).logical_or_(mask.narrow(ax, 0, n - 1))
            grown.narrow(ax, 0, n - 1).logical_or_(mask.narrow(ax, 1, n - 1))
        mask = grown
    return mask


def standardise_kept(feats: torch.Tensor, shared_bands: bool = False,
                     group_size: int | None = None) -> torch.Tensor:
    med = _median(feats, dim=0)
    mad = 1.4826 * _median((feats - med).abs(), dim=0)
    scale = torch.maximum(mad, KEPT_MAD_MIN_SHARE * feats.std(dim=0, correction=0))
    scale = torch.where(scale <= 1e-6, torch.ones_like(scale), scale)
    if shared_bands and len(scale) > 1:
        src = shared_scale_source(len(scale), group_size or len(scale))
        scale = scale[torch.from_numpy(src).to(scale.device)]
    return (feats - med) / scale


def band_features(x: torch.Tensor, clip: float, sign: float, cfg, voxel_size_A: float,
                  what: str) -> list[torch.Tensor]:
    """features.band_features on a tensor."""
    x = x.clamp(-clip, clip) * sign
    blurred = [gaussian_filter(x, s / voxel_size_A)
               for s in (cfg.select_sigma_A, *cfg.dog_sigmas_A)]
    feats = [x, blurred[0]] + [a - b for a, b in pairwise(blurred)]
    return [f if i == 0 else robust_normalise(f, what) for i, f in enumerate(feats)]


def _projection(x: torch.Tensor) -> np.ndarray:
    """features.clipped_projection on a tensor; the 2-D image is small enough to hand over."""
    return x.clamp(-POLARITY_CLIP_SIGMA, POLARITY_CLIP_SIGMA).mean(0).cpu().numpy()


TORCH_OPS = FeatureOps(robust_normalise, _projection, whiten, band_features,
                       lambda x, c: x.clamp_(-c, c))


def feature_volumes(vol: torch.Tensor, cfg, voxel_size_A: float, what: str
                    ) -> tuple[list[torch.Tensor], dict]:
    """features.feature_volumes on a tensor: ([features], polarity)."""
    return feature_volumes_with(TORCH_OPS, vol.float(), cfg, voxel_size_A, what)


def select(score: torch.Tensor, feats: list[torch.Tensor], cfg, what: str,
           voxel_size_A: float, data_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(coords [N,3] int32, features [N,C] float32) of the kept voxels, as numpy arrays."""
    share = keep_share(cfg, score.shape[0], voxel_size_A) * data_share
    thr = float(torch.quantile(score[::2, ::2, ::2].reshape(-1).double(), 1.0 - share))
    mask = score > thr
    if cfg.dilate_vox > 0:
        mask = binary_dilation(mask, cfg.dilate_vox)
    coords = torch.nonzero(mask)
    if len(coords) == 0:
        raise DataError(f"{what}: empty sparse set (threshold {thr:.3g} keeps no voxel)")
    idx = tuple(coords.T)
    f = torch.stack([v[idx].float() for v in feats], dim=1)
    if cfg.feature_norm != "volume":
        f = standardise_kept(f, shared_bands=cfg.feature_norm == "kept_bands",
                             group_size=cfg.channel_group_size)
    return (coords.to(torch.int32).cpu().numpy(),
            np.ascontiguousarray(f.float().cpu().numpy()))
