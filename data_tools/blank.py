"""Blank regions of a tomogram: where a reconstruction holds no data and was filled with one
value through its whole depth (the area outside the tilt series' footprint, filled with the
mean or with zeros, or an area a user masked out).

A blank region shifts what the sparsifier measures: the kept share is a share of every
voxel, so a fifth of the volume blank keeps a quarter more of the rest (the shipped default
picked 26 more false particles in one such run), and a fill far from the data's level puts a
strong edge at its border. The sparsifier fills a blank region with the data's median and
keeps its share of the voxels that hold data (data_tools/sparsify.py).

Shading is taken out here too (flattened): a ramp or a bowl of uneven ice or illumination
across the field, fitted by a quadratic surface where the field is micrometres wide.
"""

from __future__ import annotations

import numpy as np

from data_tools.features import guard_bounds
from data_tools.particles import DataError

# Blank columns count when they cover this share of the (y, x) area and hold 3x3 blocks of
# blank columns: a footprint's fill does, a few chance ties never do.
MIN_BLANK_SHARE = 0.005

# Shading is a variation over micrometres. On a narrower field a quadratic surface is fitted
# to particle-scale structure as much as to shading: on a 1,920 Å simulated run it moved the
# picks (F4 0.954 -> 0.933); on the 44 held-out runs (6,300 Å) it changed nothing (-0.001 ±
# 0.001 run by run) while taking out the ramps.
FLATTEN_MIN_FIELD_A = 4000.0
# z sections whose clipped copy the shading fit adds up at once (as the sparsifier's
# SCORE_SLAB): a clipped copy of the whole volume was another volume at its peak.
SHADING_SLAB = 16


def _seed_values(vol: np.ndarray) -> set[float]:
    """The values at the 8 corners and the 6 face centres: a fill reaches a side."""
    z, y, x = (n - 1 for n in vol.shape)
    points = [(a, b, c) for a in (0, z) for b in (0, y) for c in (0, x)]
    points += [(z // 2, y // 2, 0), (z // 2, y // 2, x), (z // 2, 0, x // 2),
               (z // 2, y, x // 2), (0, y // 2, x // 2), (z, y // 2, x // 2)]
    return {float(vol[p]) for p in points}


def blank_mask(vol: np.ndarray, min_share: float = MIN_BLANK_SHARE) -> np.ndarray | None:
    """The voxels of (y, x) columns that hold one value through the whole depth, in regions
    of 3x3 such columns covering at least `min_share` of the area; None where there are
    none. Whole columns, because a reconstruction's footprint is an area: a vacuum layer
    above or below the ice, however quantised, is crossed by every column's ice and so
    never counts."""
    from scipy import ndimage

    if min(vol.shape[1:]) < 3:
        return None
    area = None
    block = np.ones((3, 3), bool)
    sample = vol[::3, ::3, ::3]
    for value in _seed_values(vol):
        v = np.asarray(value, vol.dtype)
        if np.count_nonzero(sample == v) < 0.5 * min_share * sample.size:
            continue  # most volumes: one look at a sample
        same = np.all(vol == v, axis=0)
        core = ndimage.binary_erosion(same, block)
        if core.sum() < min_share * same.size:
            continue
        region = same & ndimage.binary_dilation(core, block)
        area = region if area is None else area | region
    if area is None:
        return None
    return np.repeat(area[None], vol.shape[0], axis=0)


def filled(vol: np.ndarray, blank: np.ndarray, in_place: bool = False) -> np.ndarray:
    """A copy of `vol` with its blank voxels at the median of the others; `in_place` (a
    float32 volume): `vol` itself, so changed."""
    data = vol[~blank]
    median = np.median(data[:: max(1, data.size // 1_000_000)])
    out = vol if in_place else np.array(vol, dtype=np.float32)
    out[blank] = median
    return out


def without_blank(vol: np.ndarray, what: str, flatten: bool = False, voxel_size_A: float = 0.0,
                  in_place: bool = False) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(the volume with its blank areas at the data's median, the blank mask or None, what
    the SparseVolume records): blank_mask and filled; `flatten`: and less its shading
    (flattened) where its field is at least FLATTEN_MIN_FIELD_A wide. What every reader of
    a run's feature volumes starts from, so that the rescorer's channels are the
    sparsifier's. `in_place`: `vol` may be changed (where it is a writable float32 volume,
    it is, and returned) instead of copied."""
    blank = blank_mask(vol)
    if blank is not None and blank.all():
        raise DataError(f"{what}: tomogram is constant (no contrast to threshold)")
    in_place = in_place and vol.dtype == np.float32 and vol.flags.writeable
    if flatten and min(vol.shape[1:]) * voxel_size_A >= FLATTEN_MIN_FIELD_A:
        vol = flattened(vol, blank, in_place)
        in_place = True  # a copy now, if it was not before
    if blank is None:
        return vol, None, {}
    return (filled(vol, blank, in_place), blank,
            {"blank_share": round(float(blank.mean()), 4)})


def flattened(vol: np.ndarray, blank: np.ndarray | None = None, in_place: bool = False
              ) -> np.ndarray:
    """`vol` less a quadratic surface in (y, x) least-squares fitted to its mean over z
    (blank columns left out of the fit, voxels beyond the guard clipped to it): the shading
    of uneven ice or illumination, a ramp or a bowl across the field, without touching
    anything of a particle's size.
    `in_place` (a float32 volume): written over `vol` instead of a new volume."""
    low, high = guard_bounds(vol)
    proj = np.zeros(vol.shape[1:], np.float64)
    for z0 in range(0, vol.shape[0], SHADING_SLAB):  # a slab's clipped copy at a time
        slab = np.asarray(vol[z0:z0 + SHADING_SLAB], dtype=np.float32)
        proj += np.clip(slab, low, high).sum(axis=0, dtype=np.float64)
    proj /= vol.shape[0]
    y, x = np.meshgrid(np.linspace(-1, 1, proj.shape[0]), np.linspace(-1, 1, proj.shape[1]),
                       indexing="ij")
    basis = np.stack([np.ones_like(y), y, x, y * y, x * x, x * y], axis=-1)
    used = np.ones(proj.shape, bool) if blank is None else ~blank.all(axis=0)
    coef = np.linalg.lstsq(basis[used], proj[used], rcond=None)[0]
    coef[0] = 0.0  # the level stays: only the shading goes
    return np.subtract(np.asarray(vol, dtype=np.float32), (basis @ coef).astype(np.float32)[None],
                       out=vol if in_place else None)
