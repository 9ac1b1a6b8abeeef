"""Pictures of runs: x-y and x-z slices with ground truth and picks circled per class, and
per-class precision-recall curves with the checkpoint's threshold marked.

    python -m sparse_det.visualize --project DIR --runs RUN ... [--submission CSV]
                                   [--checkpoint PT] --out DIR

The curves come from the checkpoint's unthresholded detections on the run; the slices show
the submission's picks when one is given, else the checkpoint's picks at its thresholds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from data_tools.atomic import atomic_path, writable_dir
from data_tools.cli_args import add_runs_argument, expand_home
from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.run_names import runs_named
from data_tools.tomo_input import add_input_arguments, input_overrides
from data_tools.truth_user import add_truth_user_argument
from data_tools.zarr_levels import Tomogram
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, CheckpointError
from sparse_det.metric import DISTANCE_MULTIPLIER
from sparse_det.structures import Detections

Picks = dict[str, np.ndarray]  # particle name -> centres x, y, z in Å


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    _plt().close(fig)
    return path


def slice_picture(tomo: Tomogram, particles: ParticleTable, truth: Picks, picks: Picks,
                  plane: str, out: Path, *, index: int | None = None,
                  thickness: int = 5) -> Path:
    """A `thickness`-voxel mean slice through the middle (or `index`) in plane "xy" (at a z)
    or "xz" (at a y). Ground truth: solid circles of the particle's cross-section in the
    slice; picks: dashed circles of half the radius (the metric's hit distance) and a dot."""
    plt = _plt()
    axis = {"xy": 0, "xz": 1}[plane]
    vol, vs = tomo.data, tomo.voxel_size_A
    index = vol.shape[axis] // 2 if index is None else index
    lo, hi = max(index - thickness // 2, 0), index + thickness // 2 + 1
    img = vol[lo:hi].mean(0) if axis == 0 else vol[:, lo:hi].mean(1)
    vmin, vmax = np.percentile(img, [1, 99])
    w, h = img.shape[1], img.shape[0]
    fig, ax = plt.subplots(figsize=(9, 9 * h / w + 0.6), dpi=100)
    ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
    for p in particles:
        color = np.array(p.color[:3]) / 255
        r = p.radius_A / vs
        for pts, style in ((truth.get(p.name), "truth"), (picks.get(p.name), "pick")):
            if pts is None or len(pts) == 0:
                continue
            zyx = xyz_A_to_zyx_vox(pts, vs, tomo.origin_A)
            depth = zyx[:, axis] - index
            row = zyx[:, 1] if axis == 0 else zyx[:, 0]
            for d, yy, xx in zip(depth, row, zyx[:, 2], strict=True):
                if abs(d) >= r:
                    continue
                if style == "truth":
                    ax.add_patch(plt.Circle((xx, yy), np.sqrt(max(r**2 - d**2, 1.0)),
                                            fill=False, color=color, lw=1.3))
                else:
                    ax.add_patch(plt.Circle((xx, yy), r * DISTANCE_MULTIPLIER, fill=False,
                                            color=color, lw=1.0, ls="--"))
                    ax.plot(xx, yy, ".", color=color, ms=3)
        ax.plot([], [], "o", mfc="none", color=color, label=p.name)
    ax.plot([], [], "o", mfc="none", color="w", label="solid: truth, dashed: picks")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    where = f"z={index}" if axis == 0 else f"y={index}"
    ax.set_title(f"{tomo.run}  {plane} slice at {where}  ({vs:.2f} Å/voxel)")
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)" if axis == 0 else "z (voxels)")
    return _save(fig, out)


def pr_picture(dets: Detections, truth: Picks, particles: ParticleTable,
               thresholds: dict[str, float], out: Path, *, title: str = "") -> Path:
    """Precision against recall per class as the score threshold falls; the threshold in use
    marked with a filled dot and its F4 in the legend."""
    from sparse_det.metric import fbeta
    from sparse_det.thresholds import pr_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    for p in particles:
        cand, scores = dets[p.name]
        if p.name not in truth:  # the run does not annotate it (CopickProject.read_truth)
            ax.plot([], [], color=np.array(p.color[:3]) / 255, label=f"{p.name}: not annotated")
            continue
        ref = truth[p.name]
        thr, tp, kept, n_ref = pr_curve([(cand, scores, ref)], p.radius_A * DISTANCE_MULTIPLIER)
        color = np.array(p.color[:3]) / 255
        if not len(thr) or n_ref == 0:
            ax.plot([], [], color=color, label=f"{p.name}: no {'truth' if n_ref == 0 else 'picks'}")
            continue
        precision, recall = tp / kept, tp / n_ref
        ax.plot(recall, precision, color=color, lw=1.5)
        t = thresholds.get(p.name, np.inf)
        at = np.flatnonzero(thr >= t)
        label = p.name
        if len(at):
            i = at[-1]
            ax.plot(recall[i], precision[i], "o", color=color, ms=7)
            label += f"  thr {t:.3g}: F4 {fbeta(tp[i], kept[i] - tp[i], n_ref - tp[i]):.3f}"
        ax.plot([], [], color=color, label=label)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(title or "precision-recall per class (dot: threshold in use)")
    return _save(fig, out)


def picks_of(rows: pd.DataFrame, run: str) -> Picks:
    mine = rows[rows["experiment"] == run]
    return {n: g[["x", "y", "z"]].to_numpy(dtype=float) for n, g in
            mine.groupby("particle_type")}


def visualize_runs(project: CopickProject, runs: list[str], out_dir: str | Path, *,
                   checkpoint: str | Path = DEFAULT_CHECKPOINT,
                   submission: pd.DataFrame | None = None, device: str = "auto",
                   shards_dir: str | Path | None = None,
                   input_overrides: dict | None = None) -> Iterator[list[Path]]:
    """Writes RUN_xy.png, RUN_xz.png and RUN_pr.png of each run into out_dir, the checkpoint
    loaded once; yields each run's paths as they are written. The slices show the
    full-resolution level of the tomogram the checkpoint reads."""
    from data_tools.sparsify import read_full_resolution
    from sparse_det.inference import Picker
    from sparse_det.structures import detections_table

    for run in runs:
        project.run_dir(run)  # a missing run fails before the checkpoint loads
    out_dir = writable_dir(out_dir)
    picker = Picker.load(checkpoint, device, input_overrides=input_overrides)
    particles = picker.particles
    for run in runs:
        dets = picker.detect_run(project, run, shards_dir)
        rows = detections_table([picker.pick(dets)]) if submission is None else submission
        truth = project.read_truth(run)
        picks = picks_of(rows, run)
        tomo = read_full_resolution(project, run, picker.sparsify_config)
        yield [slice_picture(tomo, particles, truth, picks, "xy", out_dir / f"{run}_xy.png"),
               slice_picture(tomo, particles, truth, picks, "xz", out_dir / f"{run}_xz.png"),
               pr_picture(dets, truth, particles, picker.thresholds, out_dir / f"{run}_pr.png",
                          title=f"{run}: precision-recall per class (dot: checkpoint "
                                "threshold)")]


def visualize_run(project: CopickProject, run: str, out_dir: str | Path,
                  **kwargs) -> list[Path]:
    """visualize_runs of one run: its three PNGs' paths."""
    return next(visualize_runs(project, [run], out_dir, **kwargs))


def _warn_unpicked(submission: str, sub: pd.DataFrame, runs: list[str]) -> None:
    """Names on stderr the runs drawn that the submission has no picks of: their slices
    show the truth alone."""
    have = sorted(set(sub["experiment"]))
    for run in runs:
        if run not in have:
            print(f"{submission}: no picks of run {run!r} (its runs: "
                  f"{', '.join(have[:8]) + (' ...' if len(have) > 8 else '') or 'none'}); "
                  "the pictures show the truth alone", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    add_runs_argument(ap, nargs="+", aliases=("--run",), required=True,
                      help="the runs to draw (the checkpoint loads once)")
    ap.add_argument("--submission", help="competition CSV whose picks the slices show")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shards", help="reuse shards from this folder where they match")
    ap.add_argument("--out", required=True, help="folder for the PNGs")
    add_input_arguments(ap)
    add_truth_user_argument(ap)
    a = expand_home(ap.parse_args(argv))
    drawn = 0
    try:
        from sparse_det.writers import read_submission

        project = CopickProject(a.project, truth_user=a.truth_user)
        runs = runs_named([project], a.runs)[0]
        sub = read_submission(a.submission) if a.submission else None
        if sub is not None:
            _warn_unpicked(a.submission, sub, runs)
        for paths in visualize_runs(project, runs, a.out, checkpoint=a.checkpoint,
                                    submission=sub, device=a.device, shards_dir=a.shards,
                                    input_overrides=input_overrides(a)):
            drawn += 1
            if len(runs) > 1:
                print(f"[{drawn}/{len(runs)}] {runs[drawn - 1]}", file=sys.stderr)
            for p in paths:
                print(p, flush=True)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torch
        print(f"interrupted; the pictures of {drawn} run(s) are in {a.out}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
