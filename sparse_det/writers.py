"""Everything the picker writes, each file written atomically (temp name, then rename):

- the competition submission CSV `id,experiment,particle_type,x,y,z` (Å), and the same
  format read back for scoring (read_submission, project_solution);
- copick picks in a project's overlay, one `USER_SESSION_PARTICLE.json` per run and class;
- RELION-style STAR files, one per run, block `data_particles`: _rlnTomoName and
  _rlnMicrographName (the run; RELION 5 reads the first, Warp/M the second),
  _rlnCoordinateX/Y/Z in pixels of the tomogram's finest level (0 at the centre of voxel
  0, copick's convention) or, for a run imported from an MRC file, of that file
  (PixelFrame; see data_tools/source_frame.py), _rlnCenteredCoordinateX/Y/ZAngst (RELION
  5's coordinates, which it reads where both are present: Å from the centre of the
  tomogram the picker read, (pixel − size / 2) × voxel size as RELION 5 turns them back
  into pixels; in that tomogram's axes, z along the beam, also for a run imported from
  IMOD's thin-in-y file, since RELION's tomograms are so), _rlnDetectorPixelSize (Å),
  _rlnClassNumber (1-based index
  into the particle table, listed in the header comment), _rlnAutopickFigureOfMerit (the
  detector's score) and _sparseDetParticleType (the class name; RELION warns about and
  ignores labels it does not know);
- IMOD models (`RUN.mod`), one scattered-point object per particle drawn at its radius,
  in the same pixels as the STAR files (data_tools/imod_model.py), to open over the MRC
  in 3dmod, correct, and read back with `import_picks`.
- Dynamo tables (`PARTICLE.tbl`, all runs in each, 35 columns of Dynamo's table
  convention) in the same pixels, with their table map `tomograms.doc` (a run's index in
  column 20 → the MRC file it was imported from, else `RUN.mrc`).

Tables passed in have DETECTION_COLUMNS (sparse_det/structures.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_tools.atomic import atomic_write_text, writable_dir
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.truth_user import GT_USER

SUBMISSION_COLUMNS = ["id", "experiment", "particle_type", "x", "y", "z"]


def read_submission(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc
    missing = [c for c in SUBMISSION_COLUMNS[1:] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {SUBMISSION_COLUMNS}")
    try:
        xyz = df[["x", "y", "z"]].apply(pd.to_numeric).to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: x/y/z must be numbers in Å ({exc})") from exc
    if not np.isfinite(xyz).all():
        raise DataError(f"{path}: x/y/z must be finite numbers (Å)")
    df[["x", "y", "z"]] = xyz
    df["experiment"] = df["experiment"].astype(str)
    return df


def to_submission(rows: pd.DataFrame) -> pd.DataFrame:
    """Orders columns and numbers the rows from 0."""
    df = rows[["experiment", "particle_type", "x", "y", "z"]].reset_index(drop=True)
    df.insert(0, "id", np.arange(len(df)))
    return df


def write_submission(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    buf = io.StringIO()
    df[SUBMISSION_COLUMNS].to_csv(buf, index=False, float_format="%.3f")
    atomic_write_text(path, buf.getvalue())
    return path


def project_solution(project: CopickProject, runs: list[str] | None = None) -> pd.DataFrame:
    """The ground-truth picks of a project as a solution table (of the particles each run
    annotates: CopickProject.read_truth)."""
    rows = []
    for run in project.runs() if runs is None else runs:
        for name, pts in project.read_truth(run).items():
            rows += [(run, name, *xyz) for xyz in pts]
    return to_submission(pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y",
                                                     "z"]))


STAR_LABELS = ["rlnTomoName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
               "rlnCoordinateZ", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
               "rlnCenteredCoordinateZAngst", "rlnDetectorPixelSize", "rlnClassNumber",
               "rlnAutopickFigureOfMerit", "sparseDetParticleType"]


@dataclass(frozen=True)
class PixelFrame:
    """The pixels a run's STAR coordinates are in: `pixel_size_A`, `to_px` ((N, 3) x, y, z
    in Å → pixels) and `from_px` (its inverse), a note for the header saying whose pixels
    they are, `centre_xyz_A`, the Å position RELION 5's centred coordinates are taken
    from (see tomogram_centre_A), and `shape_xyz`, the size in those pixels of the image
    they are of."""

    pixel_size_A: float
    to_px: Callable[[np.ndarray], np.ndarray]
    note: str
    centre_xyz_A: tuple[float, float, float]
    from_px: Callable[[np.ndarray], np.ndarray]
    shape_xyz: tuple[int, ...]
    source_file: str = ""  # the MRC file a run was imported from, where it was

    @classmethod
    def of_project(cls, pixel_size_A: float, shape_zyx: tuple[int, ...],
                   origin_A: float = 0.0) -> PixelFrame:
        return cls(pixel_size_A,
                   lambda xyz_A: (np.asarray(xyz_A, dtype=float) - origin_A) / pixel_size_A,
                   f"pixels of {pixel_size_A:.4f} Å of the project's tomogram",
                   tomogram_centre_A(pixel_size_A, shape_zyx, origin_A),
                   lambda px: np.asarray(px, dtype=float) * pixel_size_A + origin_A,
                   tuple(shape_zyx[::-1]))

    def centred_A(self, xyz_A: np.ndarray) -> np.ndarray:
        return np.asarray(xyz_A, dtype=float) - np.asarray(self.centre_xyz_A)

    def from_centred_A(self, centred_A: np.ndarray) -> np.ndarray:
        return np.asarray(centred_A, dtype=float) + np.asarray(self.centre_xyz_A)


def tomogram_centre_A(voxel_A: float, shape_zyx: tuple[int, ...], origin_A: float = 0.0
                      ) -> tuple[float, float, float]:
    """Where RELION 5 puts a tomogram's centre, in the Å of our picks: size × voxel size / 2
    along each axis from voxel 0's centre (its getParticleCoordDecenteredPixel: pixel =
    centred Å / pixel size + size / 2, pixel 0 at the first voxel's centre)."""
    return tuple(origin_A + n * voxel_A / 2 for n in shape_zyx[::-1])


def run_pixel_frame(project: CopickProject, run: str, sparsify, source: bool = True
                    ) -> PixelFrame:
    """The pixels a run's STAR file uses: those of the file the tomogram the picker reads
    was imported from (its `.zattrs` record, when `source` and there is one), else those
    of that tomogram's finest level. `sparsify`: the settings it is read with."""
    from data_tools.source_frame import read_source_frame
    from data_tools.sparsify import full_resolution_source

    s = full_resolution_source(project, run, sparsify)
    imported = read_source_frame(project.tomogram_path(run, s.folder_spacing_A, s.tomo_type))
    if not (source and imported):
        return PixelFrame.of_project(s.voxel_size_A, s.shape_zyx, s.origin_A)
    how = [f"binned {imported.bin}x"] * (imported.bin > 1) + (
        ["rotated -90 deg about x"] if imported.rotated_about_x else [])
    return PixelFrame(
        imported.pixel_size_A,
        lambda xyz_A: imported.to_source_px(xyz_A, s.voxel_size_A, s.origin_A),
        f"pixels of {imported.pixel_size_A:.4f} Å of {imported.file}"
        + (f" (the import {' and '.join(how)}, undone)" if how else ""),
        tomogram_centre_A(s.voxel_size_A, s.shape_zyx, s.origin_A),
        lambda px: imported.from_source_px(px, s.voxel_size_A, s.origin_A),
        tuple(imported.shape_zyx[::-1]), imported.file)


def star_text(run: str, rows: pd.DataFrame, frame: PixelFrame, particles: ParticleTable
              ) -> str:
    """One run's picks (rows with particle_type, x, y, z in Å, score) as a STAR file, in
    `frame`'s pixels."""
    classes = "  ".join(f"{i + 1}={p.name}" for i, p in enumerate(particles))
    lines = [f"# written by sparse-det; coordinates in {frame.note}; classes: {classes}", "",
             "data_particles", "", "loop_"]
    lines += [f"_{label} #{i + 1}" for i, label in enumerate(STAR_LABELS)]
    xyz_A = rows[["x", "y", "z"]].to_numpy(dtype=float).reshape(-1, 3)
    for r, (x, y, z), (cx, cy, cz) in zip(rows.itertuples(index=False), frame.to_px(xyz_A),
                                          frame.centred_A(xyz_A), strict=True):
        lines.append(f"{run}\t{run}\t{x:.3f}\t{y:.3f}\t{z:.3f}\t{cx:.2f}\t{cy:.2f}\t{cz:.2f}\t"
                     f"{frame.pixel_size_A:.4f}\t"
                     f"{particles.class_index(r.particle_type)}\t{float(r.score):.5f}\t"
                     f"{r.particle_type}")
    return "\n".join(lines) + "\n"


def write_star_files(out_dir: str | Path, rows: pd.DataFrame, *, runs: list[str],
                     frames: dict[str, PixelFrame],
                     particles: ParticleTable) -> list[Path]:
    """`<out_dir>/<run>.star` for every run, an empty loop where nothing was found;
    `frames`: each run's PixelFrame (run_pixel_frame)."""
    out_dir = writable_dir(out_dir)
    paths = []
    for run in runs:
        path = out_dir / f"{run}.star"
        atomic_write_text(path, star_text(run, rows[rows["experiment"] == run],
                                          frames[run], particles))
        paths.append(path)
    return paths


def write_imod_files(out_dir: str | Path, rows: pd.DataFrame, *, runs: list[str],
                     frames: dict[str, PixelFrame], particles: ParticleTable) -> list[Path]:
    """`<out_dir>/<run>.mod` for every run: an object per particle (empty where none was
    found), each point's score its value, in each run's PixelFrame (run_pixel_frame)."""
    from data_tools.imod_model import PointSet, write_imod_model

    out_dir = writable_dir(out_dir)
    paths = []
    for run in runs:
        mine, frame = rows[rows["experiment"] == run], frames[run]
        objects = []
        for p in particles:
            sel = mine[mine["particle_type"] == p.name]
            objects.append(PointSet(
                p.name, frame.to_px(sel[["x", "y", "z"]].to_numpy(dtype=float).reshape(-1, 3)),
                p.radius_A / frame.pixel_size_A, tuple(c / 255 for c in p.color[:3]),
                sel["score"].to_numpy(dtype=float)))
        paths.append(write_imod_model(out_dir / f"{run}.mod", objects,
                                      shape_xyz=frame.shape_xyz,
                                      pixel_size_A=frame.pixel_size_A))
    return paths


# Dynamo's table convention (1-based columns): tag, aligned, averaged, dx..dz, the three
# Euler angles, cc, ..., ftype and the wedge's tilt ranges, ..., tomo (20), reg, class (22),
# annotation, x, y, z (24-26) in pixels, ... up to sref (35).
DYNAMO_COLUMNS = 35


def dynamo_table_text(rows: pd.DataFrame, frames: dict[str, PixelFrame],
                      tomo_index: dict[str, int], class_index: int) -> str:
    """Picks of one particle (rows with experiment, x, y, z in Å, score) as a Dynamo table:
    a row each, tagged from 1, at each run's pixels (`frames`, as the STAR files'), with
    its tomogram's index (`tomo_index`), `class_index` and its score as cc; angles and the
    shift are 0, and the wedge (ftype 0, full) is left for the user to set."""
    lines = []
    for tag, r in enumerate(rows.itertuples(index=False), start=1):
        x, y, z = frames[r.experiment].to_px(np.array([[r.x, r.y, r.z]], dtype=float))[0]
        col = [0.0] * DYNAMO_COLUMNS
        col[0], col[1], col[2], col[9] = tag, 1, 1, float(r.score)
        col[19], col[21], col[23:26] = tomo_index[r.experiment], class_index, [x, y, z]
        lines.append(" ".join(f"{v:.3f}" if i in (23, 24, 25) else f"{v:.5f}" if i == 9
                              else str(int(v)) for i, v in enumerate(col)))
    return "".join(f"{ln}\n" for ln in lines)


def write_dynamo_files(out_dir: str | Path, rows: pd.DataFrame, *, runs: list[str],
                       frames: dict[str, PixelFrame], particles: ParticleTable) -> list[Path]:
    """`<out_dir>/<particle>.tbl` for every particle (empty where none was found), all runs
    in each, and `<out_dir>/tomograms.doc`, the table map from each run's index (column 20,
    from 1 in the runs' order) to its tomogram: the MRC file it was imported from, else
    `RUN.mrc`, a name to point at the tomogram."""
    out_dir = writable_dir(out_dir)
    index = {run: i for i, run in enumerate(runs, start=1)}
    paths = []
    for p in particles:
        sel = rows[(rows["particle_type"] == p.name) & rows["experiment"].isin(runs)]
        path = out_dir / f"{p.name}.tbl"
        atomic_write_text(path, dynamo_table_text(sel, frames, index,
                                                  particles.class_index(p.name)))
        paths.append(path)
    doc = out_dir / "tomograms.doc"
    atomic_write_text(doc, "".join(f"{index[r]} {frames[r].source_file or r + '.mrc'}\n"
                                   for r in runs))
    return [*paths, doc]


def new_picks_folder(dest: Path) -> bool:
    """Whether `dest` becomes a new project (a missing or empty folder), not one to add to."""
    return not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))


def write_copick_picks(dest: str | Path, source: CopickProject, rows: pd.DataFrame, *,
                       runs: list[str], user_id: str, session_id: str) -> list[Path]:
    """Picks of every run and particle (an empty list where none) into `dest`'s overlay.
    `dest` is a copick project, its folder or its config JSON (the input project itself is
    fine), or a new or empty folder, which becomes a project whose config reads the
    tomograms from the source's static root."""
    if user_id == GT_USER:
        raise DataError(f"--user-id {user_id!r} is the ground-truth user: predictions would "
                        "overwrite the annotations; pick another user id")
    dest = Path(dest)
    project = (source.config_over(dest, source.particles, "sparse-det predictions")
               if new_picks_folder(dest) else CopickProject(dest, source.particles))
    writable_dir(project.overlay_root)  # a config's own overlay, not the JSON file's path
    paths = []
    for run in runs:
        mine = rows[rows["experiment"] == run]
        for p in source.particles:
            sel = mine[mine["particle_type"] == p.name]
            paths.append(project.write_picks(run, p.name, sel[["x", "y", "z"]].to_numpy(),
                                             user_id, session_id, sel["score"].to_numpy()))
    return paths
