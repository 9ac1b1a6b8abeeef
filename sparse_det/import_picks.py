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

import pandas as pd

from data_tools.cli_args import expand_home, run_argument
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from data_tools.tomo_input import add_input_arguments, input_overrides, with_overrides
from data_tools.truth_user import GT_USER, TOOL_SESSION, parse_truth_user
from sparse_det.class_match import as_listed
from sparse_det.picks_formats import SKIP, read_picks_file

log = logging.getLogger(__name__)


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

    picks = pd.concat([read_picks_file(p, project, run, particle, tomo_map, frame_of,
                                       object_map) for p in map(Path, paths)],
                      ignore_index=True)
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
