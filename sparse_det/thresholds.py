"""Per-class score thresholds chosen for F4, and the precision-recall curves they come from.

Training (validation after each epoch), `sparse_det.tune` and the pictures all call this
module. Counts follow the metric's semantics exactly (sparse_det/metric.py): TP = distinct
references hit, a second candidate on a found reference is a FP, counts summed over runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from data_tools.particles import ParticleTable
from sparse_det.config import CONFIDENCE_BY
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


# --- Calibrated scores ----------------------------------------------------------------------
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


def tune_confidence_power(raw: list[Detections], truths: list[dict[str, np.ndarray]],
                          particles: ParticleTable, powers: list[float], power_was: float,
                          by: tuple[str, ...] = ("tomogram",), by_was: str = "tomogram"
                          ) -> tuple[tuple[str, float], dict[tuple[str, float], Tuning]]:
    """The confidence setting (PostprocessConfig.confidence_by, confidence_power) to use
    among every (by, power) pair (keep_first_unless_beaten: the first, unless the
    best-scoring one on these runs leads it by more than LEAD_SE standard errors run by
    run), and each one's Tuning, per_run filled in. Power 0 is the same for either `by`
    and is tried once. `raw`: uncalibrated detections made at (`by_was`, `power_was`)."""
    powers = list(dict.fromkeys(powers))
    if not powers or any(k < 0 for k in powers):
        raise ValueError(f"confidence powers must be >= 0, got {powers}")
    if not by or any(b not in CONFIDENCE_BY for b in by):
        raise ValueError(f"confidence by one of {CONFIDENCE_BY}, got {list(by)}")
    settings = list(dict.fromkeys((by[0] if k == 0 else b, k) for b in by for k in powers))
    plain = [d.with_confidence_power(power_was, 0.0, by_was) for d in raw]
    tunings = {(b, k): calibrate_and_tune([d.with_confidence_power(0.0, k, b) for d in plain],
                                          truths, particles)[0] for b, k in settings}
    return keep_first_unless_beaten(tunings), tunings


Prior = tuple[dict[str, float], dict[str, list[float]]]  # a checkpoint's (thresholds, calibration)


def calibrate_and_tune(raw: list[Detections], truths: list[dict[str, np.ndarray]],
                       particles: ParticleTable, prior: Prior | None = None,
                       unannotated_from: Prior | None = None
                       ) -> tuple[Tuning, dict[str, list[float]]]:
    """Calibration fit on raw detections, then thresholds (probabilities) on the calibrated
    ones: the same selections and F4 as tuning raw scores. The Tuning's per_run holds each
    run's weighted F4 at them. `prior`: the thresholds the detections' checkpoint already
    has, with their calibration; a class keeps its own unless these runs' best leads it
    (keep_prior_unless_beaten). `unannotated_from` (where there is no `prior`): such
    thresholds for the classes no run annotates (CopickProject.read_truth), which these
    runs cannot set."""
    cal = fit_calibration(raw, truths, particles)
    calibrated = [apply_calibration(d, cal) for d in raw]
    tuning = tune_thresholds(calibrated, truths, particles, CALIBRATED_DEFAULT_THRESHOLD)
    if prior is not None:
        tuning = keep_prior_unless_beaten(tuning, calibrated, truths, particles,
                                          prior_thresholds_in(*prior, cal))
    elif unannotated_from is not None:
        known = prior_thresholds_in(*unannotated_from, cal)
        nowhere = {p.name for p in particles if p.name in known
                   and not any(p.name in t for t in truths)}
        if nowhere:
            tuning = replace(score_at(calibrated, truths, particles, tuning.thresholds
                                      | {n: known[n] for n in nowhere}),
                             kept_prior=tuple(sorted(nowhere)))
    tuning = replace(tuning, per_run=tuple(per_run_scores(calibrated, truths, particles,
                                                          tuning.thresholds)))
    return tuning, cal


def prior_thresholds_in(thresholds: dict[str, float], calibration: dict[str, list[float]],
                        new_calibration: dict[str, list[float]]) -> dict[str, float]:
    """A checkpoint's thresholds as probabilities of `new_calibration`: each is mapped back
    to the vote mass it stands for (an uncalibrated checkpoint's already is one), then
    forward. Both maps are increasing, so the same detections pass."""
    out = {}
    for name, t in thresholds.items():
        if name not in new_calibration or not np.isfinite(t):
            continue
        out[name] = float(_probability(_log_mass(name, t, calibration),
                                       *new_calibration[name]))
    return out


def _log_mass(name: str, t: float, calibration: dict[str, list[float]]) -> float:
    """ln of the vote mass a threshold stands for (an uncalibrated one already is a mass)."""
    if name not in calibration:
        return float(np.log(max(t, 1e-9)))
    a, b = calibration[name]
    q = min(max(t, 1e-12), 1 - 1e-12)
    return float((np.log(q / (1 - q)) - b) / a)


def _masses(dets: list[Detections], name: str) -> np.ndarray:
    return np.concatenate([d[name][1] for d in dets] or [np.zeros(0)])


def _passing(mass_desc: np.ndarray, n: int) -> float:
    """A vote-mass threshold that passes exactly the n largest of `mass_desc` (sorted
    descending): halfway in log mass between the n-th and the next; inf when it is empty."""
    if not len(mass_desc):
        return np.inf
    if n == 0:
        return float(mass_desc[0]) * 1.01
    if n >= len(mass_desc):
        return float(mass_desc[-1])
    return float(np.sqrt(max(mass_desc[n - 1], 1e-12) * max(mass_desc[n], 1e-12)))


def carried_prior(base_raw: list[Detections], raw: list[Detections], prior: Prior,
                  truths: list[dict[str, np.ndarray]], particles: ParticleTable, *,
                  base_rescored: bool = False) -> Prior:
    """The base checkpoint's thresholds carried over to another network's detections of the
    same runs (in vote mass, no calibration): each class's is the lowest of
    - the threshold that passes as many of `raw`'s candidates over all runs as the base's
      passes of `base_raw`'s (halfway, in log mass, between the last passed and the first
      left out);
    - where the prior is a calibrated probability, the mass at which `raw`'s own
      calibration on these runs (fit_calibration, as calibrate_and_tune fits it) gives that
      probability;
    - unless `base_rescored`, the vote mass it stood for.
    Why: a fine-tune's vote masses need not mean what the base's did — carried over by
    mass, the base's beta-galactosidase threshold passed none of a fine-tune's candidates
    on 3 runs beyond every training range (F4 0.072 -> 0.000) — but neither need its counts,
    where the base under-detects (the all-shifted ribosome). F4 weighs recall 16 times
    precision, so of the carry-overs the one that passes most. `base_rescored`: `base_raw`
    holds the base's candidate-rescorer probabilities, not vote masses, and its mass means
    nothing here. Taken as one, the default's virus-like-particle threshold (0.02) sat
    below every fine-tune candidate (0.3-921) and passed all 153 on 3 runs, 105 of them
    false; the tuned threshold's lead (F4 1.00 in each run against 0.99, 0.86, 0.76) fell
    short of 2 standard errors, so the pass-all prior was kept, and 0.3-0.4 of the virus-like
    particles picked on unseen runs were real (docs/experiments.md, *A fine-tune's
    thresholds carried from a rescored base*)."""
    thresholds, calibration = prior
    own = fit_calibration(raw, truths, particles)
    out = {}
    for name, t in thresholds.items():
        if not np.isfinite(t):
            continue
        log_mass = _log_mass(name, t, calibration)
        carries = [_as_many(base_raw, raw, name, log_mass)]
        if name in calibration and name in own:
            carries.append(float(np.exp(_log_mass(name, t, own))))
        if not base_rescored:
            carries.append(float(np.exp(log_mass)))
        out[name] = min(carries)
    return out, {}


def _as_many(base_raw: list[Detections], raw: list[Detections], name: str,
             log_mass: float) -> float:
    """The vote mass that passes as many of `raw`'s candidates of `name` over all runs as
    `log_mass` passes of `base_raw`'s."""
    passed = int((np.log(np.maximum(_masses(base_raw, name), 1e-9)) >= log_mass).sum())
    return _passing(np.sort(_masses(raw, name))[::-1], passed)


def as_many_as_base(tuned: tuple[Tuning, dict[str, list[float]]], base_raw: list[Detections],
                    raw: list[Detections], truths: list[dict[str, np.ndarray]],
                    particles: ParticleTable, prior: Prior, names: list[str]
                    ) -> tuple[Tuning, dict[str, list[float]]]:
    """`tuned` (calibrate_and_tune of `raw`) with the thresholds of `names` passing as many
    of `raw`'s candidates as the base's `prior` passes of `base_raw`'s on the same runs.
    For classes whose annotations are the base's own picks (sparse_det/keep_classes.py):
    F4 against those picks is maximised by passing all of them and whatever comes along
    (a fine-tune annotated for a new complex alone: ribosome precision 1.00 -> 0.69, VLP
    1.00 -> 0.50 on unseen runs); the base's count is what its thresholds, tuned against
    real annotations, stand for."""
    tuning, cal = tuned
    thresholds, calibration = prior
    masses = {n: _as_many(base_raw, raw, n, _log_mass(n, thresholds[n], calibration))
              for n in names if np.isfinite(thresholds.get(n, np.inf))}
    calibrated = [apply_calibration(d, cal) for d in raw]
    new = score_at(calibrated, truths, particles,
                   tuning.thresholds | prior_thresholds_in(masses, {}, cal))
    return replace(new, kept_prior=tuning.kept_prior, per_run=tuple(
        per_run_scores(calibrated, truths, particles, new.thresholds))), cal


def keep_prior_unless_beaten(tuning: Tuning, dets: list[Detections],
                             truths: list[dict[str, np.ndarray]], particles: ParticleTable,
                             prior: dict[str, float]) -> Tuning:
    """`tuning` with each class's threshold set back to its prior (same units as
    `dets`) unless the tuned one leads it run by run (the class's F4 per run) by more than
    LEAD_SE standard errors. Why: a threshold fit on a few runs follows their accidents.
    Tuned on 3 annotated low-SNR runs, the default's apo-ferritin threshold rose six-fold
    (in vote mass) to shed one run's 113 false positives, and on 6 other runs of that
    family F4 fell 0.713 -> 0.674 where the checkpoint's own thresholds (tuned on 27 runs)
    kept 0.713; over 10 such pairs of run sets (README *Thresholds from a few runs*)
    re-tuning everything lost on 7, this rule on 2 (by <= 0.003), and kept most of the
    gain where the checkpoint's thresholds were wrong (all-shifted runs: 0.325 -> 0.395,
    re-tuning everything 0.405). With one run there is no scatter to judge by, and the
    prior stays."""
    thresholds, kept = dict(tuning.thresholds), []
    for p in particles:
        if p.name not in prior or prior[p.name] == thresholds[p.name]:
            continue
        mean, se = paired_difference(*(
            [c.fbeta if c is not None else np.nan for c in _counts_per_run(dets, truths, p, t)]
            for t in (thresholds[p.name], prior[p.name])))
        if not (mean > 0 and (se == 0 or mean > LEAD_SE * se)):
            thresholds[p.name] = prior[p.name]
            kept.append(p.name)
    if not kept:
        return tuning
    return replace(score_at(dets, truths, particles, thresholds), kept_prior=tuple(kept))
