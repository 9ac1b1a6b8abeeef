"""A tomogram's feature volumes, the sparsifier's arithmetic before it keeps any voxel:
robust normalisation, the polarity decided from the beam projection, spectral whitening,
the band-pass channels ([intensity, smooth, bands...], protein positive, unit robust scale),
and the kept voxels' per-tomogram standardisation. numpy and scipy here; the same
arithmetic in torch is data_tools/sparsify_torch.py, through FeatureOps, so that the two
backends share one orchestration. Which voxels are kept is data_tools/sparsify.py's."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from data_tools.particles import DataError
from data_tools.spectrum import whiten

if TYPE_CHECKING:  # a type only: sparsify imports this module
    from data_tools.sparsify_config import SparsifyConfig

log = logging.getLogger(__name__)

# A channel's robust sigma over the kept voxels may collapse where most of them sit at the
# clip (the intensity channel of a high-contrast tomogram): then its standard deviation,
# and never less than this share of it, is the scale.
KEPT_MAD_MIN_SHARE = 0.25
# Auto polarity reads the tomogram's projection along the beam (z), band-passed at a
# particle's scale (Gaussians of these σ, Å): protein, gold and membranes are its dense, dark
# tail. The projection is the central section kz = 0 that every tilt measures, so the
# missing wedge's bright lobes, which in 3-D can outweigh the dark cores (3 of 73 simulated
# runs were read inverted from the skewness of a 3-D 60 Å blur: gold's wedge streaks, CTF
# fringes in crowded ice), are not in it.
POLARITY_BAND_A = (60.0, 240.0)
# |skewness| below this is too weak to call: the tomogram is taken as dark (the field's
# convention) with a warning. Measured on 73 simulated full-size runs (fast and tilt-series
# physics, crowded, SNR 0.22-2.5, all dark): -0.25 to -17.4; the all-shifted runs, near-pure
# noise at this scale, -0.25 to -0.61; the next weakest -1.03 (bright copies: the same
# numbers, positive). Pure noise (6 draws, 92x315x315) gives -0.11 to +0.05.
POLARITY_MIN_SKEW = 0.15
# The polarity rule reads the projection of the tomogram clipped here, whatever the features'
# clip: its threshold was measured so.
POLARITY_CLIP_SIGMA = 6.0
# Voxels further than this many robust sigmas from the median are clipped there before the
# statistics of the whole volume that one wild voxel could own: the shading fit's column
# means and the whitening's spectrum. The simulated held-out runs reach 225 (gold) and are
# untouched; two voxels at 1e6 sigma (hot pixels, a writer's overflow) had changed 85 % of
# the voxels a full-size run keeps.
GUARD_SIGMA = 300.0
# A spread under this share of the median is float32 rounding about one value, not contrast.
CONSTANT_SHARE = 1e-6


def robust_scale(mad: float, med: float, std, what: str) -> float:
    """The MAD, or where it is none (a volume mostly of one value) the standard deviation
    `std()`; an error where that is none either. Relative to the median only: a tomogram in
    units of 1e-20 has as much contrast as one in units of 1."""
    if np.isfinite(mad) and mad > CONSTANT_SHARE * abs(med):
        return mad
    sd = std()
    if not sd > CONSTANT_SHARE * abs(med):
        raise DataError(f"{what}: tomogram is constant (no contrast to threshold)")
    return sd


def sample_median_mad(vol: np.ndarray) -> tuple[float, float]:
    """The median and 1.4826 MAD of a strided subsample (every 2nd section, 3rd row and
    column): a robust level and sigma of the whole volume at a 1/18 of the work."""
    sample = vol[::2, ::3, ::3].ravel()
    med = float(np.median(sample))
    return med, float(np.median(np.abs(sample - med))) * 1.4826


def guard_bounds(vol: np.ndarray) -> tuple[float, float]:
    """(low, high): the median ∓ GUARD_SIGMA robust sigmas; unbounded where the volume has
    no spread there."""
    med, mad = sample_median_mad(vol)
    if not (np.isfinite(mad) and mad > 0):
        return -np.inf, np.inf
    return med - GUARD_SIGMA * mad, med + GUARD_SIGMA * mad


def robust_normalise(vol: np.ndarray, what: str, *, in_place: bool = False) -> np.ndarray:
    """(v - median) / (1.4826 MAD), from a strided subsample: scale and offset free.
    `in_place` (a float32 volume): overwrites `vol` instead of allocating another."""
    med, mad = sample_median_mad(vol)
    mad = robust_scale(mad, med, lambda: float(vol.std()), what)
    if vol.dtype == np.float32:
        # The same float32 arithmetic either way; a copy only where the caller keeps `vol`.
        out = np.subtract(vol, np.float32(med), out=vol if in_place else None)
        out /= np.float32(mad)
        return out
    return ((vol - np.float32(med)) / np.float32(mad)).astype(np.float32)


def skewness(vol: np.ndarray) -> float:
    """Third moment of the robustly normalised values (clipped at ±6)."""
    y = np.asarray(vol, dtype=np.float64).ravel()
    med = np.median(y)
    mad = 1.4826 * np.median(np.abs(y - med))
    if not mad > 0:
        return 0.0
    return float(np.mean(np.clip((y - med) / mad, -6.0, 6.0) ** 3))


def projection_skewness(projection_yx: np.ndarray, voxel_size_A: float) -> float:
    """Skewness of the beam projection (the normalised tomogram's mean over z), band-passed
    between POLARITY_BAND_A: negative where protein is dark."""
    from scipy import ndimage

    img = np.asarray(projection_yx, dtype=np.float64)
    fine, coarse = (ndimage.gaussian_filter(img, s / voxel_size_A, truncate=3.0)
                    for s in POLARITY_BAND_A)
    return skewness(fine - coarse)


def decide_polarity(setting: str, projection_yx, voxel_size_A: float, what: str
                    ) -> tuple[str, dict]:
    """"dark" or "bright" for a tomogram: as set, or from projection_skewness (protein is
    the heavy tail). Returns it with what it was decided on. `projection_yx`: the
    normalised, clipped tomogram's mean over z (numpy; a device computes it and hands over
    the small image)."""
    if setting != "auto":
        return setting, {"polarity": setting, "polarity_by": "setting"}
    skew = projection_skewness(projection_yx, voxel_size_A)
    polarity = "bright" if skew > POLARITY_MIN_SKEW else "dark"
    info = {"polarity": polarity, "polarity_by": "auto", "polarity_skew": round(skew, 4)}
    if abs(skew) <= POLARITY_MIN_SKEW:
        info["polarity_by"] = "auto (uncertain)"
        log.warning("%s: polarity uncertain (skewness %.3f of the z projection); taking "
                    "protein as dark. Pass --polarity dark|bright to choose.", what, skew)
    return polarity, info


def clipped_projection(x: np.ndarray) -> np.ndarray:
    """Mean over z of the normalised tomogram clipped at POLARITY_CLIP_SIGMA, a slice at a
    time (no clipped copy of the volume)."""
    acc = np.zeros(x.shape[1:], np.float64)
    buf = np.empty(x.shape[1:], x.dtype)
    for sl in x:
        acc += np.clip(sl, -POLARITY_CLIP_SIGMA, POLARITY_CLIP_SIGMA, out=buf)
    return (acc / max(len(x), 1)).astype(np.float32)


@dataclass(frozen=True)
class FeatureOps:
    """The array operations feature_volumes needs, for one backend: numpy and scipy here
    (numpy_ops), torch on any device in data_tools/sparsify_torch.py (TORCH_OPS). The
    orchestration exists once, so the two backends cannot drift apart."""

    # (volume, what, in_place=False) -> robustly normalised volume (in_place: over `volume`)
    normalise: Callable
    projection: Callable  # normalised volume -> its clipped mean over z (numpy, 2-D)
    whiten: Callable  # (volume, reference sigma in voxels) -> whitened volume
    bands: Callable  # (volume, clip, sign, cfg, voxel_size_A, what) -> [feature volumes]
    clip: Callable  # (volume, c) -> the volume clipped to ±c in place


def numpy_ops(threads: int | None = None) -> FeatureOps:
    return FeatureOps(
        robust_normalise, clipped_projection,
        # scipy.fft's workers=None is one thread; `threads` None means every core here.
        lambda v, sigma_vox: whiten(v, sigma_vox, threads or -1),
        lambda x, clip, sign, cfg, vs, what: band_features(x, clip, sign, cfg, vs, what,
                                                           threads),
        lambda x, c: np.clip(x, -c, c, out=x))


def feature_volumes_with(ops: FeatureOps, vol, cfg: SparsifyConfig, voxel_size_A: float,
                         what: str, own: bool = False) -> tuple[list, dict]:
    """Returns ([feature volumes], polarity info) for a tomogram, in the backend's arrays;
    features have protein positive. `own`: the caller hands `vol` over; it becomes the
    first feature volume, whitened or not (with raw_channels, the first of the raw five)."""
    x = ops.normalise(vol, what, in_place=own)
    projection = ops.projection(x) if cfg.polarity == "auto" else None
    polarity, info = decide_polarity(cfg.polarity, projection, voxel_size_A, what)
    sign = -1.0 if polarity == "dark" else 1.0
    second = None  # (volume, clip) of the group after the one that ranks the voxels
    if cfg.whiten_sigma_A > 0:
        # Every later use of x clips it closer, so only the spectrum sees the guard.
        x = ops.clip(x, GUARD_SIGMA)
        white = ops.normalise(ops.whiten(x, cfg.whiten_sigma_A / voxel_size_A), what,
                              in_place=True)  # a new volume: whiten's own
        if cfg.whitened_channels:
            second = (white, cfg.whiten_clip_sigma)
        else:
            second = (x, cfg.raw_clip_sigma) if cfg.raw_channels else None
            if own and second is None:
                # The caller's frames still hold the volume handed over: written over, it
                # is the one full volume here where it was one of two while the bands are
                # made (0.54 GB of a cellular tomogram's peak).
                x[...] = white
                del white
            else:
                x = white
    feats = ops.bands(x, cfg.clip_sigma, sign, cfg, voxel_size_A, what)
    if second is not None:
        feats += ops.bands(*second, sign, cfg, voxel_size_A, what)
    return feats, info


def feature_volumes(vol: np.ndarray, cfg: SparsifyConfig, voxel_size_A: float,
                    what: str, threads: int | None = None, own: bool = False
                    ) -> tuple[list[np.ndarray], dict]:
    """feature_volumes_with numpy and scipy on the CPU (`threads` filter threads)."""
    return feature_volumes_with(numpy_ops(threads), vol, cfg, voxel_size_A, what, own)


def band_features(x: np.ndarray, clip: float, sign: float, cfg: SparsifyConfig,
                  voxel_size_A: float, what: str, threads: int | None) -> list[np.ndarray]:
    """[intensity, smooth, bands...] of a normalised volume (overwritten: clipped, times
    `sign` so protein is positive); every channel but the intensity to unit robust scale."""
    from scipy import ndimage  # here, not at the top: command lines start faster

    np.clip(x, -clip, clip, out=x)
    if sign < 0:
        np.negative(x, out=x)
    sigmas = [cfg.select_sigma_A, *cfg.dog_sigmas_A]
    # The filters are independent and scipy releases the GIL inside them: run them at once,
    # the widest (the slowest) first, so that fewer threads than filters end together: two
    # threads took the four of 367x630x630 voxels in 5.6 s, not 6.3 (1.96-3.73 s each).
    with ThreadPoolExecutor(max_workers=min(len(sigmas), threads or os.cpu_count() or 1)) as pool:
        made = {s: pool.submit(ndimage.gaussian_filter, x, s / voxel_size_A, truncate=3.0)
                for s in sorted(sigmas, reverse=True)}
        blurred = [made[s].result() for s in sigmas]
    # Each band overwrites the coarser blur it no longer needs (finest band last), so a full
    # tomogram costs six float32 volumes here, not fifteen: the CPU's peak memory.
    for fine, coarse in reversed(list(pairwise(blurred))):
        np.subtract(fine, coarse, out=coarse)
    feats = [x, *blurred]
    # Each channel to unit robust scale, so the network sees the same ranges on any data.
    for f in feats[1:]:
        robust_normalise(f, what, in_place=True)
    return feats


def shared_scale_source(n_channels: int, group_size: int) -> np.ndarray:
    """For "kept_bands": the channel whose scale each channel takes. Channels come in groups
    of `group_size` ([intensity, smooth, bands...], the usual then the whitened); within a
    group the smooth and band channels share the smooth one's, so their ratios survive, and
    the two groups keep their own (whitening changes the bands' ratios by design)."""
    i = np.arange(n_channels)
    pos = i % max(group_size, 1)
    return np.where(pos == 0, i, i - pos + 1)


def kept_affine(feats: np.ndarray, shared_bands: bool = False,
                group_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(centre [C], scale [C]) that standardise_kept applies to these kept voxels."""
    med = np.median(feats, axis=0)
    mad = 1.4826 * np.median(np.abs(feats - med), axis=0)
    std = feats.std(axis=0)
    scale = np.maximum(mad, KEPT_MAD_MIN_SHARE * std)
    scale[scale <= 1e-6] = 1.0
    if shared_bands and len(scale) > 1:
        scale = scale[shared_scale_source(len(scale), group_size or len(scale))]
    return med.astype(np.float32), scale.astype(np.float32)


def standardise_kept(feats: np.ndarray, shared_bands: bool = False,
                     group_size: int | None = None) -> np.ndarray:
    """Each channel to median 0 and unit robust sigma over the kept voxels (the scale is at
    least KEPT_MAD_MIN_SHARE of the channel's standard deviation, and 1 for a constant one).
    `shared_bands`: within each group of `group_size` channels (default: all), channels
    1.. (smooth, band-passes) take channel 1's scale (shared_scale_source)."""
    med, scale = kept_affine(feats, shared_bands, group_size)
    return ((feats - med) / scale).astype(np.float32)
