"""Reading one pyramid level of a tomogram: a few z-sections or a block of whole zarr chunks
at a time, binned as read, so that a level larger than memory at float32 can be binned or
resampled into the working grid (data_tools/tomo_input.py) without being held whole.

zarr decodes a chunk whole however little of it a read wants: a read is shaped to whole
chunks wherever the array's chunks are known (read_block), so each chunk is decoded once.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.particles import DataError

SLAB_SECTIONS = 32  # z-sections read at a time: a slab of a 4k × 4k float32 level is 2 GB
# A slab grows to the array's z-chunk where that chunk row takes no more than this: zarr
# decodes whole chunks, and 32-section reads of 256-section chunks read 1 GB in 5.1 s where
# whole chunk rows took 2.1 s.
SLAB_BYTES = 2**30
READ_THREADS = 2  # blocks read at once: zarr's decoding and numpy's binning release the GIL


def slab_sections(shape_zyx: tuple[int, ...], chunk_z: int, k: int = 1) -> int:
    """Binned sections a level of `shape_zyx` stored in z-chunks of `chunk_z` (0: unknown)
    is read at a time: SLAB_SECTIONS source sections, or the z-chunk where its chunk row
    fits SLAB_BYTES (each chunk then decoded once), whole bins of k."""
    raw = SLAB_SECTIONS
    if chunk_z and chunk_z * math.prod(shape_zyx[1:]) * 4 <= SLAB_BYTES:
        raw = max(raw, chunk_z)
    return max(1, raw // k)


def read_block(shape_zyx: tuple[int, ...], chunks_zyx: tuple[int, ...], k: int = 1
               ) -> tuple[int, int]:
    """(binned sections, binned rows) Level.read_binned reads at a time from a level of
    `shape_zyx` in chunks of `chunks_zyx` (() unknown): whole chunks' sections (at least
    SLAB_SECTIONS) in bands of whole chunks' rows, all in whole bins, so that each chunk is
    decoded once and a block stays small; slab_sections at full width where the chunks are
    not known or such a block exceeds SLAB_BYTES. 32-section slabs of a 7.84 Å level in
    256³ chunks decoded each chunk 8 times: 28 s where bands of whole chunks took 7 s."""
    n_y, n_x = shape_zyx[1:]
    if len(chunks_zyx) == 3:  # source sections and rows: whole chunks and whole bins
        unit = math.lcm(chunks_zyx[0], k)
        sections = unit * math.ceil(SLAB_SECTIONS / unit)
        band = min(math.lcm(chunks_zyx[1], k), n_y)
        if sections * band * n_x * 4 <= SLAB_BYTES:
            return max(1, sections // k), max(1, band // k)
    return slab_sections(shape_zyx, chunks_zyx[0] if chunks_zyx else 0, k), n_y // k


def capped_threads(cap: int, threads: int | None = None) -> int:
    """`cap` threads, no more than `threads` (the cores a caller may use; default all) or
    the machine's."""
    cores = os.cpu_count() or 1
    return max(1, min(cap, threads or cores, cores))


def read_threads(threads: int | None = None) -> int:
    """Blocks read at once (capped_threads)."""
    return capped_threads(READ_THREADS, threads)


@dataclass(frozen=True)
class Tomogram:
    data: np.ndarray  # (z, y, x) float32
    voxel_size_A: float
    path: Path
    run: str
    origin_A: float = 0.0  # position of voxel 0's centre (the level's translation)


@dataclass(frozen=True)
class Level:
    """One opened pyramid level of a tomogram, read a few z-sections at a time so that a
    level larger than memory at float32 can be binned or resampled as it is read."""

    path: Path  # the tomogram's .zarr
    where: Path  # the level's array inside it
    run: str
    voxel_size_A: float
    origin_A: float  # Å position of voxel 0's centre
    shape_zyx: tuple[int, ...]
    array: object  # the zarr array, possibly with leading t, c axes of one each

    def binned_origin_A(self, k: int) -> float:
        return self.origin_A + self.voxel_size_A * (k - 1) / 2

    def sections(self, z0: int, z1: int, k: int = 1, check_finite: bool = True) -> np.ndarray:
        """Binned sections [z0, z1) of the level mean-binned k×k×k, as float32 (a trailing
        y, x remainder that fills no bin dropped). NaN/inf is an error naming the array."""
        slab, n_bad = self._sections(z0, z1, k, check_finite)
        if n_bad:
            raise DataError(f"{self.where}: {n_bad} NaN/inf voxels in run {self.run!r} "
                            f"(sections {z0 * k}..{z1 * k - 1})")
        return slab

    @property
    def chunks_zyx(self) -> tuple[int, ...]:
        chunks = getattr(self.array, "chunks", None)
        return tuple(int(c) for c in chunks[len(chunks) - 3:]) if chunks else ()

    def slab_sections(self, k: int = 1) -> int:
        """Binned sections per full-width read (see slab_sections)."""
        return slab_sections(self.shape_zyx, self.chunks_zyx[0] if self.chunks_zyx else 0, k)

    def read_binned(self, k: int = 1, check_finite: bool = True, threads: int | None = None
                    ) -> np.ndarray:
        """The whole level mean-binned k×k×k, a read_block at a time (read_threads(threads)
        at once); an error counts every NaN/inf voxel of the level."""
        if k > 1 and min(self.shape_zyx) < k:
            raise DataError(f"{self.where}: a {self.shape_zyx} level cannot be binned by {k}")
        n_z, n_y, n_x = (n // k for n in self.shape_zyx)
        data = np.empty((n_z, n_y, n_x), dtype=np.float32)
        step, rows = read_block(self.shape_zyx, self.chunks_zyx, k)

        def one_block(zy: tuple[int, int]) -> int:
            z1, y1 = min(zy[0] + step, n_z), min(zy[1] + rows, n_y)
            data[zy[0]:z1, zy[1]:y1], bad = self._sections(zy[0], z1, k, check_finite,
                                                           (zy[1], y1))
            return bad

        blocks = [(z0, y0) for z0 in range(0, n_z, step) for y0 in range(0, n_y, rows)]
        with ThreadPoolExecutor(max_workers=read_threads(threads)) as pool:
            n_bad = sum(pool.map(one_block, blocks))
        if n_bad:
            raise DataError(f"{self.where}: {n_bad} NaN/inf voxels in run {self.run!r}")
        return data

    def _sections(self, z0: int, z1: int, k: int, check_finite: bool,
                  rows: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
        """Binned sections [z0, z1) (binned rows [rows) only, where given) and their
        NaN/inf count."""
        lead = len(self.array.shape) - 3
        where = (slice(z0 * k, z1 * k),) + ((slice(rows[0] * k, rows[1] * k),) if rows else ())
        try:
            slab = np.asarray(self.array[(0,) * lead + where], dtype=np.float32)
        except Exception as exc:  # zarr raises many types for a damaged store
            raise DataError(f"{self.where}: cannot read array ({exc}){self._damaged(where)}"
                            ) from exc
        n_bad = non_finite_count(slab) if check_finite else 0
        return (slab if k == 1 else bin_mean(slab, k)), n_bad

    def _damaged(self, where: tuple[slice, ...]) -> str:
        """Which chunk of a block that failed to read fails alone, as words for the error:
        a truncated or damaged chunk file is the usual cause, and the file to fetch again."""
        chunks = self.chunks_zyx
        if len(chunks) != 3:
            return ""
        lead = (0,) * (len(self.array.shape) - 3)
        block = [*where, *(slice(0, n) for n in self.shape_zyx[len(where):])]
        spans = [range(sl.start // c, -(-min(sl.stop, n) // c))
                 for sl, c, n in zip(block, chunks, self.shape_zyx, strict=True)]
        for idx in ((z, y, x) for z in spans[0] for y in spans[1] for x in spans[2]):
            try:
                self.array[lead + tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks,
                                                                                strict=True))]
            except Exception:  # the one that fails alone
                first = ", ".join(f"{i * c}..{min((i + 1) * c, n) - 1}" for i, c, n in
                                  zip(idx, chunks, self.shape_zyx, strict=True))
                return (f"; chunk {'.'.join(map(str, idx))} (z, y, x voxels {first}) fails "
                        f"to decode: a damaged or truncated chunk file, as an interrupted "
                        f"copy leaves; fetch the tomogram again")
        return ""


def non_finite_count(a: np.ndarray) -> int:
    """How many NaN/inf values `a` holds. Its sum first, which any NaN or inf spoils: the
    boolean mask, a quarter of a slab more at the reader's peak, is made only where the sum
    is not finite (a NaN or inf there, or finite values overflowing it)."""
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(a.sum()):
            return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def bin_mean(vol: np.ndarray, k: int) -> np.ndarray:
    """k× mean binning; trailing rows that do not fill a bin are dropped (as pyramids do)."""
    z, y, x = (s // k * k for s in vol.shape)
    v = vol[:z, :y, :x]
    return v.reshape(z // k, k, y // k, k, x // k, k).mean(axis=(1, 3, 5), dtype=np.float32)


def bin2(vol: np.ndarray) -> np.ndarray:
    """2x mean binning; an odd trailing row/column is dropped (as the portal's pyramids do)."""
    return bin_mean(vol, 2)
