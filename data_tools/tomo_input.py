"""The sparsifier's input step: which tomogram of a run to read, and that tomogram on the
working grid (sparsify.voxel_spacing_A × bin_factor Å, 20 Å for the shipped checkpoint).

Rules, each choice logged per run:
- **Type**: `sparsify.tomogram_type` when the run has it; else the first of FALLBACK_TYPES
  the run has, else its alphabetically first. With `type_fallback` off (`--tomo-type`) the
  named type or an error listing the run's types.
- **Spacing folder and level**: every level of that type in every `VoxelSpacing*` folder
  (only `source_spacing_A`'s folder when set: `--voxel-spacing`), each with its voxel size
  and origin from the OME-Zarr `coordinateTransformations`. A level within 1 % of the working
  spacing is read as it is (the competition's level 1, 20.024 Å); one up to 10 % coarser is
  resampled from itself. Otherwise the coarsest level at least as fine as the working grid
  is brought to it: by mean binning where the ratio is within 1 % of an integer (a pyramid
  with level 0 only), else by anti-aliased linear resampling in physical coordinates
  (13.48 Å, 7.84 Å), after mean binning by the ratio's integer part where it is 2 or more
  (a 7.84 Å level 0: bin 2, then 15.68 -> 20 Å). A run whose every level is coarser is
  upsampled, with a warning. Every route reads the level a block of whole zarr chunks at a
  time, each chunk decoded once: memory is the working grid's, not the level's (a level
  binned by 2 or more is resampled once binned, at most 3.4 times the working grid;
  the resampling itself: data_tools.resample).

Detections stay in the run's own frame: the working grid's voxel size and origin (Å) travel
with the volume.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from data_tools.copick_io import CopickProject
from data_tools.ome_zarr import array_chunks, missing_chunks
from data_tools.particles import DataError
from data_tools.resample import decoding_bytes, resample, resample_level, resampling_bytes
from data_tools.zarr_levels import Tomogram, read_block, read_threads

log = logging.getLogger(__name__)

FALLBACK_TYPES = ("denoised", "wbp", "ctfdeconvolved", "isonetcorrected")
# A level this close to the working spacing is used as it is. Particles read 4.8 % off
# scale cost 0.005–0.018 weighted F4 (b-gal 0.860 -> 0.791); resampled they score as the
# unchanged runs (bench/input_variants_scale.json).
SPACING_TOLERANCE = 0.01
# A level at most this much coarser is resampled from itself: reading the level twice as fine
# costs 2.3 s more per tomogram and scored no better.
UPSAMPLE_TOLERANCE = 0.10
# The thinnest axis a tomogram may have, in working voxels: fewer is a section or a line, on
# which the filters and the network's 3-D context mean nothing.
MIN_EXTENT_VOXELS = 2


@dataclass(frozen=True)
class Source:
    """One pyramid level of one tomogram of a run."""

    folder_spacing_A: float  # the VoxelSpacing folder's number
    tomo_type: str
    level: int
    voxel_size_A: float  # from .zattrs
    origin_A: float  # Å position of voxel 0's centre (the level's translation)
    shape_zyx: tuple[int, ...]
    chunks_zyx: tuple[int, ...] = ()  # the chunks zarr decodes (): not known
    # Chunk files (shards) its grid needs that are not on disk: counted by plan_source from
    # `array` (the level's folder) for the level it would read, and for the others only
    # where that one lacks some.
    missing_chunks: int = 0
    array: Path | None = None

    def describe(self) -> str:
        missing = f", {self.missing_chunks} chunk files absent" if self.missing_chunks else ""
        return (f"{self.tomo_type} VoxelSpacing{self.folder_spacing_A:.3f} level {self.level} "
                f"({self.voxel_size_A:.3f} Å, {'x'.join(map(str, self.shape_zyx))}{missing})")


@dataclass(frozen=True)
class Plan:
    """How a source reaches the working grid: "as is", "bin K", "resample" or
    "bin K, resample"."""

    source: Source
    how: str
    working_A: float

    @property
    def bin_factor(self) -> int:
        return int(self.how.split()[1].rstrip(",")) if self.how.startswith("bin") else 1

    @property
    def working_voxels(self) -> int:
        """About how many voxels the source has on the working grid."""
        scale = self.source.voxel_size_A / self.working_A
        return math.prod(max(1, int(n * scale)) for n in self.source.shape_zyx)

    @property
    def read_bytes(self) -> int:
        """About the most memory reading takes besides the working volume it fills: the
        blocks Level.read_binned has in hand with what zarr decodes for them; resampling
        streamed from an unbinned level, the slabs each thread has in hand with their
        filtered and interpolated copies; resampling a binned level, that level in memory
        and the slabs resampled from it."""
        s, k = self.source, self.bin_factor
        if not self.how.endswith("resample"):
            return _blocks_bytes(s, k)
        if k == 1:
            return resampling_bytes(s.shape_zyx, s.chunks_zyx, s.voxel_size_A, self.working_A)
        binned = tuple(n // k for n in s.shape_zyx)
        return 4 * math.prod(binned) + max(_blocks_bytes(s, k), resampling_bytes(
            binned, (), s.voxel_size_A * k, self.working_A))

    def describe(self) -> str:
        return f"{self.source.describe()} -> {self.how}"


def choose_type(project: CopickProject, run: str, preferred: str, fallback: bool) -> str:
    types = project.tomogram_types(run)
    if preferred in types:
        return preferred
    if not fallback or not types:
        where = project.run_dir(run)
        raise DataError(f"{where}: tomogram type {preferred!r} not found; the run has "
                        f"{types or 'no tomograms'}")
    chosen = next((t for t in FALLBACK_TYPES if t in types), types[0])
    log.info("%s: no %r tomogram; using %r (fallback order %s)", run, preferred, chosen,
             ", ".join(FALLBACK_TYPES))
    return chosen


def list_sources(project: CopickProject, run: str, tomo_type: str,
                 folder_spacing_A: float | None = None) -> list[Source]:
    """Every level of `tomo_type` in the run's spacing folders (or the one asked for)."""
    spacings = project.voxel_spacings(run)
    if folder_spacing_A:
        match = [s for s in spacings if math.isclose(s, folder_spacing_A, abs_tol=5e-4)]
        if not match:
            raise DataError(f"{project.run_dir(run)}: no VoxelSpacing{folder_spacing_A:.3f} "
                            f"folder; the run has spacings {spacings or 'none'}")
        spacings = match
    out = []
    for s in spacings:
        if tomo_type not in project.tomogram_types(run, s):
            continue
        path = project.tomogram_path(run, s, tomo_type)
        for i, (where, vs, shape, origin) in enumerate(project.tomogram_scales(run, s,
                                                                               tomo_type)):
            if not min(shape):
                continue  # a level binned past the data (0 sections) holds nothing to read
            out.append(Source(s, tomo_type, i, vs, origin, shape, array_chunks(path / where),
                              array=path / where))
    if not out:
        raise DataError(f"{project.run_dir(run)}: no {tomo_type!r} tomogram in spacings "
                        f"{spacings or 'none'}")
    return out


_SAID_INSTEAD: set[tuple[Source, Source]] = set()
_SAID_THIN: set[Source] = set()
# A depth this many times a lateral axis: the volume was written with its axes permuted, not
# cropped to a strip (a strip 184 x 150 x 630 is 1.2; a tomogram stored y, z, x is 3.4).
THIN_AXIS_RATIO = 2.0


def plan_source(sources: list[Source], working_A: float) -> Plan:
    """The level to read and how it reaches the working grid (rules in the module doc). A
    level with chunk files absent gives way to one whose files are all there, where such
    a level serves without being upsampled: a pyramid whose coarser level is incomplete
    and whose finer one is whole is an interrupted copy, not a sparse store."""
    plan = _plan_among(sources, working_A)
    _check_shape(plan)
    absent = _absent(plan.source)
    if not absent:
        return plan
    plan = replace(plan, source=replace(plan.source, missing_chunks=absent))
    whole = [s for s in sources if s.voxel_size_A <= working_A * (1 + UPSAMPLE_TOLERANCE)
             and not _absent(s)]
    if not whole:
        return plan
    instead = _plan_among(whole, working_A)
    said = (plan.source, instead.source)
    if said not in _SAID_INSTEAD:  # once: a run is planned for its memory, then read
        _SAID_INSTEAD.add(said)
        log.warning("%s: reading %s instead, whose chunk files are all on disk",
                    plan.source.describe(), instead.source.describe())
    return instead


def _check_shape(plan: Plan) -> None:
    s = plan.source
    thinnest = min(s.shape_zyx[1:])
    if s.shape_zyx[0] >= THIN_AXIS_RATIO * thinnest and s not in _SAID_THIN:
        _SAID_THIN.add(s)  # once: a run is planned for its memory, then read
        axis = "yx"[s.shape_zyx[1:].index(thinnest)]
        log.warning("%s: %s voxels (z, y, x), thinnest along %s, not z: copick tomograms are "
                    "stored z, y, x with the beam along z, and this one reads as if turned "
                    "on its side (permuted when written? an MRC file's axes are put right by "
                    "data_tools.import_mrc --thin-axis)", s.array or s.describe(),
                    "x".join(map(str, s.shape_zyx)), axis)
    extent_A = [n * s.voxel_size_A for n in s.shape_zyx]
    if min(extent_A) < MIN_EXTENT_VOXELS * plan.working_A:
        raise DataError(
            f"{s.array or s.describe()}: {'x'.join(map(str, s.shape_zyx))} voxels of "
            f"{s.voxel_size_A:g} Å span {' x '.join(f'{e:.0f}' for e in extent_A)} Å (z, y, "
            f"x); every axis must span at least {MIN_EXTENT_VOXELS} voxels of the "
            f"{plan.working_A:g} Å working grid ({MIN_EXTENT_VOXELS * plan.working_A:g} Å)")


def _absent(s: Source) -> int:
    """The chunk files of a level that are not on disk (counted from its folder)."""
    if s.missing_chunks or s.array is None:
        return s.missing_chunks
    return (missing_chunks(s.array) or (0, 0))[0]


def _plan_among(sources: list[Source], working_A: float) -> Plan:
    def rel(s: Source) -> float:
        return abs(s.voxel_size_A / working_A - 1)

    close = [s for s in sources if rel(s) <= SPACING_TOLERANCE]
    if close:
        return Plan(min(close, key=rel), "as is", working_A)
    slightly_coarser = [s for s in sources
                        if 0 < s.voxel_size_A / working_A - 1 <= UPSAMPLE_TOLERANCE]
    if slightly_coarser:
        return Plan(min(slightly_coarser, key=rel), "resample", working_A)
    finer = [s for s in sources if s.voxel_size_A < working_A]
    if not finer:
        src = min(sources, key=lambda s: s.voxel_size_A)
        log.warning("every level is coarser than the %.2f Å working grid; upsampling %s",
                    working_A, src.describe())
        return Plan(src, "resample", working_A)
    src = max(finer, key=lambda s: s.voxel_size_A)
    ratio = working_A / src.voxel_size_A
    k = round(ratio)
    if k >= 2 and abs(ratio / k - 1) <= SPACING_TOLERANCE:
        return Plan(src, f"bin {k}", working_A)
    k = math.floor(ratio)  # binned by the ratio's integer part first, as a pyramid would be
    return Plan(src, f"bin {k}, resample" if k >= 2 else "resample", working_A)


def _blocks_bytes(s: Source, k: int) -> int:
    """Level.read_binned's blocks in hand at once, as read and binned, and what zarr
    decodes for them."""
    sections, rows = (n * k for n in read_block(s.shape_zyx, s.chunks_zyx, k))
    block = min(sections, s.shape_zyx[0]) * rows * s.shape_zyx[2] * 4
    return read_threads() * int(block * (1 + (k > 1) / k**3)  # blocks: whole chunks
                                + decoding_bytes(s.shape_zyx, s.chunks_zyx, sections, rows))


def read_working(project: CopickProject, run: str, *, tomo_type: str, type_fallback: bool,
                 working_A: float, source_spacing_A: float = 0.0, threads: int | None = None
                 ) -> tuple[Tomogram, dict]:
    """The run's tomogram on the working grid, and how it was chosen (for logs and shards);
    `threads`: the cores it may use (default all)."""
    chosen_type = choose_type(project, run, tomo_type, type_fallback)
    plan = plan_source(list_sources(project, run, chosen_type, source_spacing_A or None),
                       working_A)
    s = plan.source
    level = project.open_level(run, s.folder_spacing_A, s.tomo_type, scale=s.level)
    k = plan.bin_factor
    # Binned as it is read, a level needs the working grid's memory, not its own; binned by
    # k >= 2 it is at most 3.4 times the working grid (k is the ratio's integer part), and is
    # resampled in memory: each chunk decoded once, where resampling slabs of a level in
    # large chunks decoded each several times.
    if plan.how.endswith("resample"):
        if k > 1:
            data, origin = resample(level.read_binned(k, threads=threads),
                                    level.voxel_size_A * k, level.binned_origin_A(k),
                                    working_A, threads)
        else:
            data, origin = resample_level(level, 1, working_A, threads=threads)
        voxel = working_A
    else:
        data, origin = level.read_binned(k, threads=threads), level.binned_origin_A(k)
        voxel = level.voxel_size_A * k
    info = {"tomogram": str(level.path), "type": s.tomo_type,
            "folder_spacing_A": s.folder_spacing_A, "level": s.level,
            "source_voxel_A": s.voxel_size_A, "how": plan.how, "voxel_A": voxel}
    log.info("%s: %s", run, plan.describe())
    return Tomogram(data=data, voxel_size_A=voxel, path=level.path, run=run,
                    origin_A=origin), info


def add_input_arguments(ap: argparse.ArgumentParser) -> None:
    """--tomo-type, --voxel-spacing, --polarity and --tilt-axis for the command lines that
    read runs."""
    ap.add_argument("--tomo-type", metavar="NAME",
                    help="tomogram type to read (default: the checkpoint's, else "
                         f"{', '.join(FALLBACK_TYPES)} in that order)")
    ap.add_argument("--voxel-spacing", type=float, metavar="A",
                    help="read this VoxelSpacing folder (default: chosen per run by rule)")
    ap.add_argument("--polarity", choices=["auto", "dark", "bright"],
                    help="protein darker or brighter than ice (default: auto, per tomogram)")
    ap.add_argument("--tilt-axis", choices=["auto", "y", "x"],
                    help="axis the tilt series turned about (default: auto, per tomogram, from "
                         "its missing wedge)")


def input_overrides(a: argparse.Namespace) -> dict:
    """The sparsify-config fields the input arguments set (empty when none was given)."""
    out = {}
    if a.tomo_type:
        out |= {"tomogram_type": a.tomo_type, "type_fallback": False}
    if a.voxel_spacing:
        out["source_spacing_A"] = float(a.voxel_spacing)
    if a.polarity:
        out["polarity"] = a.polarity
    if getattr(a, "tilt_axis", None):
        out["tilt_axis"] = a.tilt_axis
    return out


def with_overrides(cfg, overrides: dict | None):
    """A SparsifyConfig with the input overrides applied (the same object when none)."""
    return replace(cfg, **overrides) if overrides else cfg
