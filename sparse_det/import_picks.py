"""Annotations made in other tools into a copick project, as a person's picks that
finetune, tune and evaluate read as the ground truth (README, *Your own annotations*).

    python -m sparse_det.import_picks FILE [FILE ...] --project PROJECT --user-id NAME
        [--session-id 1] [--particle NAME] [--run RUN] [--star-frame source|project]
        [--tomo-map MAP.doc|.vll] [--imod-object N=NAME ...] [--complete | --partly-picked]

- **STAR** (`.star`: RELION, Warp, or infer's `--star-out`): the loop that holds
  coordinates. A row's run is its `rlnTomoName` (else `rlnMicrographName` without its
  suffixes, e.g. Warp's `TS_01.tomostar`; `--run` for every row); its particle the
  `sparseDetParticleType` column (infer writes it) or `--particle`. Positions come from
  RELION 5's `rlnCenteredCoordinate{X,Y,Z}Angst` (Å from the tomogram's centre) where the
  file has them, else from `rlnCoordinate{X,Y,Z}`, in pixels of the file the run was
  imported from (`import_mrc`) or of the project's tomogram (`--star-frame`, as infer
  writes them); a pixel size the file states (`rlnDetectorPixelSize`, `rlnImagePixelSize`,
  `rlnTomoTiltSeriesPixelSize`) must be that frame's.
- **Dynamo tables** (`.tbl`): a particle at x + dx, y + dy, z + dz (columns 24–26 and 4–6)
  in pixels of the same frame as a STAR's `rlnCoordinate*` (Dynamo's converters to RELION
  and Warp carry them over unchanged); its run is `--run`, or column 20's tomogram index
  looked up in `--tomo-map` (Dynamo's table map `.doc`, "index path" lines, or volume list
  `.vll`, a path per volume) and named after the file; its particle is `--particle` (a
  table's class numbers are its author's).
- **IMOD models** (`.mod`, saved by 3dmod; data_tools.imod_model): each object's points,
  in pixels of the same frame as a STAR's `rlnCoordinate*` (the full image file, a subset
  3dmod showed and a Y/Z flip undone); its run is `--run` or the file's name (`TS_01.mod`);
  an object is the particle it is named after (case, spaces and underscores aside), the one
  `--imod-object N=NAME` gives it (3dmod's object number; `N=skip` leaves it out), or
  `--particle`. A pixel size the model states must be that frame's.
- **CSV** in the competition's columns (`experiment, particle_type, x, y, z`, Å).

Each run and particle the files hold is written as `USER_SESSION_PARTICLE.json` in the
overlay, replacing that user's and session's file; the session must not be `0`, which copick
keeps for tools. A particle without a file in a run is not annotated there: neither scored
nor trained as background (CopickProject.read_truth). `--complete` says the files hold every
particle the runs have: each run they name gets an empty file of each other particle (none
there). `--partly-picked` says they hold some copies of each particle they pick, not all:
those particles are then trained as particles where picked, never as background elsewhere,
and not scored in those runs (CopickProject.mark_partly_picked).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data_tools.cli_args import expand_home, run_argument
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.run_names import as_run_name
from data_tools.tomo_input import add_input_arguments, input_overrides, with_overrides
from data_tools.truth_user import GT_USER, TOOL_SESSION, parse_truth_user
from sparse_det.class_match import as_listed

log = logging.getLogger(__name__)
CENTRED = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
PIXELS = [f"rlnCoordinate{a}" for a in "XYZ"]
PIXEL_SIZES = ("rlnDetectorPixelSize", "rlnImagePixelSize", "rlnTomoTiltSeriesPixelSize")
PIXEL_TOLERANCE = 0.01
SKIP = "skip"  # --imod-object N=skip: an object that holds no particle
RUN_SUFFIXES = {".tomostar", ".mrc", ".rec", ".st", ".map", ".zarr", ".star"}


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


DYNAMO_SHIFT, DYNAMO_TOMO, DYNAMO_XYZ = [3, 4, 5], 19, [23, 24, 25]  # 0-based columns


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


def _read_file(p: Path, project: CopickProject, run: str | None, particle: str | None,
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


def parse_object_map(items, names: list[str]) -> dict[int, str]:
    """`--imod-object N=NAME` values → {object number: particle name or SKIP}."""
    out = {}
    for item in items:
        number, _, kind = item.partition("=")
        if not number.strip().isdigit() or int(number) < 1 or not kind.strip():
            raise DataError(f"--imod-object {item!r}: give N=NAME, N being 3dmod's object "
                            "number (from 1)")
        kind = kind.strip()
        if kind != SKIP and kind not in names:
            raise DataError(f"--imod-object {item!r}: {kind!r} is not a particle of the "
                            f"project ({', '.join(names)}) nor {SKIP!r}")
        out[int(number)] = kind
    return out


def import_picks(paths: list[str | Path], project: CopickProject, *, user_id: str,
                 session_id: str = "1", run: str | None = None, particle: str | None = None,
                 star_frame: str = "source", sparsify=None, tomo_map: str | None = None,
                 complete: bool = False, partly_picked: bool = False,
                 imod_objects: list[str] | tuple[str, ...] = ()
                 ) -> dict[tuple[str, str], int]:
    """Writes the files' picks into the project; returns {(run, particle): count}.
    `complete`: every other table particle of each run the files name gets an empty file.
    `partly_picked`: each (run, particle) with picks is marked as picked in part
    (CopickProject.mark_partly_picked)."""
    if complete and partly_picked:
        raise DataError("--complete says the files hold every particle; --partly-picked "
                        "that they hold some: give one")
    from data_tools.sparsify_config import SparsifyConfig
    from sparse_det.writers import run_pixel_frame

    parse_truth_user(f"{user_id}:{session_id}", "--user-id:--session-id")
    if user_id == GT_USER or session_id == TOOL_SESSION:
        raise DataError(f"--user-id {user_id!r} --session-id {session_id!r}: imported "
                        f"annotations are a person's; '{GT_USER}' and session "
                        f"{TOOL_SESSION} are kept for curated ground truth and for tools")
    sparsify = sparsify or SparsifyConfig()
    object_map = parse_object_map(imod_objects, project.particles.names)
    frames: dict = {}

    def frame_of(name: str):
        if name not in frames:  # the project's runs listed once per name, not per file
            if name not in project.runs():
                raise DataError(f"tomogram {name!r} is not a run of {project.path} (runs: "
                                f"{', '.join(project.runs()) or 'none'}); --run names it")
            frames[name] = run_pixel_frame(project, name, sparsify, star_frame == "source")
        return frames[name]

    picks = pd.concat([_read_file(p, project, run, particle, tomo_map, frame_of, object_map)
                       for p in map(Path, paths)], ignore_index=True)
    picks["particle_type"] = as_listed(picks["particle_type"], project.particles, log.info)
    if complete:
        runs = sorted(set(picks["experiment"]))
        none = [(r, n) for r in runs for n in project.particles.names
                if not ((picks["experiment"] == r) & (picks["particle_type"] == n)).any()]
        picks = pd.concat([picks, pd.DataFrame(none, columns=["experiment", "particle_type"])],
                          ignore_index=True)
    unknown = sorted(set(picks["particle_type"]) - set(project.particles.names))
    if unknown:
        raise DataError(f"particles {unknown} are not in {project.path}'s table: "
                        f"{', '.join(project.particles.names)}")
    strangers = sorted(set(picks["experiment"]) - set(project.runs()))
    if strangers:  # nothing is written: a misspelt run would become a run of its own
        raise DataError(f"runs {strangers} are not in {project.path} "
                        f"(runs: {', '.join(project.runs()) or 'none'})")
    counts = {}
    for (name, kind), rows in picks.groupby(["experiment", "particle_type"], sort=True):
        xyz = rows[["x", "y", "z"]].dropna().to_numpy()  # a --complete row holds none
        project.write_picks(name, kind, xyz, user_id=user_id, session_id=session_id)
        counts[(name, kind)] = len(xyz)
        if partly_picked and len(xyz):
            project.mark_partly_picked(name, [kind])
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help=".star, .tbl (Dynamo), .mod (IMOD) or .csv files")
    ap.add_argument("--project", required=True)
    ap.add_argument("--user-id", required=True, help="who annotated (copick user id)")
    ap.add_argument("--session-id", default="1", help="copick session id (not 0: a tool's)")
    ap.add_argument("--particle", help="every pick is this particle")
    ap.add_argument("--run", type=run_argument, help="every pick is in this run")
    ap.add_argument("--star-frame", choices=["source", "project"], default="source",
                    help="STAR pixel coordinates are of the file a run was imported from "
                         "(import_mrc), else of the project's tomogram; or always the latter")
    ap.add_argument("--tomo-map", help="Dynamo's table map (.doc) or volume list (.vll): "
                                       "a .tbl's tomogram indices to runs")
    ap.add_argument("--imod-object", action="append", default=[], metavar="N=NAME",
                    help="an IMOD model's object N (from 1, as 3dmod numbers them) holds "
                         "particle NAME (N=skip: no particle); repeat for several")
    ap.add_argument("--complete", action="store_true",
                    help="the files hold every particle of the runs they name: each other "
                         "particle gets an empty file there (none), not none (not annotated)")
    ap.add_argument("--partly-picked", action="store_true",
                    help="the files hold some copies of each particle they pick, not all: "
                         "training never reads the unpicked ones as background, and scoring "
                         "skips those particles in those runs")
    add_input_arguments(ap)
    a = expand_home(ap.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from data_tools.sparsify_config import SparsifyConfig

        counts = import_picks(a.files, CopickProject(a.project), user_id=a.user_id,
                              session_id=a.session_id, run=a.run, particle=a.particle,
                              star_frame=a.star_frame, tomo_map=a.tomo_map,
                              complete=a.complete, partly_picked=a.partly_picked,
                              imod_objects=a.imod_object,
                              sparsify=with_overrides(SparsifyConfig(), input_overrides(a)))
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for (name, kind), n in counts.items():
        print(f"{name}: {n} {kind} as {a.user_id}_{a.session_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
