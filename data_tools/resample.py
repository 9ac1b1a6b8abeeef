"""Resampling a tomogram's level onto the working grid in physical coordinates, a slab of
output sections at a time: anti-aliased by a Gaussian, then linear along each axis, each
slab reading only the source sections it needs (the Gaussian's reach included), so memory
is the working grid's and the result equals resampling the whole volume at once. Also the
memory such a read holds, for the peak estimates that size Ray's tasks."""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_tools import zarr_levels
from data_tools.particles import DataError
from data_tools.zarr_levels import Level, capped_threads, slab_sections


def resample(vol: np.ndarray, voxel_A: float, origin_A: float, working_A: float,
             threads: int | None = None) -> tuple[np.ndarray, float]:
    """`vol` (voxel size voxel_A, voxel 0 centred at origin_A) on a grid of working_A voxels
    covering the same physical extent from the same edge. Shrinking is anti-aliased with a
    Gaussian of σ = (ratio − 1) / 2 source voxels. Returns (volume, its origin in Å)."""
    vol = np.asarray(vol, dtype=np.float32)
    level = Level(path=Path("<memory>"), where=Path("<memory>"), run="", voxel_size_A=voxel_A,
                  origin_A=origin_A, shape_zyx=vol.shape, array=vol)
    return resample_level(level, 1, working_A, check_finite=False, threads=threads)


def _axis_weights(n: int, voxel_A: float, origin_A: float, working_A: float, new_origin: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(i0, f): each working-grid voxel along one axis sits at source index i0 + f."""
    n_out = max(1, math.floor(n * voxel_A / working_A + 1e-6))
    pos = (new_origin + np.arange(n_out) * working_A - origin_A) / voxel_A
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, max(n - 2, 0))
    return i0, np.clip(pos - i0, 0.0, 1.0).astype(np.float32)


# Slabs resampled at once: scipy's filter and numpy's products release the GIL, and two
# threads took the 272×934×934 level at 13.48 Å from 8.1-9.9 s to 5.5-6.1 s, the same volume.
RESAMPLE_THREADS = 2
# Binned-slab-sized arrays a resampling thread holds at once besides a binned level's slab
# as read: the binned slab, its filtered copy and the products of interpolating along z.
# An upper line through the read peaks measured at 7.84 and 13.48 Å, in z-chunks of 64 and
# 256 sections (bench/read_peak.json).
RESAMPLE_COPIES = 3


def decoding_bytes(shape_zyx: tuple[int, ...], chunks_zyx: tuple[int, ...], sections: int,
                    rows: int) -> int:
    """What zarr holds while one read of `sections` × `rows` source voxels (full width) of
    a level in `chunks_zyx` decodes: the chunks it touches, up to zarr's async.concurrency
    at once (a 256³ float32 chunk is 64 MB), each decoded whole however little of it the
    read wants; 0 where the chunks are not known (or the level is in memory)."""
    if len(chunks_zyx) != 3:
        return 0
    import zarr

    in_flight = int(zarr.config.get("async.concurrency") or 10)
    cz, cy, cx = chunks_zyx
    # rows start at a chunk's edge; sections that are not whole chunks may straddle one more
    touched = ((math.ceil(sections / cz) + (sections % cz > 0))
               * math.ceil(rows / cy) * math.ceil(shape_zyx[2] / cx))
    return min(in_flight, touched) * 4 * cz * cy * cx


def resampling_bytes(shape_zyx: tuple[int, ...], chunks_zyx: tuple[int, ...],
                      voxel_A: float, working_A: float) -> int:
    """resample_level's slabs in hand at once, from a level of `shape_zyx` (unbinned), each
    with RESAMPLE_COPIES copies (no more than the level and the slabs' overlaps), the
    chunk rows _ChunkRows holds for them, and what zarr decodes for each thread's read (a
    chunk row, or a slab)."""
    ratio = working_A / voxel_A
    cached = _rows_fit(shape_zyx, chunks_zyx)
    slab = slab_sections(shape_zyx, chunks_zyx[0] if chunks_zyx else 0)
    step = _resample_step(zarr_levels.SLAB_SECTIONS if cached else slab, ratio)
    margin = 2 + 2 * _reach(ratio)
    threads = min(resample_threads(),
                  math.ceil(max(1, math.floor(shape_zyx[0] / ratio)) / step))
    sections = min(threads * (step * ratio + margin), shape_zyx[0] + threads * margin)
    held = sections * 4 * math.prod(shape_zyx[1:]) * RESAMPLE_COPIES
    if cached:  # the rows the slabs in hand span, and one more being read
        rows = math.ceil(sections / chunks_zyx[0]) + 1
        held += min(rows * chunks_zyx[0], shape_zyx[0]) * 4 * math.prod(shape_zyx[1:])
    read = chunks_zyx[0] if cached else slab
    return int(held) + resample_threads() * decoding_bytes(shape_zyx, chunks_zyx, read,
                                                            shape_zyx[1])


def resample_threads(threads: int | None = None) -> int:
    """Slabs resampled at once (zarr_levels.capped_threads)."""
    return capped_threads(RESAMPLE_THREADS, threads)


def _reach(ratio: float) -> int:
    """Source sections the anti-aliasing Gaussian reaches past a slab (scipy's radius at
    truncate=3), for shrinking by `ratio`."""
    sigma = (ratio - 1) / 2 if ratio > 1 else 0.0
    return int(3.0 * sigma + 0.5) if sigma else 0


def _resample_step(slab_sections: int, ratio: float) -> int:
    """Output sections a slab makes: as many as a slab of source sections holds."""
    return max(1, math.floor(slab_sections / max(ratio, 1.0)))


class _ChunkRows:
    """The chunk rows (whole z-chunks, full width) of a level, each read once and shared by
    the threads that resample it: a slab copies its sections out of the rows it spans, and
    a row is let go once no slab still to be made needs it. Slabs read straight from zarr
    decoded each chunk row again for every slab that reached into it."""

    def __init__(self, level: Level, check_finite: bool):
        self.level, self.check = level, check_finite
        self.rows_z = level.chunks_zyx[0]
        self.rows: dict[int, Future] = {}
        self.lock = threading.Lock()

    def _row(self, r: int) -> np.ndarray:
        with self.lock:
            fut = self.rows.get(r)
            mine = fut is None
            if mine:
                fut = self.rows[r] = Future()
        if mine:
            try:
                z1 = min((r + 1) * self.rows_z, self.level.shape_zyx[0])
                fut.set_result(self.level.sections(r * self.rows_z, z1, 1, self.check))
            except BaseException as exc:  # every thread waiting for the row raises it
                fut.set_exception(exc)
        return fut.result()

    def sections(self, s0: int, s1: int) -> np.ndarray:
        """Sections [s0, s1): a view of their row where one holds them all (the slab is
        only read), else a copy out of the rows they span."""
        rz = self.rows_z
        if s0 // rz == (s1 - 1) // rz:
            return self._row(s0 // rz)[s0 % rz:s0 % rz + s1 - s0]
        slab = np.empty((s1 - s0, *self.level.shape_zyx[1:]), dtype=np.float32)
        for r in range(s0 // rz, (s1 - 1) // rz + 1):
            row = self._row(r)
            a, b = max(s0, r * rz), min(s1, r * rz + len(row))
            slab[a - s0:b - s0] = row[a - r * rz:b - r * rz]
        return slab

    def let_go_below(self, z: int) -> None:
        """Drops the rows that end at or before section z."""
        with self.lock:
            for r in [r for r in self.rows if (r + 1) * self.rows_z <= z]:
                del self.rows[r]


def _rows_fit(shape_zyx: tuple[int, ...], chunks_zyx: tuple[int, ...]) -> bool:
    """Whether resample_level reads a level of `shape_zyx` unbinned through _ChunkRows: in
    known chunks whose chunk row fits SLAB_BYTES."""
    return len(chunks_zyx) == 3 and _row_bytes(shape_zyx, chunks_zyx) <= zarr_levels.SLAB_BYTES


def _row_bytes(shape_zyx: tuple[int, ...], chunks_zyx: tuple[int, ...]) -> int:
    return min(chunks_zyx[0], shape_zyx[0]) * math.prod(shape_zyx[1:]) * 4


def resample_level(level: Level, k: int, working_A: float, check_finite: bool = True,
                   threads: int | None = None) -> tuple[np.ndarray, float]:
    """`level`, mean-binned k×k×k, resampled to the working grid as `resample` does, but as
    it is read: a slab of output sections at a time (resample_threads(threads) at once)
    from the source sections they need (the anti-aliasing Gaussian's reach included, so
    each slab equals the whole-volume result), never the whole level in memory. Returns
    (volume, its origin in Å)."""
    from scipy import ndimage

    voxel_A, origin_A = level.voxel_size_A * k, level.binned_origin_A(k)
    shape = tuple(n // k for n in level.shape_zyx)
    if min(shape) < 2:
        raise DataError(f"{level.where}: a {level.shape_zyx} level is too small to resample "
                        f"from {level.voxel_size_A:g} Å to {working_A:g} Å")
    ratio = working_A / voxel_A
    sigma = (ratio - 1) / 2 if ratio > 1 else 0.0
    reach = _reach(ratio)
    new_origin = origin_A - voxel_A / 2 + working_A / 2
    (iz, fz), (iy, fy), (ix, fx) = (_axis_weights(n, voxel_A, origin_A, working_A, new_origin)
                                    for n in shape)
    fy = fy[:, None]
    out = np.empty((len(iz), len(iy), len(ix)), dtype=np.float32)
    rows = (_ChunkRows(level, check_finite) if k == 1 and _rows_fit(level.shape_zyx,
                                                                     level.chunks_zyx)
            else None)
    step = _resample_step(zarr_levels.SLAB_SECTIONS if rows else level.slab_sections(k), ratio)
    unmade, lock = set(range(0, len(iz), step)), threading.Lock()

    def one_slab(o0: int) -> None:
        o1 = min(o0 + step, len(iz))
        s0 = max(0, int(iz[o0]) - reach)
        s1 = min(shape[0], int(iz[o1 - 1]) + 2 + reach)
        slab = rows.sections(s0, s1) if rows else level.sections(s0, s1, k, check_finite)
        if rows:
            with lock:
                unmade.discard(o0)
                first = min(unmade, default=len(iz))
            rows.let_go_below(max(0, int(iz[first]) - reach) if first < len(iz) else shape[0])
        if sigma:
            slab = ndimage.gaussian_filter(slab, sigma, truncate=3.0)
        f = fz[o0:o1, None, None]
        slab = slab[iz[o0:o1] - s0] * (1 - f) + slab[iz[o0:o1] + 1 - s0] * f
        slab = np.take(slab, iy, axis=1) * (1 - fy) + np.take(slab, iy + 1, axis=1) * fy
        out[o0:o1] = np.take(slab, ix, axis=2) * (1 - fx) + np.take(slab, ix + 1, axis=2) * fx

    with ThreadPoolExecutor(max_workers=resample_threads(threads)) as pool:
        list(pool.map(one_slab, sorted(unmade)))  # list(): an error is raised here
    return out, new_origin
