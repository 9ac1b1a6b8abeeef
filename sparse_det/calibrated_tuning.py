"""Thresholds tuned on calibrated scores (calibrate_and_tune), a checkpoint's own kept
unless the runs' best leads it run by run, the tomogram-confidence setting chosen so, and a
base checkpoint's thresholds carried to a fine-tuned network's detections of the same runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from data_tools.particles import ParticleTable
from sparse_det.calibration import (
    CALIBRATED_DEFAULT_THRESHOLD,
    _probability,
    apply_calibration,
    fit_calibration,
)
from sparse_det.config import CONFIDENCE_BY
from sparse_det.structures import Detections
from sparse_det.thresholds import (
    LEAD_SE,
    Tuning,
    _counts_per_run,
    keep_first_unless_beaten,
    paired_difference,
    per_run_scores,
    score_at,
    tune_thresholds,
)


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
