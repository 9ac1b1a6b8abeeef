"""Other tools' picks files read into one table (experiment, particle_type, x, y, z in Å of
the project's runs): RELION/Warp STAR, Dynamo tables, IMOD models, the competition's CSV.
Where each format's positions, runs and particles come from is told in
sparse_det/import_picks.py, which writes the table into a project.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.run_names import as_run_name

log = logging.getLogger(__name__)
CENTRED = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
PIXELS = [f"rlnCoordinate{a}" for a in "XYZ"]
PIXEL_SIZES = ("rlnDetectorPixelSize", "rlnImagePixelSize", "rlnTomoTiltSeriesPixelSize")
PIXEL_TOLERANCE = 0.01
SKIP = "skip"  # --imod-object N=skip: an object that holds no particle
RUN_SUFFIXES = {".tomostar", ".mrc", ".rec", ".st", ".map", ".zarr", ".star"}
DYNAMO_SHIFT, DYNAMO_TOMO, DYNAMO_XYZ = [3, 4, 5], 19, [23, 24, 25]  # 0-based columns


def star_loops(text: str, where: str) -> list[pd.DataFrame]:
    """Every loop of a STAR file as a DataFrame of strings (labels without `_`)."""
    loops, labels, rows, in_loop = [], [], [], False

    def close():
        if labels:
            bad = [r for r in rows if len(r) != len(labels)]
            if bad:
                raise DataError(f"{where}: a row has {len(bad[0])} values for "
                                f"{len(labels)} columns: {' '.join(bad[0])}")
            loops.append(pd.DataFrame(rows, columns=labels))

    for line in (ln.strip() for ln in text.splitlines()):
        if line.startswith("data_") or line == "loop_":
            close()
            labels, rows, in_loop = [], [], line == "loop_"
        elif not line or line.startswith("#") or not in_loop:
            continue
        elif line.startswith("_"):
            if rows:  # a key after rows: the loop has ended
                close()
                labels, rows, in_loop = [], [], False
                continue
            labels.append(line.split()[0][1:])
        else:
            rows.append(line.split())
    close()
    return loops


def _as_run(name: str) -> str:
    """A STAR tomogram name as a run name: Warp's `TS_01.tomostar`, `TS_01.mrc` → `TS_01`,
    `TS 01.mrc` → `TS_01` as import_mrc names its run."""
    name = Path(name).name
    while Path(name).suffix.lower() in RUN_SUFFIXES:
        name = Path(name).stem
    return as_run_name(name)


def _run_names(df: pd.DataFrame, run: str | None, where: str) -> pd.Series:
    if run:
        return pd.Series(run, index=df.index)
    for col in ("rlnTomoName", "rlnMicrographName"):
        if col in df:
            return df[col].map(_as_run)
    raise DataError(f"{where}: no rlnTomoName or rlnMicrographName column; name the run "
                    "with --run")


def _particles(df: pd.DataFrame, particle: str | None, where: str) -> pd.Series:
    if particle:
        return pd.Series(particle, index=df.index)
    if "sparseDetParticleType" in df:
        return df["sparseDetParticleType"]
    raise DataError(f"{where}: no sparseDetParticleType column; name the particle these "
                    "picks are with --particle")


def _numbers(df: pd.DataFrame, cols: list[str], where: str) -> np.ndarray:
    try:
        return df[cols].to_numpy(dtype=float)
    except ValueError as exc:
        raise DataError(f"{where}: {', '.join(cols)} must be numbers ({exc})") from exc


def star_picks(path: Path, project: CopickProject, *, run: str | None, particle: str | None,
               frame_of) -> pd.DataFrame:
    """A STAR file's picks as rows of experiment, particle_type, x, y, z (Å of the project);
    `frame_of(run)`: the run's PixelFrame (sparse_det.writers.run_pixel_frame)."""
    where = str(path)
    try:
        loops = star_loops(path.read_text(), where)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read ({exc})") from exc
    df = next((d for d in loops if set(CENTRED) <= set(d) or set(PIXELS) <= set(d)), None)
    if df is None:
        raise DataError(f"{where}: no loop with {', '.join(CENTRED)} or {', '.join(PIXELS)}")
    out = pd.DataFrame({"experiment": _run_names(df, run, where),
                        "particle_type": _particles(df, particle, where)})
    xyz = np.zeros((len(df), 3))
    for name in out["experiment"].unique():
        rows = (out["experiment"] == name).to_numpy()
        if name not in project.runs():
            raise DataError(f"{where}: tomogram {name!r} is not a run of {project.path} "
                            f"(runs: {', '.join(project.runs()) or 'none'}); --run names it")
        frame = frame_of(name)
        if set(CENTRED) <= set(df):
            xyz[rows] = frame.from_centred_A(_numbers(df[rows], CENTRED, where))
            continue
        stated = next((c for c in PIXEL_SIZES if c in df), None)
        if stated:
            px_A = float(_numbers(df[rows], [stated], where)[0, 0])
            if abs(px_A / frame.pixel_size_A - 1) > PIXEL_TOLERANCE:
                raise DataError(
                    f"{where}: run {name!r}'s coordinates are in pixels of {px_A:g} Å, but its "
                    f"frame is {frame.note}; give --star-frame project or source, or "
                    "coordinates in Å from the centre (rlnCenteredCoordinate*Angst)")
        xyz[rows] = frame.from_px(_numbers(df[rows], PIXELS, where))
    out[["x", "y", "z"]] = xyz
    return out


def read_tomo_map(path: Path) -> dict[int, str]:
    """Dynamo's tomogram index -> run name, from a table map (`.doc`: "index path" lines)
    or a volume list (`.vll`: one path per volume, numbered from 1; `*` lines are the
    previous volume's properties)."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    lines = [ln for ln in lines if ln and not ln.startswith(("#", "*"))]
    if path.suffix.lower() == ".vll":
        return {i: _as_run(ln) for i, ln in enumerate(lines, start=1)}
    out = {}
    for ln in lines:
        parts = ln.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}: a table map line is 'index path', got {ln!r}")
        out[int(parts[0])] = _as_run(parts[1])
    return out


def dynamo_picks(path: Path, *, run: str | None, particle: str | None,
                 tomo_map: dict[int, str] | None, frame_of) -> pd.DataFrame:
    """A Dynamo table's picks as rows of experiment, particle_type, x, y, z (Å)."""
    where = str(path)
    if not particle:
        raise DataError(f"{where}: a Dynamo table's classes are its author's; name the "
                        "particle these picks are with --particle")
    try:
        table = np.loadtxt(path, ndmin=2, comments="#")
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: not a readable Dynamo table ({exc})") from exc
    if table.size and table.shape[1] < max(DYNAMO_XYZ) + 1:
        raise DataError(f"{where}: {table.shape[1]} columns; a Dynamo table has x, y, z in "
                        "columns 24-26")
    table = table.reshape(-1, max(table.shape[1], 26))
    if run:
        runs = [run] * len(table)
    elif tomo_map is None:
        raise DataError(f"{where}: name the run with --run, or give --tomo-map (the "
                        "table map .doc or volume list .vll)")
    else:
        index = [int(i) for i in table[:, DYNAMO_TOMO]]
        unknown = sorted(set(index) - set(tomo_map))
        if unknown:
            raise DataError(f"{where}: tomogram indices {unknown} are not in --tomo-map")
        runs = [tomo_map[i] for i in index]
    out = pd.DataFrame({"experiment": runs, "particle_type": particle})
    px = table[:, DYNAMO_XYZ] + table[:, DYNAMO_SHIFT]
    xyz = np.zeros((len(table), 3))
    for name in out["experiment"].unique():
        rows = (out["experiment"] == name).to_numpy()
        xyz[rows] = frame_of(name).from_px(px[rows])
    out[["x", "y", "z"]] = xyz
    return out


def _object_particle(obj, particle: str | None, object_map: dict[int, str],
                     particles: ParticleTable) -> str | None:
    """The particle an IMOD object holds: None where it is skipped, "" where nothing
    names one."""
    if obj.number in object_map:
        return None if object_map[obj.number] == SKIP else object_map[obj.number]
    if particle:
        return particle
    return particles.called(obj.name) or ""


def imod_picks(path: Path, *, run: str | None, particle: str | None,
               object_map: dict[int, str], particles: ParticleTable, frame_of
               ) -> pd.DataFrame:
    """An IMOD model's picks as rows of experiment, particle_type, x, y, z (Å);
    `particles`: the project's, which objects are matched to by name (ParticleTable.called:
    objects named "Ribosome", "80S" or "ribosomes" hold a table's "ribosome")."""
    from data_tools.imod_model import read_imod_model

    model = read_imod_model(path)
    unknown = sorted(set(object_map) - {o.number for o in model.objects})
    if unknown:
        raise DataError(f"{path}: --imod-object numbers {unknown} are not objects of the "
                        f"model (it has {len(model.objects)})")
    name = run or _as_run(path.stem)
    frame = frame_of(name)
    if model.pixel_size_A and abs(model.pixel_size_A / frame.pixel_size_A - 1) > PIXEL_TOLERANCE:
        raise DataError(f"{path}: the model was made on an image of {model.pixel_size_A:g} Å "
                        f"pixels, but run {name!r}'s frame is {frame.note}; mark it on that "
                        "file, or give --star-frame project or source")
    rows, unnamed = [], []
    for obj in (o for o in model.objects if len(o.points_px)):
        kind = _object_particle(obj, particle, object_map, particles)
        if kind == "":
            unnamed.append(f"{obj.number} ({obj.name or 'no name'}, {len(obj.points_px)} "
                           "points)")
        elif kind:
            rows += [(name, kind, *xyz) for xyz in frame.from_px(obj.points_px)]
    if not any(len(o.points_px) for o in model.objects):
        log.warning("%s: the model holds no points", path)
    if unnamed:
        raise DataError(f"{path}: objects {'; '.join(unnamed)} are named after no particle "
                        f"of the project ({', '.join(particles.names)}); name them with "
                        "--imod-object N=NAME (N=skip leaves one out) or --particle")
    return pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y", "z"])


def csv_picks(path: Path) -> pd.DataFrame:
    from sparse_det.writers import read_submission

    return read_submission(path)[["experiment", "particle_type", "x", "y", "z"]]


def read_picks_file(p: Path, project: CopickProject, run: str | None, particle: str | None,
               tomo_map: str | None, frame_of, object_map: dict[int, str]) -> pd.DataFrame:
    if p.suffix.lower() == ".mod":
        return imod_picks(p, run=run, particle=particle, object_map=object_map,
                          particles=project.particles, frame_of=frame_of)
    if p.suffix.lower() == ".star":
        return star_picks(p, project, run=run, particle=particle, frame_of=frame_of)
    if p.suffix.lower() == ".tbl":
        return dynamo_picks(p, run=run, particle=particle, frame_of=frame_of,
                            tomo_map=read_tomo_map(Path(tomo_map)) if tomo_map else None)
    if p.suffix.lower() == ".csv":
        return csv_picks(p)
    raise DataError(f"{p}: not a .star, .tbl, .mod or .csv file")
