"""Picks particles in a copick project and writes the competition CSV.

    python -m sparse_det.infer [--project DIR] [--runs RUN ...] [--checkpoint PATH]
                               [--device auto|cpu|cuda] [--out submissions/submission.csv]
                               [--picks-out PROJECT [--user-id U --session-id S]]
                               [--star-out DIR] [--imod-out DIR] [--dynamo-out DIR]
                               [--star-frame source|project]
                               [--min-score P] [--class-map NAME=CLASS ...]
                               [--ray [--address ADDR]] [--fresh] [--quiet]

With no arguments it runs the shipped checkpoint on the demo project (`make demo` makes it).
`--picks-out` writes copick picks (with scores) into a project's overlay, `--star-out` one
RELION-style STAR file per run, `--imod-out` one IMOD model per run (for 3dmod) and
`--dynamo-out` a Dynamo table per particle with its table map (sparse_det/writers.py), all
in pixels of the MRC file a run was imported from where `data_tools.import_mrc` made it.
`--min-score P` keeps only the picks at least that probable. Picks are named as the
project's config names its classes: a class the checkpoint knows under another name
("apoferritin", "cytosolic-ribosome", or one with the same PDB ID) is matched to it, and
`--class-map NAME=CLASS` says so where no rule can (sparse_det/class_match.py).
`--ray` fans the runs out as Ray tasks (a private local Ray, or the cluster at --address /
RAY_ADDRESS) and gathers the same CSV.
Each run's picks are kept in OUT.parts/ as they are made and removed once the CSV is
written: after an interruption the same command picks only the runs not done (made with the
same checkpoint and settings; `--fresh` picks them all again).
"""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.atomic import writable_dir
from data_tools.cli_args import RUNS_HELP, add_runs_argument, expand_home, run_argument
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from data_tools.run_names import runs_named
from data_tools.tomo_input import add_input_arguments, input_overrides
from data_tools.truth_user import GT_USER, TOOL_SESSION, check_picks_name
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, CheckpointError
from sparse_det.class_match import add_class_map_argument, parse_class_map
from sparse_det.config import INFER_PRECISION, PRECISIONS, TTA_MIRRORS
from sparse_det.run_parts import parts_dir_for

if TYPE_CHECKING:
    from data_tools.sparsify_config import SparsifyConfig

log = logging.getLogger("sparse_det.infer")
DEFAULT_PROJECT = "demo_data/project"
DEFAULT_OUT = "submissions/submission.csv"


def write_outputs(a: argparse.Namespace, project: CopickProject, rows, runs: list[str],
                  sparsify: SparsifyConfig) -> None:
    """The CSV, and the copick picks, STAR files, IMOD models and Dynamo tables when asked for
    (`sparsify`: the checkpoint's settings with the user's input choices, for the pixels of
    the STAR files and models)."""
    from sparse_det.writers import (
        run_pixel_frame,
        to_submission,
        write_copick_picks,
        write_dynamo_files,
        write_imod_files,
        write_star_files,
        write_submission,
    )

    write_submission(to_submission(rows), a.out)
    if a.picks_out:
        paths = write_copick_picks(a.picks_out, project, rows, runs=runs, user_id=a.user_id,
                                   session_id=a.session_id)
        log.info("wrote %d copick picks files under %s", len(paths), a.picks_out)
    frames = {r: run_pixel_frame(project, r, sparsify, a.star_frame == "source")
              for r in runs} if a.star_out or a.imod_out or a.dynamo_out else {}
    if a.star_out:
        paths = write_star_files(a.star_out, rows, runs=runs, frames=frames,
                                 particles=project.particles)
        log.info("wrote %d STAR files to %s", len(paths), a.star_out)
    if a.imod_out:
        paths = write_imod_files(a.imod_out, rows, runs=runs, frames=frames,
                                 particles=project.particles)
        log.info("wrote %d IMOD models to %s", len(paths), a.imod_out)
    if a.dynamo_out:
        paths = write_dynamo_files(a.dynamo_out, rows, runs=runs, frames=frames,
                                   particles=project.particles)
        log.info("wrote %d Dynamo tables and their table map to %s", len(paths) - 1,
                 a.dynamo_out)


def preflight(a: argparse.Namespace) -> tuple[CopickProject, list[str], SparsifyConfig]:
    """Everything that can be wrong with the input, checked before anything heavy loads:
    the project, the runs, the outputs, the checkpoint and each run's tomogram (from
    metadata: which one is read and how). Returns the project, the runs and the sparsify
    settings they are read with."""
    if not Path(a.project).exists() and a.project == DEFAULT_PROJECT:
        raise DataError(f"{a.project}: demo project not found; run `make demo` or pass "
                        "--project")
    project = CopickProject(a.project)
    runs = _runs_to_pick(project, a.runs, a.exclude)
    if not Path(a.out).name or Path(a.out).is_dir():
        raise DataError(f"--out {a.out}: a folder, not a CSV file's path")
    writable_dir(Path(a.out).parent)  # an unwritable output fails before any work too
    for out in (a.star_out, a.imod_out, a.dynamo_out):
        if out:
            writable_dir(out)
    if a.picks_out:
        check_picks_name(a.user_id, "user", "--user-id")
        check_picks_name(a.session_id, "session", "--session-id")
        from sparse_det.writers import new_picks_folder

        dest = Path(a.picks_out)  # a folder that cannot take the picks fails now, not after
        writable_dir(dest.parent if new_picks_folder(dest) else CopickProject(dest).overlay_root)
    if a.picks_out and a.user_id == GT_USER:
        raise DataError(f"--user-id {a.user_id!r} is the ground-truth user; pick another")
    if a.picks_out and a.session_id != TOOL_SESSION:
        log.warning("--session-id %s: copick reads a session other than %s as a person's "
                    "picks, so finetune, tune and evaluate may read these as ground truth "
                    "where a run has no curation picks", a.session_id, TOOL_SESSION)
    from data_tools.sparsify import plan_input
    from data_tools.tomo_input import with_overrides
    from sparse_det.checkpoint import checkpoint_settings
    from sparse_det.class_match import match_classes

    settings = checkpoint_settings(a.checkpoint)
    _check_min_score(a.min_score, settings.calibration, a.checkpoint)
    match_classes(settings.particles, project.particles, a.class_map)  # a bad map fails now
    sparsify = with_overrides(settings.config.sparsify, input_overrides(a))
    if not a.shards:  # with shards, a run's tomogram may not be needed at all
        from sparse_det.writers import run_pixel_frame

        for run in runs:
            try:
                plan_input(project, run, sparsify)
                if a.star_out or a.imod_out or a.dynamo_out:  # a bad import record fails now
                    run_pixel_frame(project, run, sparsify, a.star_frame == "source")
            except DataError as exc:
                hint = f" (--exclude {run} picks the other runs)" if len(runs) > 1 else ""
                raise DataError(f"{exc}{hint}") from exc
    return project, runs, sparsify


def _runs_to_pick(project: CopickProject, runs: list[str] | None, exclude: list[str]
                  ) -> list[str]:
    """--runs (every run where none) less --exclude, each a run or a pattern (`TS_6*`); a
    name of either that names no run of the project fails before any work (a mistyped
    --exclude would pick the run it meant to leave out)."""
    project.require_runs()
    runs_named([project], exclude)
    kept = runs_named([project], runs, exclude)[0]
    if not kept:
        raise DataError(f"{project.path}: --exclude leaves no run to pick")
    return kept


def _check_min_score(min_score: float | None, calibration: dict, checkpoint: str) -> None:
    """--min-score reads the scores as probabilities: a value that is not one, or a
    checkpoint whose scores are not calibrated to them, is refused before any work."""
    if min_score is None:
        return
    if not 0.0 <= min_score <= 1.0:
        raise DataError(f"--min-score {min_score:g}: a probability, between 0 and 1")
    if not calibration:
        raise DataError(f"--min-score: {checkpoint}'s scores are not calibrated to "
                        f"probabilities (it was never tuned: python -m sparse_det.tune)")


def with_min_score(rows, min_score: float | None):
    """The rows whose score is at least `min_score` (all where None), the drop logged."""
    if min_score is None or not len(rows):
        return rows
    kept = rows[rows["score"] >= min_score].reset_index(drop=True)
    log.info("--min-score %g: kept %d of %d picks", min_score, len(kept), len(rows))
    return kept


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default=DEFAULT_PROJECT)
    add_runs_argument(ap)
    ap.add_argument("--exclude", nargs="+", default=[], type=run_argument, metavar="RUN",
                    help="runs to leave out (a run whose tomogram cannot be read); "
                         f"{RUNS_HELP}")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=PRECISIONS, default=INFER_PRECISION,
                    help="network weights and features (fp16: for GPUs); bf16: the CPU's "
                         "conv products in bfloat16, faster where the CPU has bf16 "
                         "instructions; auto (default): bf16 on such a CPU, else fp32; "
                         "fp32: exact sums, the same picks on every host")
    ap.add_argument("--tta", choices=sorted(TTA_MIRRORS),
                    help="test-time mirrors averaged per voxel (flip: y and x, 2 passes; "
                         "flip4: 4 passes); default: the checkpoint's")
    ap.add_argument("--no-rescore", dest="rescore", action="store_false",
                    help="the network's vote masses at their own thresholds, not the "
                         "checkpoint's candidate rescorer (sparse_det/rescore.py)")
    ap.add_argument("--min-score", type=float, metavar="P",
                    help="keep only picks whose score (the calibrated probability that a "
                         "pick is that particle) is at least P, on top of the thresholds "
                         "tuned for F4, which favour recall: for subtomogram averaging, "
                         "where a false pick costs more than a missed one (0.5 on 44 "
                         "held-out simulated runs: beta-galactosidase precision 0.19-0.55 "
                         "-> 0.63-0.86; bench/min_score.py)")
    ap.add_argument("--shards", help="reuse shards from this folder where they match")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--picks-out", metavar="PROJECT",
                    help="write copick picks into this project's overlay (a new or empty folder "
                         "becomes a project over the input's tomograms)")
    ap.add_argument("--user-id", default="sparse-det", help="copick user id of the picks")
    ap.add_argument("--session-id", default="0", help="copick session id of the picks")
    ap.add_argument("--star-out", metavar="DIR", help="write RUN.star files (RELION, Warp)")
    ap.add_argument("--imod-out", metavar="DIR",
                    help="write RUN.mod files (IMOD's 3dmod: an object per particle, spheres "
                         "of its radius; import_picks reads them back)")
    ap.add_argument("--dynamo-out", metavar="DIR",
                    help="write PARTICLE.tbl Dynamo tables (all runs in each) and their "
                         "table map tomograms.doc")
    ap.add_argument("--star-frame", choices=["source", "project"], default="source",
                    help="STAR, IMOD and Dynamo coordinates in pixels of the MRC file a run "
                         "was imported from (source, default; data_tools.import_mrc records "
                         "it) or of the project's tomogram (project); the same for runs not "
                         "imported")
    ap.add_argument("--ray", action="store_true", help="one Ray task per run")
    ap.add_argument("--address", help="Ray cluster for --ray (default: RAY_ADDRESS, else a "
                                      "private local Ray)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--fresh", action="store_true",
                    help="pick every run again, not reading the picks an interrupted call "
                         "kept in OUT.parts/")
    add_class_map_argument(ap)
    add_input_arguments(ap)
    return ap


def _exclude_hint(error: str, runs: list[str]) -> str:
    """" (--exclude RUN picks the other runs)" where the error is one run's (a tomogram
    whose NaN voxels only reading finds) among several; else nothing."""
    named = [r for r in runs if f"run {r!r}" in error]
    if len(runs) < 2 or len(named) != 1 or "--exclude" in error:
        return ""
    return f" (--exclude {named[0]} picks the other runs)"


def _stopped(line: str, parts: Path | None, code: int) -> int:
    """The line a call stopped by an error or Ctrl-C ends with, and where the runs it picked
    wait for the same command to resume."""
    print(line, file=sys.stderr)
    picked = sorted(parts.glob("*.json")) if parts is not None and parts.is_dir() else []
    if picked:
        print(f"the {len(picked)} run(s) picked so far are kept in {parts}; the same command "
              "picks only the others", file=sys.stderr)
    elif parts is not None:
        shutil.rmtree(parts, ignore_errors=True)  # no run picked: nothing to resume
    return code


def main(argv: list[str] | None = None) -> int:
    a = expand_home(parser().parse_args(argv))
    try:
        a.class_map = parse_class_map(a.class_map)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                        format="%(message)s")
    parts, runs = None, []
    try:
        project, runs, sparsify = preflight(a)
        parts = parts_dir_for(a.out)
        t0 = time.perf_counter()
        progress = not a.quiet and sys.stderr.isatty()
        if a.fresh:
            shutil.rmtree(parts, ignore_errors=True)
        kw = {"runs": runs, "device": a.device, "shards_dir": a.shards, "progress": progress,
              "input_overrides": input_overrides(a), "precision": a.precision,
              "tta": a.tta, "rescore": a.rescore, "parts_dir": parts,
              "class_map": a.class_map}
        if a.ray:  # the command line may hand off to ray_jobs; the library never does
            from ray_jobs.infer import infer_project_ray

            rows = infer_project_ray(project, a.checkpoint, address=a.address, **kw)
        else:
            from sparse_det.stream import infer_project

            rows = infer_project(project, a.checkpoint, **kw)
        rows = with_min_score(rows, a.min_score)
        write_outputs(a, project, rows, runs, sparsify)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        return _stopped(f"error: {exc}{_exclude_hint(str(exc), runs)}", parts, 2)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torch
        return _stopped("interrupted", parts, 130)
    shutil.rmtree(parts, ignore_errors=True)  # the CSV holds them now
    n_runs = rows["experiment"].nunique() if len(rows) else 0
    log.info("wrote %d particles from %d run(s) to %s in %.1f s", len(rows), n_runs, a.out,
             time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    code = main()
    # Frozen, torch's hundreds of thousands of objects are not walked by the interpreter's
    # closing collections: the process ends in ~0.2 s instead of 0.7-0.9 s (a tenth of a
    # one-tomogram call). Every file is written and closed by now; atexit still runs.
    gc.freeze()
    raise SystemExit(code)
