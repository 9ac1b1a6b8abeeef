"""Per-class score thresholds that maximise F4 on annotated runs, and the CLI that re-tunes a
checkpoint on your own runs (for example the competition's 7 training tomograms).

    python -m sparse_det.tune --checkpoint PT --project DIR [--project DIR ...] [--runs ...]
                              --out NEW.pt
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from sparse_det.metric import DISTANCE_MULTIPLIER, ClassScore, match_counts
from sparse_det.postprocess import best_threshold

Detections = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (centres x,y,z Å, scores)


def tune_thresholds(dets: list[Detections], truths: list[dict[str, np.ndarray]],
                    particles: ParticleTable, default: float
                    ) -> tuple[dict[str, float], dict[str, ClassScore], float]:
    """Thresholds over all runs together (micro, as the metric), the counts at them and the
    weighted F4. A class with no detection keeps `default`."""
    thresholds, per_class = {}, {}
    for p in particles:
        hit = p.radius_A * DISTANCE_MULTIPLIER
        units = [(d[p.name][0], d[p.name][1], t[p.name])
                 for d, t in zip(dets, truths, strict=True)]
        thr, _ = best_threshold(units, hit)
        thresholds[p.name] = thr if np.isfinite(thr) else default
        tp = fp = fn = 0
        for cand, sc, ref in units:
            a, b, c = match_counts(ref, cand[sc >= thresholds[p.name]], hit)
            tp, fp, fn = tp + a, fp + b, fn + c
        per_class[p.name] = ClassScore(tp, fp, fn)
    scored = particles.scored
    score = sum(p.weight * per_class[p.name].fbeta for p in scored) / sum(p.weight
                                                                        for p in scored)
    return thresholds, per_class, score


def main(argv: list[str] | None = None) -> int:
    import torch

    from sparse_det.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
    from sparse_det.infer import load_sparse
    from sparse_det.predict import detect_sparse, resolve_device

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--runs", nargs="*", help="only these runs (of any of the projects)")
    ap.add_argument("--out", required=True, help="the re-tuned checkpoint")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    try:
        dev = resolve_device(a.device)
        model, cfg, particles, old, feature_names = load_checkpoint(a.checkpoint, dev)
        dets, truths = [], []
        for path in a.project:
            project = CopickProject(path)
            for run in project.runs():
                if a.runs and run not in a.runs:
                    continue
                sv = load_sparse(project, run, cfg.sparsify, feature_names, None)
                dets.append(detect_sparse(model, sv, particles, cfg.postprocess, dev,
                                          cfg.train.amp))
                truths.append(project.read_picks(run))
        thresholds, per_class, score = tune_thresholds(dets, truths, particles,
                                                       cfg.postprocess.default_threshold)
        doc = read_checkpoint(a.checkpoint)
        doc["thresholds"] = thresholds
        doc["extra"] = {**doc.get("extra", {}), "tuned_on": a.project}
        from data_tools.atomic import atomic_path

        with atomic_path(a.out) as tmp:
            torch.save(doc, tmp)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, c in per_class.items():
        print(f"{name:<22} threshold {old.get(name, float('nan')):9.2f} -> "
              f"{thresholds[name]:9.2f}   F4 {c.fbeta:.3f} (R {c.recall:.2f})")
    print(f"weighted F4 on {len(dets)} run(s) at the new thresholds: {score:.4f} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
