"""Scores as probabilities: a per-class logistic map of ln(vote mass) onto "this detection
finds a particle", fit on annotated runs' detections (the metric's first-hit rule) and
applied at inference."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from data_tools.particles import ParticleTable
from sparse_det.metric import DISTANCE_MULTIPLIER
from sparse_det.structures import Detections

# Raw scores are vote masses (summed voxel probabilities): their scale differs by class and
# by checkpoint (ribosome 100s, apo-ferritin 1s). A per-class logistic map of ln(mass) onto
# "this detection finds a particle" turns them into probabilities: monotone, so F4-optimal
# selections do not change, and thresholds read as probabilities.
CALIBRATED_DEFAULT_THRESHOLD = 0.5  # for a class validation never found
MIN_SLOPE = 0.1  # keeps the map increasing where the fit comes out flat or inverted
L2 = 1e-2


def first_hit_labels(cand: np.ndarray, scores: np.ndarray, ref: np.ndarray,
                     hit_radius: float) -> np.ndarray:
    """1 for a candidate that finds a reference no higher-scored candidate found (a TP by
    the metric's rules), else 0."""
    labels = np.zeros(len(cand))
    if not len(cand) or not len(ref):
        return labels
    hits = cKDTree(ref).query_ball_point(cand, hit_radius)
    seen: set[int] = set()
    for i in np.argsort(-scores, kind="stable"):
        new = [j for j in hits[i] if j not in seen]
        if new:
            labels[i] = 1.0
            seen.update(new)
    return labels


def _fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a·x + b) by Newton's method (L2 on the slope only)."""
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mu) / sd
    w = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(w[0] * z + w[1])))
        r = p * (1 - p)
        grad = np.array([np.sum((p - y) * z) + L2 * w[0], np.sum(p - y)])
        hess = np.array([[np.sum(r * z * z) + L2, np.sum(r * z)],
                         [np.sum(r * z), np.sum(r) + 1e-9]])
        w -= np.linalg.solve(hess, grad)
    a = w[0] / sd
    return float(a), float(w[1] - w[0] * mu / sd)


def fit_calibration(dets: list[Detections], truths: list[dict[str, np.ndarray]],
                    particles: ParticleTable) -> dict[str, list[float]]:
    """Per class [a, b]: p = sigmoid(a·ln(score) + b), fit on detections of annotated runs.
    A class with no found (or no missed) particle maps its scores below 0.05 (above 0.95)."""
    cal = {}
    for p in particles:
        hit = p.radius_A * DISTANCE_MULTIPLIER
        xs, ys = [], []
        for d, t in zip(dets, truths, strict=True):
            if p.name not in t:  # not annotated there: its candidates are neither
                continue
            cand, sc = d[p.name]
            xs.append(np.log(np.maximum(sc, 1e-9)))
            ys.append(first_hit_labels(cand, sc, t[p.name], hit))
        x, y = np.concatenate([np.zeros(0), *xs]), np.concatenate([np.zeros(0), *ys])
        if not len(x):
            cal[p.name] = [1.0, 0.0]
        elif y.sum() == 0:
            cal[p.name] = [1.0, -float(x.max()) - 3.0]
        elif y.sum() == len(y):
            cal[p.name] = [1.0, -float(x.min()) + 3.0]
        else:
            a, b = _fit_logistic(x, y)
            cal[p.name] = [max(a, MIN_SLOPE), b]
    return cal


def _probability(log_mass, a: float, b: float):
    """The calibration's map: sigmoid(a·ln(vote mass) + b). The logit is clipped at ±60,
    where the sigmoid is 0 or 1 to 26 digits: the rescorer's scores reach ln(p) ≈ -20, and
    exp would overflow (a warning, the same 0)."""
    return 1.0 / (1.0 + np.exp(-np.clip(a * log_mass + b, -60.0, 60.0)))


def apply_calibration(dets: Detections, cal: dict[str, list[float]]) -> Detections:
    """Scores mapped to probabilities (classes without a calibration keep theirs)."""
    out = {}
    for name, (xyz, scores) in dets.per_class.items():
        out[name] = (xyz, _probability(np.log(np.maximum(scores, 1e-9)), *cal[name])
                     if name in cal else scores)
    return Detections(dets.run, out, dets.confidence, dets.class_confidence)
