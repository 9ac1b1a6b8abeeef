"""The data-access module for the copick filesystem layout, with its picks half
(data_tools/project_picks.py): nobody else globs paths.

Layout (as the competition ships it; docs/formats.md):
    <static>/ExperimentRuns/<run>/VoxelSpacing10.000/<type>.zarr    OME-Zarr multiscale, z,y,x
        (0.4 in zarr v2 as shipped; 0.5 in zarr v3 is read too)
    <overlay>/ExperimentRuns/<run>/Picks/<particle>.json             competition naming
    <overlay>/ExperimentRuns/<run>/Picks/<user>_<session>_<particle>.json   copick naming
Pick locations are x,y,z in Å; arrays are z,y,x (data_tools/coords.py converts). What an
OME-Zarr group says of its levels is read in data_tools/ome_zarr.py, and a level's voxels in
data_tools/zarr_levels.py: this module finds the files, those two read them. Picks files are
read and written in data_tools/project_picks.py, whose methods CopickProject has.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_path, atomic_write_text, listed
from data_tools.copick_files import RUNS_DIR, copick_config, roots_from_config
from data_tools.datasets import making_hint
from data_tools.ome_zarr import levels_in_folder, warn_missing_chunks, write_ome_zarr
from data_tools.particles import DataError, ParticleTable
from data_tools.project_picks import ProjectPicks
from data_tools.run_names import validate_run_name
from data_tools.truth_user import parse_truth_user
from data_tools.zarr_levels import Level, Tomogram

# copick keeps per-voxel feature maps of a tomogram beside it: <type>_<feature>_features.zarr
FEATURES = "_features.zarr"
log = logging.getLogger(__name__)


def voxel_spacing_dirname(voxel_spacing_A: float) -> str:
    return f"VoxelSpacing{voxel_spacing_A:.3f}"


def _inside_a_project(path: Path) -> str:
    """Where `path` is a run's folder, or a folder inside one (a tomogram's .zarr), or the
    ExperimentRuns folder itself: the project and run to pass instead, for the error."""
    parts = path.resolve().parts
    if RUNS_DIR not in parts:
        return ""
    i = len(parts) - 1 - parts[::-1].index(RUNS_DIR)
    root = Path(*parts[:i])
    if root.name in ("static", "overlay") and (root.parent / "static").is_dir():
        root = root.parent
    run = parts[i + 1] if i + 1 < len(parts) else None
    return f"; it is inside the project {root}: pass --project {root}" + (
        f" --runs {run}" if run else "")


class CopickProject(ProjectPicks):
    """A copick filesystem project: a folder with static/ and overlay/, a folder holding
    ExperimentRuns/ directly (the competition's test/static), or a copick config JSON. Its
    picks methods (read_picks, read_truth, write_picks, ...): data_tools/project_picks.py."""

    def __init__(self, path: str | Path, particles: ParticleTable | None = None, *,
                 truth_user: str | None = None):
        """`truth_user` ("USER" or "USER:SESSION"): the picks read as ground truth, instead of
        the default rule (read_picks)."""
        self.path = Path(path).expanduser()  # `--project=~/data`: the shell left the ~
        self.truth_user, self.truth_session = parse_truth_user(truth_user)
        if not self.path.exists():
            raise DataError(f"{self.path}: project does not exist{making_hint(self.path)}")
        config = None
        if self.path.is_file():
            config = self.path
            self.static_root, self.overlay_root = roots_from_config(self.path)
        elif (self.path / RUNS_DIR).is_dir():
            if self.path.name == "overlay" and (self.path.parent / "static").is_dir():
                raise DataError(f"{self.path}: the overlay (picks) of the project "
                                f"{self.path.parent}, whose tomograms are in static/: pass "
                                f"--project {self.path.parent}")
            self.static_root = self.overlay_root = self.path
        elif (self.path / "static").is_dir() or (self.path / "overlay").is_dir():
            self.static_root, self.overlay_root = self.path / "static", self.path / "overlay"
        elif (self.path / "copick_config.json").is_file():
            # copick keeps a project's config apart from its data as often as beside it
            config = self.path / "copick_config.json"
            self.static_root, self.overlay_root = roots_from_config(config)
        else:
            raise DataError(
                f"{self.path}: not a copick project (no static/, overlay/ or {RUNS_DIR}/ inside, "
                f"and not a copick config JSON){_inside_a_project(self.path)}")
        if config is None and (self.path / "copick_config.json").is_file():
            config = self.path / "copick_config.json"
        self.config_path: Path | None = config  # None: the competition's layout, no config
        self.particles = particles or (
            ParticleTable.from_copick_config(config) if config else ParticleTable.competition())

    # -- runs ---------------------------------------------------------------------------
    def runs(self) -> list[str]:
        names: set[str] = set()
        for root in {self.static_root, self.overlay_root}:
            d = root / RUNS_DIR
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.is_dir() and listed(p))
        return sorted(names)

    def require_runs(self) -> list[str]:
        """The runs, or an error naming where none was found: a mistyped root in a copick
        config would otherwise read as a project with nothing to pick."""
        runs = self.runs()
        if not runs:
            roots = sorted({str(r / RUNS_DIR) + ("" if r.is_dir() else " (missing)")
                            for r in (self.static_root, self.overlay_root)})
            raise DataError(f"{self.config_path or self.path}: no runs in {' or '.join(roots)}")
        return runs

    def run_dir(self, run: str, *, overlay: bool = False, must_exist: bool = True) -> Path:
        validate_run_name(run)
        root = self.overlay_root if overlay else self.static_root
        d = root / RUNS_DIR / run
        if must_exist and not d.is_dir() and run not in self.runs():
            raise DataError(f"{self.path}: run {run!r} not found; runs: {self.runs() or 'none'}")
        return d

    # -- tomograms ----------------------------------------------------------------------
    def spacing_folders(self, run: str, voxel_spacing_A: float | None = None) -> list[Path]:
        """The run's `VoxelSpacing<Å>` folders in both roots (those of one spacing when
        given), however the number is written (`10.000` as copick writes it, `10`, `10.0`).
        A folder whose suffix is not a number is skipped with a warning."""
        out = []
        for root in (self.static_root, self.overlay_root):
            d = root / RUNS_DIR / validate_run_name(run)
            for p in sorted(d.glob("VoxelSpacing*")) if d.is_dir() else []:
                if not listed(p):
                    continue
                try:
                    spacing = float(p.name[len("VoxelSpacing"):])
                except ValueError:
                    log.warning("%s: not a VoxelSpacing<Å> folder name; skipped", p)
                    continue
                if p.is_dir() and (voxel_spacing_A is None
                                   or math.isclose(spacing, voxel_spacing_A, abs_tol=5e-4)):
                    out.append(p)
        return out

    def voxel_spacings(self, run: str) -> list[float]:
        return sorted({float(p.name[len("VoxelSpacing"):]) for p in self.spacing_folders(run)})

    def tomogram_types(self, run: str, voxel_spacing_A: float | None = None) -> list[str]:
        """Tomogram types in one spacing folder, or in any of the run's (None)."""
        types = set()
        for d in self.spacing_folders(run, voxel_spacing_A):
            types.update(p.name[:-5] for p in d.glob("*.zarr")
                         if listed(p) and not p.name.endswith(FEATURES))
        return sorted(types)

    def tomogram_path(self, run: str, voxel_spacing_A: float = 10.0,
                      tomo_type: str = "denoised") -> Path:
        self.run_dir(run)
        vs_name = voxel_spacing_dirname(voxel_spacing_A)
        for d in self.spacing_folders(run, voxel_spacing_A):
            p = d / f"{tomo_type}.zarr"
            if p.is_dir():
                return p
        spacings = self.voxel_spacings(run)
        if not self.spacing_folders(run, voxel_spacing_A):
            raise DataError(
                f"{self.static_root / RUNS_DIR / run / vs_name}: voxel spacing folder does not "
                f"exist; run {run!r} has spacings {spacings or 'none'}")
        raise DataError(
            f"{self.static_root / RUNS_DIR / run / vs_name / (tomo_type + '.zarr')}: tomogram "
            f"type {tomo_type!r} not found; types: {self.tomogram_types(run, voxel_spacing_A)}")

    def tomogram_scales(self, run: str, voxel_spacing_A: float = 10.0, tomo_type: str = "denoised"
                        ) -> list[tuple[str, float, tuple[int, ...], float]]:
        """[(array path, voxel size Å, shape z,y,x, origin Å)] for each level."""
        return levels_in_folder(self.tomogram_path(run, voxel_spacing_A, tomo_type),
                                voxel_spacing_A)

    def open_level(self, run: str, voxel_spacing_A: float = 10.0,
                   tomo_type: str = "denoised", scale: int = 0) -> Level:
        """One level of a tomogram, opened to be read a few z-sections at a time."""
        path = self.tomogram_path(run, voxel_spacing_A, tomo_type)
        levels = levels_in_folder(path, voxel_spacing_A)
        if not 0 <= scale < len(levels):
            raise DataError(f"{path}: scale {scale} not present (levels 0..{len(levels) - 1})")
        array_path, voxel_size_A, _, origin_A = levels[scale]
        # The folder's spacing is rounded (10.000 vs 10.012 on the portal); allow 5 % between
        # it and level 0's scale. Coarser levels keep whatever factor their scale says.
        full = levels[0][1]
        if abs(full - voxel_spacing_A) > 0.05 * voxel_spacing_A:
            raise DataError(f"{path}: wrong voxel spacing: level 0 has {full:g} Å per voxel, "
                            f"the folder says {voxel_spacing_A:g} Å")
        where = path / array_path
        import zarr
        try:
            arr = zarr.open_array(str(where), mode="r")
        except Exception as exc:  # zarr raises many types for a damaged store
            raise DataError(f"{where}: cannot read array ({exc})") from exc
        lead = arr.ndim - 3  # OME-Zarr's t, c axes, of one each
        if lead < 0 or any(n != 1 for n in arr.shape[:lead]):
            raise DataError(f"{where}: expected a 3-D (z,y,x) array, got {arr.shape}")
        warn_missing_chunks(where, arr)
        return Level(path=path, where=where, run=run, voxel_size_A=voxel_size_A,
                     origin_A=origin_A, shape_zyx=tuple(arr.shape[lead:]), array=arr)

    def read_tomogram(self, run: str, voxel_spacing_A: float = 10.0,
                      tomo_type: str = "denoised", scale: int = 0,
                      check_finite: bool = True, bin_factor: int = 1) -> Tomogram:
        """One level of a tomogram as float32 (z, y, x), with its voxel size and origin from
        the multiscales. `bin_factor` k > 1: mean-binned k×k×k as it is read, a few sections
        at a time (a trailing remainder dropped), so a level too large for memory at float32
        reads in the memory of its binned copy; voxel size and origin are the binned ones."""
        level = self.open_level(run, voxel_spacing_A, tomo_type, scale)
        k = int(bin_factor)
        data = level.read_binned(k, check_finite)
        return Tomogram(data=data, voxel_size_A=level.voxel_size_A * k, path=level.path,
                        run=run, origin_A=level.binned_origin_A(k))

    # -- writing ------------------------------------------------------------------------
    def write_tomogram(self, run: str, data_zyx: np.ndarray, voxel_size_A: float = 10.012,
                       tomo_type: str = "denoised", voxel_spacing_A: float = 10.0, *,
                       n_levels: int = 3, dtype=np.float32, origin_A: float = 0.0,
                       extra_attrs: dict | None = None,
                       chunks_zyx: tuple[int, int, int] = (64, 128, 128)) -> Path:
        d = self.static_root / RUNS_DIR / validate_run_name(run) / voxel_spacing_dirname(
            voxel_spacing_A)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{tomo_type}.zarr"
        with atomic_path(path) as tmp:
            write_ome_zarr(tmp, data_zyx, voxel_size_A, n_levels, dtype, origin_A, extra_attrs,
                           chunks_zyx)
        return path

    def config_over(self, dest: str | Path, particles: ParticleTable, name: str,
                    truth_user: str | None = None) -> CopickProject:
        """Another view of this project's runs: a copick config at `dest`/copick_config.json
        over its tomograms (its static root) listing `particles`, with an overlay of its
        own in `dest`/overlay for other picks. Nothing is copied, nothing written here."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        config = dest / "copick_config.json"
        atomic_write_text(config, json.dumps(copick_config(
            name, particles, self.static_root, dest / "overlay"), indent=2))
        return CopickProject(config, truth_user=truth_user)

    def write_config(self, name: str = "sparse-det project") -> Path:
        path = self.path / "copick_config.json"
        atomic_write_text(path, json.dumps(copick_config(
            name, self.particles, self.static_root, self.overlay_root), indent=2))
        return path


def copy_without_tomograms(src: CopickProject, dest: Path) -> CopickProject:
    """`src` copied to `dest` (replacing it) but for its tomograms: the config, picks and
    overlay, with an empty static tree to write rewritten tomograms into (a project's
    variants, as the benches make them). For projects whose static tree is `static/`."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src.path, dest, ignore=shutil.ignore_patterns("static"))
    (dest / "static").mkdir()
    return CopickProject(dest)
