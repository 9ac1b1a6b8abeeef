"""Where a checkpoint loses a project: the kept voxels' feature statistics, what the network
says on each class's foreground voxels, and the weighted F4 at the checkpoint's thresholds
against thresholds tuned on the project itself (an oracle: the most re-tuning could give).

    python bench/diagnose.py PROJECT [PROJECT ...] [--checkpoint PT]

A low oracle F4 with low p(true) on foreground voxels means the network's per-voxel outputs
fail (features, training distribution); a high oracle F4 with a low F4 at the checkpoint's
thresholds means only the score scale moved (thresholds, calibration).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_table(picker, project, run: str):
    """Prints one run's lines; returns its unthresholded detections and truth."""
    from sparse_det.data import truth_in_voxels
    from sparse_det.inference import detections_from_outputs, predict_sparse
    from sparse_det.targets import make_targets

    sv = picker.sparse(project, run)
    probs, offsets = predict_sparse(picker.ckpt.model, sv, picker.device, amp=False,
                                    norm_stats=picker.ckpt.config.postprocess.norm_stats)
    dets = picker.calibrate(detections_from_outputs(sv, probs, offsets, picker.particles,
                                                    picker.ckpt.config.postprocess))
    probs = probs.cpu().numpy()
    truth = project.read_picks(run)
    centers, classes, radii = truth_in_voxels(sv, truth, picker.particles)
    labels, _ = make_targets(sv.coords_zyx, centers, classes, radii)
    print(f"{run}: kept-voxel feature median {np.round(np.median(sv.feats, 0), 2)}, "
          f"foreground {np.mean(labels > 0):.3f} of kept voxels, background p(bg) "
          f"{probs[labels == 0, 0].mean():.3f}")
    for k, name in enumerate(picker.particles.names):
        fg = labels == k + 1
        if fg.any():
            masses = dets[name][1]
            print(f"  {name:<20} {fg.sum():>6} voxels  p(true) {probs[fg, k + 1].mean():.3f}  "
                  f"argmax right {np.mean(probs[fg].argmax(1) == k + 1):.2f}  top score "
                  f"{masses.max() if len(masses) else 0:8.1f}  threshold "
                  f"{picker.thresholds[name]:8.1f}")
            # Where the wrong answers go: a confusion with one neighbour in size is a
            # feature problem, spread over background a sensitivity one.
            shares = np.bincount(probs[fg].argmax(1), minlength=probs.shape[1]) / fg.sum()
            names = ["background", *picker.particles.names]
            wrong = [f"{names[j][:5]} {s:.2f}" for j, s in enumerate(shares)
                     if j != k + 1 and s >= 0.05]
            if wrong:
                print(f"  {'':<20} read as: {', '.join(wrong)}")
    return dets, truth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("projects", nargs="+")
    ap.add_argument("--checkpoint")
    a = ap.parse_args(argv)
    from data_tools.copick_io import CopickProject
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT
    from sparse_det.inference import Picker
    from sparse_det.metric import DISTANCE_MULTIPLIER as HIT
    from sparse_det.metric import ClassScore, match_counts, weighted_score
    from sparse_det.thresholds import tune_thresholds

    picker = Picker.load(a.checkpoint or DEFAULT_CHECKPOINT, "cpu")
    for path in a.projects:
        project = CopickProject(path)
        runs = [run_table(picker, project, r) for r in project.runs()]
        dets, truths = [d for d, _ in runs], [t for _, t in runs]
        oracle = tune_thresholds(dets, truths, picker.particles, 1.0)
        shipped = {p.name: sum((ClassScore(*match_counts(
            t[p.name], picker.pick(d)[p.name][0], p.radius_A * HIT))
            for d, t in zip(dets, truths, strict=True)), ClassScore(0, 0, 0))
            for p in picker.particles}
        print(f"{path}: weighted F4 at the checkpoint's thresholds "
              f"{weighted_score(shipped, picker.particles):.3f}, at thresholds tuned here "
              f"(oracle) {oracle.score:.3f}\n")
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
