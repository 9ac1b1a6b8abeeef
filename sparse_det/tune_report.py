"""What `python -m sparse_det.tune` prints: each class's threshold old and new with its F4,
precision and recall at infer's --min-score floors, the confidence settings and the
test-time settings and checkpoints tried, each against the first run by run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sparse_det.thresholds import paired_difference

if TYPE_CHECKING:
    from sparse_det.tune import Retuned


def print_confidence(confidence: dict, by_power: dict, best: tuple[str, float]) -> None:
    """The tuning runs' confidence range, and each confidence setting tried against the
    first, run by run."""
    conf = [c for runs_c in confidence.values() for c in runs_c.values()]
    print(f"confidence (mean top-class probability of predicted-particle voxels) of the "
          f"runs: {min(conf):.3f}-{max(conf):.3f}, median {float(np.median(conf)):.3f}")
    if len(by_power) < 2:
        return
    s0, t0 = next(iter(by_power.items()))
    for (by, k), t in by_power.items():
        mean, se = paired_difference(t.per_run, t0.per_run)
        vs = ("" if (by, k) == s0 else
              f", {mean:+.4f} ± {se:.4f} against {s0[0]} {s0[1]:g} run by run")
        print(f"--confidence-by {by} --confidence-power {k:g}: weighted F4 "
              f"{t.score:.4f}{vs}{'  <- stored' if (by, k) == best else ''}")


def print_choice(labels: list[str], results: list[Retuned], chosen: int) -> None:
    base = results[0].default
    print(f"checkpoints, each at its own thresholds on the same {results[0].n_runs} run(s):")
    for i, (label, r) in enumerate(zip(labels, results, strict=True)):
        t = r.default
        vs = ""
        if i:
            mean, se = paired_difference(t.per_run, base.per_run)
            vs = f"   against the first, run by run: {mean:+.4f} ± {se:.4f}"
        print(f"  {label}: weighted F4 {t.score:.4f}{vs}"
              f"{'  <- chosen' if i == chosen else ''}")


def print_tuning(result: Retuned) -> None:
    old, tunings, n_runs = result.old_thresholds, result.tunings, result.n_runs
    unit = "" if result.old_calibrated else " (vote mass; now a probability)"
    for i, (tta, tuning) in enumerate(tunings.items()):
        role = "the default" if i == 0 else f"used with --tta {tta}"
        print(f"--tta {tta} ({role}): thresholds: old{unit} -> new probability")
        for name, c in tuning.per_class.items():
            kept = ("   (the old one, recalibrated: not beaten by 2 SE run by run)"
                    if name in tuning.kept_prior else "")
            print(f"{name:<22} threshold {old.get(name, float('nan')):9.3g} -> "
                  f"{tuning.thresholds[name]:6.3f}   F4 {c.fbeta:.3f} (R {c.recall:.2f}){kept}")
        print(f"weighted F4 on {n_runs} run(s) at the new thresholds: {tuning.score:.4f}")
    print_floors(result.floors)
    print_confidence(result.confidence, result.by_confidence, result.confidence_setting)
    (first, base), *others = tunings.items()
    for tta, tuning in others:
        mean, se = paired_difference(tuning.per_run, base.per_run)
        # Whether the dearer setting is worth its cost: a gap under ~2 SE is the runs' scatter.
        print(f"--tta {tta} against --tta {first}, run by run (each at its own thresholds): "
              f"{mean:+.4f} ± {se:.4f} (mean difference ± its standard error, {n_runs} runs)")


def print_floors(floors: dict) -> None:
    """Precision / recall per class at the new thresholds and with each `--min-score`."""
    if not floors:
        return
    cols = list(floors)
    print("precision / recall on these runs at the new thresholds (F4) and with infer "
          "--min-score: " + ", ".join(cols[1:]))
    for name in floors[cols[0]]:
        print(f"{name:<22} " + "   ".join(f"{c:>3}: {floors[c][name]['precision']:.2f} / "
                                         f"{floors[c][name]['recall']:.2f}" for c in cols))
