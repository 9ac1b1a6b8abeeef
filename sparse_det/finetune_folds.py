"""A fine-tune's cross-validation folds: how many, and which runs each holds out, so that
every annotated run is detected out of fold once (sparse_det/finetune.py, step 2).
"""

from __future__ import annotations

import math

from data_tools.particles import DataError

# Every run detected out of fold: with 9 all-shifted runs, one held-out fifth (the rule
# until 2026-11-30: 7 trained, thresholds and the gate on 2) scored 0.212 / 0.370 on 6
# unseen runs, 3 folds 0.303 / 0.411 (ribosome 0.34 -> 0.97: its threshold from 9 runs).
FOLDS = 3
# ... and more where a fold would train on fewer: in 3 folds of 4 tilt series one fold
# trained on 2 runs and read beta-galactosidase as background on the 2 it held out (mean
# probability 0.21 -> 0.04), though the model written trains on all 4. Out of fold, 4
# folds against 3: +0.036 (+0.045 with seed 1), +0.020 and -0.013 on three families, the
# base written in all (docs/experiments.md, *Folds of a fine-tune on 4 runs*).
MIN_FOLD_RUNS = 3


def default_folds(n_runs: int) -> int:
    """The fewest folds, FOLDS at least, in which every fold trains on MIN_FOLD_RUNS runs
    (n_runs − 1 where there are fewer)."""
    least = min(MIN_FOLD_RUNS, n_runs - 1)
    k = min(FOLDS, n_runs)
    while n_runs - math.ceil(n_runs / k) < least:
        k += 1
    return k


def folds_for(runs: list[str], n_folds: int | None = None
              ) -> list[tuple[list[str], list[str]]]:
    """[(training runs, validation runs)]: min(runs, n_folds) folds, each holding out
    every n-th run; `n_folds` None: default_folds."""
    if len(runs) < 2:
        raise DataError(f"fine-tuning needs at least 2 annotated runs, got {runs}")
    if n_folds is None:
        n_folds = default_folds(len(runs))
    if n_folds < 2:  # one fold of every-n-th would hold out every run
        raise ValueError(f"--folds must be at least 2, got {n_folds}")
    k = min(len(runs), n_folds)
    return [([r for j, r in enumerate(runs) if j % k != i], runs[i::k]) for i in range(k)]
