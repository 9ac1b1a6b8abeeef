"""A fine-tune against the checkpoint it started from, on the same held-out runs: which of
the two sparse_det.finetune writes (step 4 of its doc), each class's lead run by run, and
what the log says of them."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def fold_detections(checkpoint: Path, project, runs: list[str], shards: Path, device: str):
    from sparse_det.inference import Picker

    picker = Picker.load(checkpoint, device)
    # Vote masses: one calibration is fit on every fold's detections together.
    return [picker.detect_run(project, r, shards, calibrated=False) for r in runs]


def against_base(dets, truths, project, base, kw: dict, settings, prior, kept=()):
    """({"base", "fine-tune": (Tuning, calibration)}, the base's detections if the base is
    kept (else None), the fine-tune's lead run by run as (mean, SE), and each class's
    (_per_class_versus)). The base picks the same runs; never having trained on any, its
    detections are as held out as the folds'.
    A few annotated runs can teach the network less than they cost it (3 runs at SNR
    0.22-0.3: out-of-fold 0.737 against the base's 0.756 there, and 0.702 against 0.722 on
    4 more such runs), so the fine-tune must lead by more than the runs' scatter
    (keep_first_unless_beaten). `kept`: classes whose annotations are the base's own picks
    (sparse_det/keep_classes.py): they do not score, as the base would always match itself
    there, and their thresholds pass as many picks as the base's (as_many_as_base)."""
    from data_tools.particles import ParticleTable
    from sparse_det.calibrated_tuning import as_many_as_base, calibrate_and_tune, carried_prior
    from sparse_det.thresholds import keep_first_unless_beaten, paired_difference

    runs = [d.run for d in dets]
    base_dets = fold_detections(Path(base), project, runs, kw["work"] / "shards",
                                 kw["device"])
    # The fine-tune's vote masses need not mean what the base's did (carried_prior).
    ft_prior = None if prior is None else carried_prior(
        base_dets, dets, prior, truths, project.particles,
        base_rescored=settings.has_rescorer)
    # Both are scored on the project's annotated classes: a class the base does not have
    # scores 0 for it, one the project does not list is not scored.
    scored = ParticleTable([replace(p, weight=0.0) if p.name in kept else p
                            for p in project.particles])
    tuned = {"base": calibrate_and_tune(base_dets, truths, scored, prior),
             "fine-tune": calibrate_and_tune(dets, truths, scored, ft_prior)}
    own = settings.prior(settings.config.postprocess.tta)
    if kept and own is not None:  # their picks are the base's: as many as it makes
        tuned["fine-tune"] = as_many_as_base(tuned["fine-tune"], base_dets, dets, truths,
                                             scored, own, list(kept))
    chosen = keep_first_unless_beaten({k: t for k, (t, _) in tuned.items()})
    versus = paired_difference(tuned["fine-tune"][0].per_run, tuned["base"][0].per_run)
    if chosen == "base" and _learnt_what_the_base_cannot(tuned, scored, settings, versus):
        chosen = "fine-tune"
    return tuned, base_dets if chosen == "base" else None, versus, _per_class_versus(
        tuned, {"fine-tune": dets, "base": base_dets}, truths, scored)


def _per_class_versus(tuned: dict, dets: dict, truths, scored) -> dict[str, list[float]]:
    """{annotated scored class: [the fine-tune's out-of-fold F4 minus the base's, run by
    run: mean, SE]}. A fine-tune is written for its weighted lead, and one class may pay
    for it: a proteasome learnt on noisier copies cost thyroglobulin 0.928 -> 0.869 on new
    runs (docs/experiments.md, *A fine-tune's added noise*)."""
    from sparse_det.calibration import apply_calibration
    from sparse_det.thresholds import class_run_scores, paired_difference

    f4 = {k: class_run_scores([apply_calibration(d, tuned[k][1]) for d in ds], truths,
                              scored, tuned[k][0].thresholds) for k, ds in dets.items()}
    return {n: list(paired_difference(f4["fine-tune"][n], runs))
            for n, runs in f4["base"].items()
            if sum(np.isfinite(runs) & np.isfinite(f4["fine-tune"][n])) >= 2}


def classes_it_costs(per_class: dict[str, list[float]]) -> dict[str, list[float]]:
    """The classes of _per_class_versus that the fine-tune picks worse than the base by more
    than thresholds.LEAD_SE standard errors run by run."""
    from sparse_det.thresholds import LEAD_SE

    return {n: d for n, d in per_class.items() if d[0] + LEAD_SE * d[1] < 0}


def _learnt_what_the_base_cannot(tuned: dict, scored, settings, versus) -> list[str]:
    """The scored classes the base has no output for that the fine-tune picks out of fold,
    where it also leads the base on average: then the fine-tune is written though its lead
    is within 2 SE. The base picks none of them at all, which is what the annotations ask
    for; on 2 small runs a fine-tune learning a new class led by 0.048 ± 0.047 and the
    base, which cannot pick it, was written (tests/test_particle_classes.py)."""
    per_class = tuned["fine-tune"][0].summary()["per_class"]
    learnt = [p.name for p in scored if p.weight > 0 and p.name not in settings.particles
              and per_class.get(p.name, 0.0) > 0]
    if not learnt or versus[0] <= 0:
        return []
    log.info("the base has no class %s, which the fine-tune picks out of fold (F4 %s) while "
             "leading it on average: writing the fine-tune", learnt,
             ", ".join(f"{per_class[n]:.3f}" for n in learnt))
    return learnt


def log_choice(tuned: dict, tuning, versus, base_won: bool, with_prior: bool,
                missing: list[str], per_class: dict) -> None:
    log.info("weighted F4 on the held-out runs: fine-tune %.4f, base %.4f (%+.4f ± %.4f run "
             "by run)%s", tuned["fine-tune"][0].score, tuned["base"][0].score, *versus,
             f"; thresholds: kept the base's for {', '.join(tuning.kept_prior) or 'no class'}"
             " (not beaten by 2 SE run by run)" if with_prior else "")
    log.info("per class, fine-tune minus base run by run: %s", ", ".join(
        f"{n} {d:+.3f} ± {se:.3f}" for n, (d, se) in per_class.items()) or "fewer than 2 runs")
    if costs := not base_won and classes_it_costs(per_class):
        log.warning("the fine-tune is written for its weighted lead, but picks %s worse than "
                    "the base on the held-out runs (by more than 2 SE run by run): for %s, "
                    "the base's picks may serve better", ", ".join(costs),
                    "it" if len(costs) == 1 else "them")
    if base_won:
        log.info("the fine-tune does not beat the base by 2 SE: writing the base with "
                 "thresholds tuned on these runs")
        if missing:
            log.warning("the base has no class %s: the checkpoint written picks none of "
                        "them (annotate more of them, or train longer: --steps)", missing)
