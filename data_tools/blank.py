"""Blank regions of a tomogram: where a reconstruction holds no data and was filled with one
value through its whole depth (the area outside the tilt series' footprint, filled with the
mean or with zeros, or an area a user masked out).

A blank region shifts what the sparsifier measures: the kept share is a share of every
voxel, so a fifth of the volume blank keeps a quarter more of the rest (the shipped default
picked 26 more false particles in one such run), and a fill far from the data's level puts a
strong edge at its border. The sparsifier fills a blank region with the data's median and
keeps its share of the voxels that hold data (data_tools/sparsify.py).
"""

from __future__ import annotations

import numpy as np

# Blank columns count when they cover this share of the (y, x) area and hold 3x3 blocks of
# blank columns: a footprint's fill does, a few chance ties never do.
MIN_BLANK_SHARE = 0.005


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
