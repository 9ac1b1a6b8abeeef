"""Per-class score thresholds chosen for F4, and the precision-recall curves they come from.

Training (validation after each epoch), `sparse_det.tune` and the pictures all call this
module. Counts follow the metric's semantics exactly (sparse_det/metric.py): TP = distinct
references hit, a second candidate on a found reference is a FP, counts summed over runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from data_tools.particles import ParticleTable
from sparse_det.metric import DISTANCE_MULTIPLIER, ClassScore, fbeta, match_counts, weighted_score
from sparse_det.structures import Detections

# One run of one class: (candidate centres [M,3] Å, scores [M], reference centres [R,3] Å).
RunUnit = tuple[np.ndarray, np.ndarray, np.ndarray]


def pr_curve(per_run: list[RunUnit], hit_radius: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Counts at every distinct score threshold of one class over several runs (a candidate
    is kept when score >= threshold).

    Returns (thresholds descending, TP at each, candidates kept at each, references)."""
    cand_hits, scores, n_ref = [], [], 0
    for cand, sc, ref in per_run:
        if len(cand):
            hits = (cKDTree(ref).query_ball_point(cand, hit_radius) if len(ref)
                    else [[] for _ in cand])
            cand_hits += [[n_ref + j for j in h] for h in hits]
            scores.append(sc)
        n_ref += len(ref)
    if not cand_hits:
        return np.zeros(0), np.zeros(0, int), np.zeros(0, int), n_ref
    scores = np.concatenate(scores)
    order = np.argsort(-scores, kind="stable")
    seen: set[int] = set()
    tp = 0
    thr, tps, kept = [], [], []
    for rank, i in enumerate(order):
        new = [j for j in cand_hits[i] if j not in seen]
        seen.update(new)
        tp += len(new)
        if rank + 1 == len(order) or scores[order[rank + 1]] < scores[i]:  # last of a tie
            thr.append(float(scores[i]))
            tps.append(tp)
            kept.append(rank + 1)
    return np.array(thr), np.array(tps), np.array(kept), n_ref


def best_threshold(per_run: list[RunUnit], hit_radius: float) -> tuple[float, float]:
    """F-beta-optimal score threshold for one class over several runs (micro-averaged).
    Returns (threshold, F-beta at it); (inf, 0) when no threshold finds anything.

    Every threshold between the optimal candidate's score and the next lower one keeps the
    same candidates here; the midpoint is taken, not the optimal score itself. On easy runs
    that gap is wide (true particles far above the false ones) and a threshold at its top
    edge drops the first particle that scores a little lower on harder data: on held-out
    low-SNR runs the midpoint raised the VLP's F4 from 0.66 to 0.95 and changed nothing on
    the validation runs. The highest threshold wins ties of F-beta."""
    thr, tp, kept, n_ref = pr_curve(per_run, hit_radius)
    f = np.array([fbeta(t, k - t, n_ref - t) for t, k in zip(tp, kept, strict=True)])
    if not len(f) or f.max() <= 0:
        return float("inf"), 0.0
    i = int(np.argmax(f))
    return float((thr[i] + thr[i + 1]) / 2 if i + 1 < len(thr) else thr[i]), float(f[i])


@dataclass(frozen=True)
class Tuning:
    """Thresholds chosen on annotated runs and what the metric says at them."""

    thresholds: dict[str, float]
    per_class: dict[str, ClassScore]
    score: float  # weighted F4 over the scored classes
    per_run: tuple[float, ...] = ()  # each run's weighted F4 at the thresholds, where computed
    kept_prior: tuple[str, ...] = ()  # classes that kept the checkpoint's own threshold

    def summary(self) -> dict:
        """Plain numbers: what training logs, reports to Ray and keeps in checkpoints."""
        return {"score": self.score,
                "per_class": {k: v.fbeta for k, v in self.per_class.items()},
                "recall": {k: v.recall for k, v in self.per_class.items()},
                # 0 where the runs annotate none of a class: its F4 of 0 means nothing.
                "references": {k: v.tp + v.fn for k, v in self.per_class.items()},
                "thresholds": dict(self.thresholds)}


def tune_thresholds(dets: list[Detections], truths: list[dict[str, np.ndarray]],
                    particles: ParticleTable, default: float) -> Tuning:
    """Per-class thresholds over all runs together (micro, as the metric). A class whose
    detections never find anything keeps `default`.

    Args: dets[i] and truths[i] (particle name -> reference centres x,y,z Å) are one run."""
    if len(dets) != len(truths):
        raise ValueError(f"{len(dets)} runs of detections but {len(truths)} of truth")
    thresholds = {}
    for p in particles:
        hit = p.radius_A * DISTANCE_MULTIPLIER
        units = [(*d[p.name], t[p.name]) for d, t in zip(dets, truths, strict=True)
                 if p.name in t]
        thr, _ = best_threshold(units, hit)
        thresholds[p.name] = thr if np.isfinite(thr) else default
    return score_at(dets, truths, particles, thresholds)


def score_at(dets: list[Detections], truths: list[dict[str, np.ndarray]],
             particles: ParticleTable, thresholds: dict[str, float]) -> Tuning:
    """What the metric says of several runs together at given thresholds (micro, as the
    metric counts)."""
    per_class = {p.name: sum((c for c in _counts_per_run(dets, truths, p, thresholds[p.name])
                              if c is not None), ClassScore(0, 0, 0)) for p in particles}
    annotated = {p.name for p in particles if any(p.name in t for t in truths)}
    return Tuning(dict(thresholds), per_class,
                  weighted_score(per_class, particles, annotated if truths else None))


def _counts_per_run(dets: list[Detections], truths: list[dict[str, np.ndarray]], p,
                    threshold: float) -> list[ClassScore | None]:
    """One class's counts in each run at a threshold; None where the run's truth does not
    annotate the class (CopickProject.read_truth): its detections there are neither true
    nor false."""
    hit = p.radius_A * DISTANCE_MULTIPLIER
    out = []
    for d, t in zip(dets, truths, strict=True):
        cand, sc = d[p.name]
        out.append(ClassScore(*match_counts(t[p.name], cand[sc >= threshold], hit))
                   if p.name in t else None)
    return out


MIN_SCORE_FLOORS = (0.3, 0.5, 0.7, 0.9)  # what tune and bench/min_score.py report


def precision_recall_at_floors(dets: list[Detections], truths: list[dict[str, np.ndarray]],
                               particles: ParticleTable, thresholds: dict[str, float],
                               floors=MIN_SCORE_FLOORS) -> dict:
    """{"F4" (the thresholds alone), then each floor as text: {scored class: {precision,
    recall, picks}}}, micro over the runs: what `infer --min-score FLOOR` keeps, a pick
    passing its class's threshold and the floor (calibrated scores)."""
    out = {}
    for floor in [None, *floors]:
        at = score_at(dets, truths, particles,
                      {k: max(t, floor or 0.0) for k, t in thresholds.items()})
        out["F4" if floor is None else f"{floor:g}"] = {
            p.name: {"precision": at.per_class[p.name].precision,
                     "recall": at.per_class[p.name].recall,
                     "picks": at.per_class[p.name].tp + at.per_class[p.name].fp}
            for p in particles.scored}
    return out


def class_run_scores(dets: list[Detections], truths: list[dict[str, np.ndarray]],
                     particles: ParticleTable, thresholds: dict[str, float]
                     ) -> dict[str, list[float]]:
    """{scored class: its F4 in each run at the given thresholds} (nan where the run does
    not annotate it, or annotates none of it and has no pick of it)."""
    out = {}
    for p in particles.scored:
        out[p.name] = [fbeta(c.tp, c.fp, c.fn) if c is not None and c.tp + c.fp + c.fn
                       else float("nan")
                       for c in _counts_per_run(dets, truths, p, thresholds[p.name])]
    return out


def per_run_scores(dets: list[Detections], truths: list[dict[str, np.ndarray]],
                   particles: ParticleTable, thresholds: dict[str, float]) -> list[float]:
    """Each run's weighted F4 at the given thresholds (scores in the detections' unit),
    over the scored classes the run annotates (nan where it annotates none)."""
    per_class = {p.name: _counts_per_run(dets, truths, p, thresholds[p.name])
                 for p in particles.scored}
    return [weighted_score({k: v[i] for k, v in per_class.items()}, particles,
                           {k for k, v in per_class.items() if v[i] is not None})
            for i in range(len(dets))]


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b over paired runs and its standard error (nan with fewer than 2 runs):
    whether one setting beats another by more than the runs' own scatter."""
    if len(a) != len(b):
        raise ValueError(f"unpaired: {len(a)} and {len(b)} runs")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[np.isfinite(d)]  # a run that annotates no scored class has no score
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()) if len(d) else float("nan"), se


LEAD_SE = 2.0  # a setting displaces the default only when it leads by this many SE


def keep_first_unless_beaten(tunings: dict) -> object:
    """The key of `tunings` ({setting: Tuning on the same runs}) to use: the first (the
    default), unless the one with the best pooled score leads it run by run by more than
    LEAD_SE standard errors: a lead inside the runs' own scatter is not evidence."""
    keys = list(tunings)
    first = keys[0]
    best = max(keys, key=lambda k: (tunings[k].score, -keys.index(k)))
    if best == first:
        return first
    mean, se = paired_difference(tunings[best].per_run, tunings[first].per_run)
    return best if mean > 0 and (se == 0 or mean > LEAD_SE * se) else first


