"""Picks particles in a copick project and writes the competition CSV.

    python -m sparse_det.infer [--project DIR] [--runs RUN ...] [--checkpoint PATH]
                               [--device auto|cpu|cuda] [--out submissions/submission.csv]
                               [--picks-out PROJECT [--user-id U --session-id S]]
                               [--star-out DIR] [--ray [--address ADDR]] [--quiet]

With no arguments it runs the shipped checkpoint on the demo project (`make demo` makes it).
`--picks-out` writes copick picks (with scores) into a project's overlay, `--star-out` one
RELION-style STAR file per run (sparse_det/outputs.py). `--ray` fans the runs out as Ray tasks
(a private local Ray, or the cluster at --address / RAY_ADDRESS) and gathers the same CSV.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_tools.atomic import writable_dir
from data_tools.copick_io import GT_USER, CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.sparsify import SparsifyConfig, shard_or_sparsify
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint
from sparse_det.config import Config
from sparse_det.io import to_submission, write_submission
from sparse_det.outputs import write_copick_picks, write_star_files
from sparse_det.predict import detect_sparse, resolve_device, threshold_rows

log = logging.getLogger("sparse_det.infer")
DEFAULT_PROJECT = "demo_data/project"
DEFAULT_OUT = "submissions/submission.csv"
ROW_COLUMNS = ["experiment", "particle_type", "x", "y", "z", "score"]


def load_sparse(project: CopickProject, run: str, cfg: SparsifyConfig,
                feature_names: list[str], shards_dir: str | Path | None):
    sv = shard_or_sparsify(project, run, cfg, shards_dir)
    if sv.feature_names != feature_names:
        raise CheckpointError(f"run {run!r}: features {sv.feature_names} do not match the "
                              f"checkpoint's {feature_names}")
    return sv


@dataclass
class Picker:
    """A loaded checkpoint and what it needs to pick one run: the one path from a run to
    detections, for infer and visualize alike."""

    model: torch.nn.Module
    cfg: Config
    particles: ParticleTable
    thresholds: dict[str, float]
    feature_names: list[str]
    device: torch.device

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "auto") -> Picker:
        dev = resolve_device(device)
        return cls(*load_checkpoint(checkpoint, dev), dev)

    def sparse(self, project: CopickProject, run: str, shards_dir: str | Path | None = None):
        return load_sparse(project, run, self.cfg.sparsify, self.feature_names, shards_dir)

    def detect(self, sv) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Unthresholded detections per particle (centres x,y,z Å, scores)."""
        return detect_sparse(self.model, sv, self.particles, self.cfg.postprocess,
                             self.device, self.cfg.train.amp)

    def rows(self, run: str, dets, thresholds: dict[str, float] | None = None) -> list[tuple]:
        return threshold_rows(run, dets, thresholds or self.thresholds,
                              self.cfg.postprocess.default_threshold)


def infer_project(project: CopickProject, checkpoint: str | Path, runs: list[str] | None = None,
                  device: str = "auto", shards_dir: str | Path | None = None,
                  progress: bool = False, thresholds: dict[str, float] | None = None
                  ) -> pd.DataFrame:
    """Detections of every run at the checkpoint's thresholds: columns ROW_COLUMNS (Å)."""
    from tqdm import tqdm

    picker = Picker.load(checkpoint, device)
    unknown = sorted(set(picker.particles.names) - set(project.particles.names))
    if unknown:
        raise DataError(f"{project.path}: checkpoint particles {unknown} are not in the project")
    rows = []
    for run in tqdm(runs or project.runs(), desc="infer", unit="tomogram",
                    disable=not progress):
        t0 = time.perf_counter()
        sv = picker.sparse(project, run, shards_dir)
        got = picker.rows(run, picker.detect(sv), thresholds)
        rows += got
        log.info("%s: %d voxels, %d particles, %.2f s", run, len(sv), len(got),
                 time.perf_counter() - t0)
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default=DEFAULT_PROJECT)
    ap.add_argument("--runs", nargs="*")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shards", help="reuse shards from this folder where they match")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--picks-out", metavar="PROJECT",
                    help="write copick picks into this project's overlay (a new folder "
                         "becomes a project over the input's tomograms)")
    ap.add_argument("--user-id", default="sparse-det", help="copick user id of the picks")
    ap.add_argument("--session-id", default="0", help="copick session id of the picks")
    ap.add_argument("--star-out", metavar="DIR", help="write RUN.star files (RELION, Warp)")
    ap.add_argument("--ray", action="store_true", help="one Ray task per run")
    ap.add_argument("--address", help="Ray cluster for --ray (default: RAY_ADDRESS, else a "
                                      "private local Ray)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                        format="%(message)s")
    try:
        if not Path(a.project).exists() and a.project == DEFAULT_PROJECT:
            raise DataError(f"{a.project}: demo project not found; run `make demo` or pass "
                            "--project")
        project = CopickProject(a.project)
        runs = a.runs or project.runs()
        for run in runs:
            project.run_dir(run)  # an unknown or unsafe run name fails before any work
        out = Path(a.out)
        writable_dir(out.parent)  # an unwritable output fails before any work too
        if a.star_out:
            writable_dir(a.star_out)
        if a.picks_out and a.user_id == GT_USER:
            raise DataError(f"--user-id {a.user_id!r} is the ground-truth user; pick another")
        t0 = time.perf_counter()
        progress = not a.quiet and sys.stderr.isatty()
        if a.ray:
            from ray_jobs.infer import infer_project_ray

            rows = infer_project_ray(project, a.checkpoint, runs, a.device, a.shards,
                                     a.address, progress=progress)
        else:
            rows = infer_project(project, a.checkpoint, runs, a.device, a.shards,
                                 progress=progress)
        write_submission(to_submission(rows), out)
        if a.picks_out:
            paths = write_copick_picks(a.picks_out, project, rows, runs, a.user_id,
                                       a.session_id)
            log.info("wrote %d copick picks files under %s", len(paths), a.picks_out)
        if a.star_out:
            sizes = {r: project.tomogram_scales(r)[0][1] for r in runs}
            paths = write_star_files(a.star_out, rows, runs, sizes, project.particles)
            log.info("wrote %d STAR files to %s", len(paths), a.star_out)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_runs = rows["experiment"].nunique() if len(rows) else 0
    log.info("wrote %d particles from %d run(s) to %s in %.1f s", len(rows), n_runs, out,
             time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
