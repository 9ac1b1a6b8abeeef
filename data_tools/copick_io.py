"""The one data-access module for the copick filesystem layout. Nobody else globs paths.

Layout (as the competition ships it; docs/formats.md):
    <static>/ExperimentRuns/<run>/VoxelSpacing10.000/<type>.zarr    OME-Zarr multiscale, z,y,x
        (0.4 in zarr v2 as shipped; 0.5 in zarr v3 is read too)
    <overlay>/ExperimentRuns/<run>/Picks/<particle>.json             competition naming
    <overlay>/ExperimentRuns/<run>/Picks/<user>_<session>_<particle>.json   copick naming
Pick locations are x,y,z in Å; arrays are z,y,x. `picks_to_zyx_vox` / `zyx_vox_to_xyz_A`
are the only conversions between the two. What an OME-Zarr group says of its levels is read
in data_tools/ome_zarr.py, and a level's voxels in data_tools/zarr_levels.py: this module
finds the files, those two read them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np

from data_tools.atomic import TMP_MARK, atomic_path, atomic_write_text
from data_tools.copick_files import (
    RUNS_DIR,
    copick_config,
    picks_json,
    read_picks_json,
    roots_from_config,
)
from data_tools.datasets import making_hint
from data_tools.ome_zarr import missing_chunks, multiscale_levels, unit_given, write_ome_zarr
from data_tools.particles import DataError, ParticleTable
from data_tools.run_names import validate_run_name
from data_tools.zarr_levels import Level, Tomogram

# copick keeps per-voxel feature maps of a tomogram beside it: <type>_<feature>_features.zarr
FEATURES = "_features.zarr"
log = logging.getLogger(__name__)
GT_USER, GT_SESSION = "curation", "0"
# copick's own convention (CopickPicks.from_tool): session "0" is a tool's output, any other
# session a person's. infer writes its picks as session 0, so they are never read as truth.
TOOL_SESSION = "0"
# A run's particles whose picks are some of its copies, not all: one name a line, in the run's
# folder (copick reads only its own subfolders there).
PARTLY_PICKED = "sparse-det-partly-picked.txt"
_SAID_UNANNOTATED: set[tuple[str, str, tuple[str, ...]]] = set()  # annotated_runs' warnings


def parse_truth_user(spec: str | None, flag: str = "--truth-user"
                     ) -> tuple[str | None, str | None]:
    """"USER" or "USER:SESSION" (copick's picks file names: USER_SESSION_PARTICLE.json) ->
    (user, session or None); None or "" -> (None, None). `flag` names it in the error."""
    if not spec:
        return None, None
    user, _, session = spec.partition(":")
    check_picks_name(user, "user", f"{flag} {spec!r}")
    if session:
        check_picks_name(session, "session", f"{flag} {spec!r}")
    return user, session or None


def check_picks_name(name: str, what: str, where: str) -> str:
    """A picks user or session id as copick's file names can hold it: an underscore would
    split USER_SESSION_PARTICLE.json in the wrong place, and the picks would read as another
    user's or another particle's. `where` names the flag or call in the error."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9.\-]+", name):
        raise DataError(f"{where}: the {what} must be letters, digits, '.' or '-', got "
                        f"{name!r} (copick names picks USER_SESSION_PARTICLE.json)")
    return name


def scoring_truth(truth: dict[str, np.ndarray], unknown: list[str]
                  ) -> dict[str, np.ndarray]:
    """CopickProject.training_truth's picks less the particles a background voxel may also
    be: what scoring reads (CopickProject.read_truth)."""
    return {k: v for k, v in truth.items() if k not in unknown}


def add_truth_user_argument(ap) -> None:
    """--truth-user, for every command that reads ground-truth picks."""
    ap.add_argument("--truth-user", metavar="USER[:SESSION]",
                    help="whose picks are the ground truth (default: the 'curation' user's, "
                         "else those people made, each particle one user's; never a "
                         "tool's, session 0)")


def _ours(path: Path) -> bool:
    """Not a temporary name of this project's writers, nor hidden: hidden files and folders
    are other tools' (Jupyter's .ipynb_checkpoints, macOS's ._<name> beside each file on a
    shared drive)."""
    return TMP_MARK not in path.name and not path.name.startswith(".")


def voxel_spacing_dirname(voxel_spacing_A: float) -> str:
    return f"VoxelSpacing{voxel_spacing_A:.3f}"


def xyz_A_to_zyx_vox(points_xyz_A: np.ndarray, voxel_size_A: float,
                     origin_A: float = 0.0) -> np.ndarray:
    """[N,3] x,y,z in Å → [N,3] z,y,x in (fractional) voxel indices.

    origin_A is where voxel 0's centre lies: 0 at full resolution; a 2x mean-binned level's
    voxel 0 covers full-resolution voxels 0 and 1, so its centre lies at 0.5 full voxels."""
    pts = np.asarray(points_xyz_A, dtype=np.float64).reshape(-1, 3)
    return (pts[:, ::-1] - origin_A) / voxel_size_A


def zyx_vox_to_xyz_A(points_zyx_vox: np.ndarray, voxel_size_A: float,
                     origin_A: float = 0.0) -> np.ndarray:
    """[N,3] z,y,x voxel indices → [N,3] x,y,z in Å (inverse of xyz_A_to_zyx_vox)."""
    pts = np.asarray(points_zyx_vox, dtype=np.float64).reshape(-1, 3)
    return pts[:, ::-1] * voxel_size_A + origin_A


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


class CopickProject:
    """A copick filesystem project: a folder with static/ and overlay/, a folder holding
    ExperimentRuns/ directly (the competition's test/static), or a copick config JSON."""

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
                names.update(p.name for p in d.iterdir() if p.is_dir() and _ours(p))
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
                if not _ours(p):
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
                         if _ours(p) and not p.name.endswith(FEATURES))
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
        return _levels(self.tomogram_path(run, voxel_spacing_A, tomo_type), voxel_spacing_A)

    def open_level(self, run: str, voxel_spacing_A: float = 10.0,
                   tomo_type: str = "denoised", scale: int = 0) -> Level:
        """One level of a tomogram, opened to be read a few z-sections at a time."""
        path = self.tomogram_path(run, voxel_spacing_A, tomo_type)
        levels = _levels(path, voxel_spacing_A)
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
        _warn_missing_chunks(where, arr)
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

    # -- picks --------------------------------------------------------------------------
    def picks_files(self, run: str) -> list[tuple[Path, str, str, str]]:
        """[(path, particle, user_id, session_id)] of the run's `Picks/` in the overlay and,
        as copick reads them (read-only picks a facility shares), in the static root; a file
        of the same name in the overlay shadows the static one. A bare `<particle>.json`
        counts as curation/0."""
        found: dict[str, Path] = {}
        for overlay in (False, True):  # the overlay's last: it shadows
            d = self.run_dir(run, overlay=overlay, must_exist=False) / "Picks"
            for p in d.glob("*.json") if d.is_dir() else []:
                found[p.name] = p
        out = []
        for p in (found[name] for name in sorted(found)):
            if not _ours(p):
                continue
            stem = p.stem
            if stem in self.particles:
                out.append((p, stem, GT_USER, GT_SESSION))
                continue
            parts = stem.split("_", 2)
            if len(parts) == 3:
                out.append((p, parts[2], parts[0], parts[1]))
            else:
                out.append((p, stem, GT_USER, GT_SESSION))
        return out

    def truth_files(self, run: str) -> list[tuple[Path, str, str, str]]:
        """The picks files read as the run's ground truth. With `truth_user` set, that user's
        (that session's). Else the curation user's (and bare-named ones, as the competition
        ships them); where there are none, the picks people made (copick: a session other
        than "0"), each particle from one user and session — one particle picked in two
        (two annotators, or two passes) is not merged silently. Tools' picks (session "0":
        infer's own, by default) are never truth."""
        files = self.picks_files(run)
        if self.truth_user is not None:
            return [f for f in files if f[2] == self.truth_user
                    and self.truth_session in (None, f[3])]
        curated = [f for f in files if f[2] == GT_USER]
        if curated:
            return curated
        people = [f for f in files if f[3] != TOOL_SESSION]
        by_particle: dict[str, set[str]] = {}
        for _, particle, user, session in people:
            by_particle.setdefault(particle, set()).add(f"{user}:{session}")
        for particle, who in sorted(by_particle.items()):
            if len(who) > 1:
                raise DataError(
                    f"run {run!r}: {particle} picked by several annotators or sessions "
                    f"({', '.join(sorted(who))}) and none by 'curation'; name the one to "
                    "read as ground truth with --truth-user USER[:SESSION]")
        return people

    def annotated_runs(self, runs: list[str] | None = None) -> list[str]:
        """Those of `runs` (default: every run) that have ground-truth picks files (truth_files;
        an empty one counts: a run with none of that particle). The others — a tool's picks
        alone, or none — are no truth to train, tune or fit on: a run read as having no
        particles would teach that its particles are background. Each is logged."""
        annotated = []
        for r in self.runs() if runs is None else runs:
            files = self.truth_files(r)
            if not files:
                other = self.untrusted_picks(r)
                log.info("left out: %s (no annotations%s)", r,
                         f"; not read as truth: {', '.join(other)}" if other else "")
                continue
            annotated.append(r)
            missing = self._without_file(files)
            said = (str(self.path.resolve()), r, tuple(missing))
            if missing and said not in _SAID_UNANNOTATED:  # once: finetune asks per fold
                _SAID_UNANNOTATED.add(said)
                log.warning("%s: no picks file of %s: not annotated there, so neither "
                            "scored there nor trained as background (an empty picks file "
                            "says a run has none)", r, ", ".join(missing))
        return annotated

    def unannotated_particles(self, run: str) -> list[str]:
        """The table's particles the run's ground truth has no file of: not annotated there
        (read_truth leaves them out). An empty file is an annotation: none there. None where
        the run has no ground truth at all."""
        return self._without_file(self.truth_files(run))

    def _without_file(self, truth_files: list) -> list[str]:
        have = {f[1] for f in truth_files}
        return [p for p in self.particles.names if p not in have] if have else []

    def untrusted_picks(self, run: str) -> list[str]:
        """"USER_SESSION" of the run's picks files that truth_files does not read."""
        truth = {f[0] for f in self.truth_files(run)}
        return sorted({f"{f[2]}_{f[3]}" for f in self.picks_files(run) if f[0] not in truth})

    def read_picks(self, run: str, user_id: str | None = None,
                   session_id: str | None = None) -> dict[str, np.ndarray]:
        """Picks per particle as [N,3] x,y,z Å (every table particle present, maybe empty).

        With no user_id, the ground truth (truth_files); else that user's picks.
        """
        self.run_dir(run)
        if user_id is None:
            files = self.truth_files(run)
        else:
            files = [f for f in self.picks_files(run) if f[2] == user_id]
        if session_id is not None:
            files = [f for f in files if f[3] == session_id]
        out = {name: np.zeros((0, 3)) for name in self.particles.names}
        for path, particle, _, _ in files:
            name, pts = read_picks_json(path)
            name = name or particle
            if name not in self.particles:
                raise DataError(f"{path}: unknown particle {name!r}; known: "
                                f"{', '.join(self.particles.names)}")
            out[name] = np.concatenate([out[name], pts]) if len(out[name]) else pts
        return out

    def read_truth(self, run: str) -> dict[str, np.ndarray]:
        """The run's ground truth for scoring: read_picks' less the particles it does not
        annotate (unannotated_particles) or picked in part (partly_picked). A particle
        absent here is unknown in this run: scoring skips it there. Why: a user who
        annotates only ribosomes in a run has not said there are no apo-ferritins; read as
        none, every apo-ferritin found there counted as a false positive."""
        return scoring_truth(*self.training_truth(run))

    def training_truth(self, run: str) -> tuple[dict[str, np.ndarray], list[str]]:
        """(the picks training learns as particles: read_picks' less the unannotated
        particles, the particles a background voxel may also be: the unannotated and the
        partly picked ones). Read as background, their unpicked copies taught the network
        that they are background (bench/partial_labels.py)."""
        truth, unknown = self.read_picks(run), self.unannotated_particles(run)
        for name in unknown:
            del truth[name]
        self._warn_picks_outside(run, truth)
        return truth, unknown + [p for p in self.partly_picked(run) if p not in unknown]

    def tomogram_extent_A(self, run: str) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(lowest x,y,z Å, highest x,y,z Å, level 0's voxel Å) that the run's tomograms
        cover (voxel edges, every type and spacing folder, from their metadata); None where
        it has none that reads."""
        lo, hi, vox = None, None, 0.0
        for vs in self.voxel_spacings(run):
            for t in self.tomogram_types(run, vs):
                try:
                    _, v, shape, origin = self.tomogram_scales(run, vs, t)[0]
                except DataError:  # reading it says why; the extent makes do without it
                    continue
                a = np.full(3, origin - v / 2)
                b = origin + (np.array(shape[::-1], float) - 0.5) * v
                lo, hi = (a, b) if lo is None else (np.minimum(lo, a), np.maximum(hi, b))
                vox = vox or v
        return None if lo is None else (lo, hi, vox)

    def picks_outside(self, run: str, picks: dict[str, np.ndarray],
                      extent: tuple | None = None) -> dict[str, int]:
        """{particle: how many of its picks lie beyond the run's tomograms (`extent`, when
        the caller has it: tomogram_extent_A) by more than its radius}, those with any."""
        extent = extent or self.tomogram_extent_A(run)
        if extent is None:
            return {}
        lo, hi, _ = extent
        out = {}
        for name, pts in picks.items():
            r = self.particles[name].radius_A
            n = int(np.sum(np.any((pts < lo - r) | (pts > hi + r), axis=1))) if len(pts) else 0
            if n:
                out[name] = n
        return out

    def _warn_picks_outside(self, run: str, picks: dict[str, np.ndarray]) -> None:
        """A warning where a run's picks cannot be where its tomograms are (checked once per
        run and process): copick's picks are in Å, and picks saved in pixels or nm (the
        field's most reported mix-up) would train and score as particles nobody can find
        (picks_misplaced)."""
        key = (str(self.static_root), run)
        if key in _SAID_OUTSIDE:  # checked in this process already
            return
        _SAID_OUTSIDE.add(key)
        said = self.picks_misplaced(run, picks)
        if said:
            log.warning("run %r: %s", run, said)

    def picks_misplaced(self, run: str, picks: dict[str, np.ndarray]) -> str | None:
        """Why the run's picks cannot be in Å of its tomograms, or None: some lie beyond
        them by more than the particle's radius, or at least MISPLACED_MIN_PICKS of them all
        lie in the corner that pixels of its voxels (or nm) read as Å would fill."""
        extent = self.tomogram_extent_A(run)
        have = [p for p in picks.values() if len(p)]
        if extent is None or not have:
            return None
        lo, hi, vox = extent
        where = (f"(x, y, z from {np.round(lo).astype(int).tolist()} to "
                 f"{np.round(hi).astype(int).tolist()} Å)")
        outside = self.picks_outside(run, picks, extent)
        if outside:
            return (f"picks beyond its tomogram {where} by more than the particle's radius: "
                    + ", ".join(f"{n} of {len(picks[k])} {k}" for k, n in outside.items())
                    + "; copick picks are in Å")
        pts = np.concatenate(have)
        if len(pts) < MISPLACED_MIN_PICKS:
            return None
        fits = [(f, unit) for f, unit in ((vox, f"pixels of its {vox:g} Å voxels"),
                                          (10.0, "nm"))
                if f >= 4 and np.all(pts <= hi / f + vox)]
        if not fits:
            return None
        return (f"all {len(pts)} picks lie in the first 1/{fits[0][0]:g} of its tomogram "
                f"{where} along every axis (a voxel's slack), where "
                + " or ".join(unit for _, unit in fits) + " read as Å would put them; copick "
                "picks are in Å: " + ", ".join(f"× {f:g} if they are {unit}"
                                                for f, unit in fits))

    def partly_picked(self, run: str) -> list[str]:
        """The particles whose picks in this run are some of its copies, not all, as the
        run's PARTLY_PICKED file lists them (mark_partly_picked; overlay and static root);
        only those the run's ground truth has a file of."""
        names: set[str] = set()
        for overlay in (False, True):
            names |= set(self._listed(self.run_dir(run, overlay=overlay, must_exist=False)
                                      / PARTLY_PICKED))
        have = {f[1] for f in self.truth_files(run)} if names else set()
        return [p for p in self.particles.names if p in names and p in have]

    def mark_partly_picked(self, run: str, particles: list[str]) -> Path:
        """Adds `particles` to the run's PARTLY_PICKED file (in the overlay)."""
        for p in particles:
            self.particles[p]
        path = self.run_dir(run, overlay=True, must_exist=False) / PARTLY_PICKED
        path.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(set(particles) | set(self._listed(path)))
        atomic_write_text(path, "# particles picked in part in this run (sparse-det)\n"
                          + "".join(f"{n}\n" for n in names))
        return path

    def _listed(self, path: Path) -> list[str]:
        if not path.is_file():
            return []
        names = [ln.strip() for ln in path.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        if unknown := sorted(set(names) - set(self.particles.names)):
            raise DataError(f"{path}: unknown particles {unknown}; known: "
                            f"{', '.join(self.particles.names)}")
        return names

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

    def write_picks(self, run: str, particle: str, points_xyz_A: np.ndarray,
                    user_id: str = GT_USER, session_id: str = GT_SESSION,
                    scores: np.ndarray | None = None) -> Path:
        self.particles[particle]
        check_picks_name(user_id, "user", f"{self.path}: picks of {run}")
        check_picks_name(session_id, "session", f"{self.path}: picks of {run}")
        d = self.run_dir(run, overlay=True, must_exist=False) / "Picks"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{user_id}_{session_id}_{particle}.json"
        atomic_write_text(path, json.dumps(
            picks_json(run, particle, points_xyz_A, user_id, session_id, scores)))
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


# A genuine annotation fills its tomogram; this many picks, all in one corner, do not.
MISPLACED_MIN_PICKS = 10
_SAID_OUTSIDE: set[tuple[str, str]] = set()  # (static root, run) whose picks were checked
_WARNED_UNSET: set[Path] = set()  # tomograms whose unset scale was logged once
_WARNED_MISSING: set[Path] = set()  # arrays whose absent chunks were logged once


def _levels(path: Path, folder_A: float) -> list[tuple[str, float, tuple[int, ...], float]]:
    """The tomogram's levels (ome_zarr.multiscale_levels), in the folder's voxel spacing where
    the multiscale gives none (scale 1, no unit: what writers leave when no voxel size was
    given), with a warning once; 1 Å voxels would read 10-20x too fine."""
    levels = multiscale_levels(path)
    if (folder_A > 1.5 and levels and math.isclose(levels[0][1], 1.0)
            and not unit_given(path)):
        if path not in _WARNED_UNSET:
            _WARNED_UNSET.add(path)
            log.warning("%s: level 0's scale is 1 with no unit (no voxel size given): read at "
                        "its folder's %g Å", path, folder_A)
        levels = [(where, size * folder_A, shape, origin * folder_A)
                  for where, size, shape, origin in levels]
    return levels


def _warn_missing_chunks(where: Path, arr) -> None:
    """A warning, once per array, where chunk files of a level about to be read are absent:
    zarr fills them with the fill value without a word, and an interrupted download then
    reads as blocks of one value, whose particles nobody finds."""
    if where in _WARNED_MISSING:
        return
    counted = missing_chunks(where)
    if not counted or not counted[0]:
        return
    _WARNED_MISSING.add(where)
    log.warning("%s: %d of %d chunk files are not on disk and read as the fill value (%s): "
                "an incomplete copy (an interrupted download) loses whatever they held; "
                "fetch the tomogram again unless its writer skipped chunks of that value "
                "on purpose", where, counted[0], counted[1], arr.fill_value)


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
