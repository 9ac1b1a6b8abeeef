"""The competition metric (docs/formats.md, "The metric"), exactly.

Per experiment and class: a hit is a candidate within 0.5·radius of a reference (distance ≤ r);
TP = distinct references hit; FP = candidates − TP; FN = references − TP. Counts are summed over
experiments per class (micro), F-beta with beta=4 per class, weighted mean over classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import KDTree

from data_tools.particles import DataError, ParticleTable

BETA = 4.0
DISTANCE_MULTIPLIER = 0.5  # a candidate hits a reference within this fraction of its radius


def fbeta(tp: float, fp: float, fn: float, beta: float = BETA) -> float:
    """F-beta from counts; 0 where precision or recall is undefined."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    d = beta**2 * p + r
    return (1 + beta**2) * p * r / d if d > 0 else 0.0


@dataclass(frozen=True)
class ClassScore:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def fbeta(self) -> float:
        return fbeta(self.tp, self.fp, self.fn)

    def __add__(self, other: ClassScore) -> ClassScore:
        return ClassScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "fbeta": self.fbeta}


@dataclass(frozen=True)
class Score:
    score: float
    per_class: dict[str, ClassScore]
    not_annotated: tuple[tuple[str, str], ...] = ()  # (run, particle) pairs left unscored

    def to_dict(self) -> dict:
        out = {"score": self.score, "per_class": {k: v.to_dict() for k, v in
                                                  self.per_class.items()}}
        if self.not_annotated:
            out["not_annotated"] = [list(pair) for pair in self.not_annotated]
        return out

    def table(self) -> str:
        lines = [f"{'particle':<22}{'TP':>6}{'FP':>6}{'FN':>6}{'prec':>8}{'recall':>8}{'F4':>8}"]
        for name, c in self.per_class.items():
            lines.append(f"{name:<22}{c.tp:>6}{c.fp:>6}{c.fn:>6}{c.precision:>8.3f}"
                         f"{c.recall:>8.3f}{c.fbeta:>8.3f}")
        lines.append(f"{'weighted F4':<22}{'':>32}{self.score:>8.4f}")
        by_run: dict[str, list[str]] = {}
        for run, particle in self.not_annotated:
            by_run.setdefault(run, []).append(particle)
        lines += [f"not scored in {run} (not annotated, or picked in part, there): "
                  f"{', '.join(names)}"
                  for run, names in by_run.items()]
        return "\n".join(lines)


def weighted_score(per_class: dict[str, ClassScore], particles: ParticleTable,
                   among: set[str] | None = None) -> float:
    """Σ weight·F-beta / Σ weight over the scored classes (a class absent from per_class
    counts as F-beta 0); `among`: over those of the scored classes only (the ones the
    truth annotates somewhere), nan where that leaves none."""
    scored = [p for p in particles.scored if among is None or p.name in among]
    total = sum(p.weight for p in scored)
    if not total:
        return float("nan")
    return sum(p.weight * per_class[p.name].fbeta for p in scored
               if p.name in per_class) / total


def match_counts(reference_xyz_A: np.ndarray, candidate_xyz_A: np.ndarray,
                 radius_A: float) -> tuple[int, int, int]:
    """(TP, FP, FN) for one experiment and class; radius_A is the hit distance."""
    ref = np.asarray(reference_xyz_A, dtype=np.float64).reshape(-1, 3)
    cand = np.asarray(candidate_xyz_A, dtype=np.float64).reshape(-1, 3)
    if len(ref) == 0 or len(cand) == 0:
        return 0, len(cand), len(ref)
    hits = KDTree(cand).query_ball_tree(KDTree(ref), radius_A)
    tp = len({j for js in hits for j in js})
    return tp, len(cand) - tp, len(ref) - tp


def score_tables(solution: pd.DataFrame, submission: pd.DataFrame,
                 particles: ParticleTable, *, experiments: list[str] | None = None,
                 not_annotated: set[tuple[str, str]] | frozenset = frozenset()) -> Score:
    """Scores a submission DataFrame against a solution DataFrame (columns experiment,
    particle_type, x, y, z in Å). The submission is restricted to `experiments` (default:
    the solution's); (experiment, particle) pairs in `not_annotated` are not scored."""
    for df, what in ((solution, "solution"), (submission, "submission")):
        unknown = sorted(set(df["particle_type"]) - set(particles.names))
        if unknown:
            raise DataError(f"{what}: unknown particle_type {unknown}; known: {particles.names}")
    experiments = set(solution["experiment"]) if experiments is None else set(experiments)
    submission = submission[submission["experiment"].isin(experiments)]
    per_class = {}
    for p in particles.scored:
        tp = fp = fn = 0
        sol_p = solution[solution["particle_type"] == p.name]
        sub_p = submission[submission["particle_type"] == p.name]
        sol_groups = dict(tuple(sol_p.groupby("experiment")))
        sub_groups = dict(tuple(sub_p.groupby("experiment")))
        for exp in experiments:
            if (exp, p.name) in not_annotated:
                continue
            ref = sol_groups.get(exp, sol_p.iloc[:0])[["x", "y", "z"]].to_numpy()
            cand = sub_groups.get(exp, sub_p.iloc[:0])[["x", "y", "z"]].to_numpy()
            a, b, c = match_counts(ref, cand, p.radius_A * DISTANCE_MULTIPLIER)
            tp, fp, fn = tp + a, fp + b, fn + c
        per_class[p.name] = ClassScore(tp, fp, fn)
    skipped = sorted((e, n) for e, n in not_annotated
                     if e in experiments and n in particles.names)
    somewhere = {n for n in particles.names
                 if any((e, n) not in not_annotated for e in experiments)}
    return Score(weighted_score(per_class, particles, somewhere if skipped else None),
                 per_class, tuple(skipped))
