"""Fine-tunes a checkpoint on your own annotated runs in one command, with thresholds that
never come from a run the model trained on.

    python -m sparse_det.finetune --project DIR --out my.pt [--checkpoint BASE] [--runs ...]
        [--steps N] [--minutes M] [--device auto|cpu|cuda] [--work DIR] [--fresh]
        [--blend A] [--fit-all-thresholds] [--lr LR] [--folds K] [--class-map NAME=CLASS ...]
        [--config-radii] [--noise-rel LO HI] [--distill W]

1. The annotated runs (a run without picks is left out, and the log says so). The base's
   scored classes that none of them annotates are annotated there with the base's own
   picks, in a copick project over the same tomograms, so the fine-tune keeps picking
   them (sparse_det/keep_classes.py); they do not count in step 4's comparison.
2. Validation: min(runs, 3) cross-validation folds, 4 with 4 runs so that no fold trains
   on 2 of them (`--folds K`: K), each holding out every K-th run, so every run is
   detected out of fold once. Each fold trains
   from the base checkpoint on the other runs, stopping early when validation F4 stops
   rising, and its best epoch detects its held-out runs.
3. Per-class thresholds tuned on those out-of-fold detections only (a class keeps the
   base's unless they beat it: calibrated_tuning.keep_prior_unless_beaten; carried over to the
   fine-tune as the lowest of: the threshold passing as many picks on these runs, the
   probability it stands for in the fine-tune's calibration, and the vote mass it stands
   for where the base has no rescorer: calibrated_tuning.carried_prior).
4. The base detects the same runs; unless the fine-tune leads it there by more than 2
   standard errors run by run, the output is the base with thresholds tuned on them. The
   log gives each class's lead run by run as well, and warns of a class a written
   fine-tune picks worse than the base by more than 2 standard errors.
5. Otherwise the final model trains on every run for the folds' median best number of
   steps.
   `--blend A`: every trained model is A × itself + (1 − A) × the base.
6. `--out`: the final weights with the out-of-fold thresholds. Shards and each training's
   folder live under `--work` (default `<out>.work/`), each training's named by its runs and
   --lr: a rerun with the same ones resumes, other runs, folds or --lr train afresh beside
   them, `--fresh` deletes the folder first.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

from data_tools.cli_args import expand_home
from data_tools.particles import DataError
from data_tools.run_names import runs_named
from data_tools.truth_user import add_truth_user_argument
from sparse_det.adaptation_cli import adaptation_arguments, run_or_report, setup_logging
from sparse_det.against_base import against_base, fold_detections, log_choice
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.checkpoint_radii import with_checkpoint_radii
from sparse_det.class_match import add_class_map_argument, parse_class_map
from sparse_det.finetune_folds import FOLDS, folds_for
from sparse_det.soup import blend as soup_blend
from sparse_det.soup import check_blend

log = logging.getLogger(__name__)

FINETUNE_LR = 1e-3  # a third of training from scratch: the base weights are a good start
FINETUNE_STEPS = 300  # per training; 300 lifted an unseen family from 0.77 to 0.95
STEPS_PER_EPOCH = 50
PATIENCE = 3  # epochs without a better validation F4 before a fold stops
# Added noise of a fine-tune's appearance copies, in the volume's robust sigma (the base
# trained with up to 2.5 on many runs spanning SNR; a fine-tune sees a few runs of a narrow
# span). A proteasome learnt from 3 runs at SNR 1.2-2.25 read 0.30 on runs at 0.4-1.15 with
# the base's, 0.68 with this, level on runs like the 3 (bench/new_complex.py --noise-rel;
# docs/experiments.md, *A fine-tune's added noise*).
FINETUNE_NOISE_REL = (0.5, 4.0)
FINETUNE_VARIANTS = 2  # appearance copies of each run, at least
# Learning without forgetting (--distill W, loss.distill_weight). Off: at W = 1 it raised
# the out-of-fold F4 on five families (0.007-0.031), but its fold models picked runs no
# training saw no better (0.727 against 0.725), and at low SNR it led the base out of fold
# while picking new runs worse (docs/experiments.md, *Learning without forgetting on five
# families*).
FINETUNE_DISTILL = 0.0


def training_name(prefix: str, train_runs: list[str], val_runs: list[str], lr: float,
                  steps: int | None = None, truth_user: str = "",
                  noise_rel: tuple[float, float] | None = None, distill: float = 0.0
                  ) -> str:
    """The folder of one training under --work, named by what it trains on and at which
    rate: a rerun with the same runs resumes it, one with other runs, folds, --lr,
    --truth-user, added noise or --distill gets its own (one folder per fold number silently resumed
    the earlier fine-tune's folds). `steps` names the final model, whose length the folds
    decide."""
    what = {"train": train_runs, "val": val_runs, "lr": lr, "steps": steps}
    if truth_user:  # only when set: the folders of trainings before it keep their names
        what["truth_user"] = truth_user
    if noise_rel:
        what["noise_rel"] = list(noise_rel)
    if distill:
        what["distill"] = distill
    key = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    return f"{prefix}_lr{lr:g}_{key}"


def training_config(base_cfg, *, project: str, base: str, work: Path, name: str,
                    train_runs: list[str], val_runs: list[str], steps: int,
                    budget_s: float, device: str, lr: float = FINETUNE_LR,
                    truth_user: str = "", noise_rel: tuple[float, float] | None = None,
                    distill: float = 0.0):
    """The base checkpoint's config (same model and sparse features) set up to fine-tune;
    `noise_rel`: its appearance copies' added noise instead of the base's (at least
    FINETUNE_VARIANTS copies of each run); `distill`: loss.distill_weight."""
    cfg = copy.deepcopy(base_cfg)
    cfg.loss.distill_weight = distill
    if noise_rel:
        cfg.data.appearance = {**cfg.data.appearance, "noise_rel": list(noise_rel)}
        cfg.data.appearance_variants = max(cfg.data.appearance_variants, FINETUNE_VARIANTS)
    cfg.data.project, cfg.data.shards = str(project), str(work / "shards")
    cfg.data.truth_user = truth_user
    cfg.data.train_runs, cfg.data.val_runs = list(train_runs), list(val_runs)
    cfg.data.simulate.runs = 0
    t = cfg.train
    t.init_checkpoint, t.out_dir = str(Path(base).resolve()), str(work / name)
    t.lr, t.steps, t.steps_per_epoch = lr, steps, min(STEPS_PER_EPOCH, steps)
    t.time_budget_s, t.patience, t.device = budget_s, PATIENCE, device
    # A base trained with a moving average of its weights would hand it on: over a few
    # hundred steps with early stopping it lags what each epoch's validation judges, and
    # at 0.99 it fine-tuned 4 tilt series to 0.831 out of fold against 0.839 without
    # (docs/experiments.md, *A moving average of the weights*).
    t.ema_decay = 0.0
    return cfg


def work_dir(out: Path, work: str | Path | None, fresh: bool) -> Path:
    """Where a fine-tune or an adaptation keeps its shards and trainings: `work`, else next
    to `out`; emptied first when `fresh`, else what is there is resumed from."""
    work = Path(work) if work else out.with_suffix(".work")
    if fresh and work.exists():
        shutil.rmtree(work)
    return work


def _annotated(project, runs: list[str] | None) -> list[str]:
    """The project's annotated runs among `runs` (every run where None), at least two of
    them, else an error naming the project."""
    annotated = project.annotated_runs(runs_named([project], runs)[0])
    if len(annotated) < 2:
        raise DataError(f"{project.path}: fine-tuning needs at least 2 "
                        f"annotated runs, found {annotated or 'none'} (python -m "
                        "data_tools.info PROJECT shows whose picks are read)")
    return annotated


def finetune(project_path: str, out: str | Path, *, base: str | Path = DEFAULT_CHECKPOINT,
             runs: list[str] | None = None, steps: int = FINETUNE_STEPS,
             minutes: float = 0.0, device: str = "auto", work: str | Path | None = None,
             fresh: bool = False, progress: bool = False, trainer=None,
             blend: float = 1.0, fit_all: bool = False, lr: float = FINETUNE_LR,
             n_folds: int | None = None, truth_user: str | None = None,
             class_map: dict[str, str] | None = None, config_radii: bool = False,
             noise_rel: tuple[float, float] = FINETUNE_NOISE_REL,
             distill: float = FINETUNE_DISTILL) -> dict:
    """Runs the recipe in the module doc; returns a summary (folds, out-of-fold F4).
    `trainer`: runs the folds' trainings, [Config] -> [best checkpoint path] (default: one
    after the other here; ray_jobs/finetune.py runs them as Ray tasks at once).
    `blend` < 1: every trained model is replaced by blend × itself + (1 − blend) × the base
    (sparse_det.soup.blend). A class keeps the base's threshold unless the out-of-fold
    detections' best leads it run by run; `fit_all`: never. `truth_user`: whose picks are
    the annotations. `class_map`: see _named_base. A class whose radius in the config is
    far off the base's is fine-tuned with the base's (sparse_det/checkpoint_radii.py)
    unless `config_radii`. `noise_rel`: the appearance copies' added noise (LO, HI);
    `distill`: each training's loss.distill_weight (nearness to the base's output)."""
    from sparse_det.checkpoint import checkpoint_settings

    _check_arguments(steps, minutes, blend, lr, noise_rel, distill)
    out, given_base = Path(out), base
    work = work_dir(out, work, fresh)
    project, base = _named_base(project_path, truth_user, base, class_map, work)
    settings = checkpoint_settings(base)
    runs = _annotated(project, runs)
    project, truth_user = (project, truth_user) if config_radii else with_checkpoint_radii(
        project, runs, settings.particles, work, truth_user)
    folds = folds_for(runs, n_folds)
    project, truth_user, kept = _keeping_base_classes(project, runs, settings, base, work,
                                                      device, truth_user)
    budget_s = minutes * 60 / (len(folds) + 1) if minutes else 0.0  # + the final model
    _log_plan(base, runs, project, len(folds), steps, lr, budget_s)
    kw = {"project": project.path, "base": str(base), "work": work, "steps": steps,
          "budget_s": budget_s, "device": device, "lr": lr, "truth_user": truth_user or "",
          "noise_rel": tuple(noise_rel), "distill": distill}
    dets, truths, fold_info = _run_folds(folds, project, settings, kw, progress, trainer,
                                         blend)
    prior = None if fit_all else settings.prior(settings.config.postprocess.tta)
    tuned, base_dets, versus, per_class = against_base(dets, truths, project, base, kw,
                                                        settings, prior, kept)
    base_won = base_dets is not None
    tuning, calibration = tuned["base" if base_won else "fine-tune"]
    log_choice(tuned, tuning, versus, base_won, with_prior=prior is not None,
                missing=[n for n in project.particles.names if n not in settings.particles],
                per_class=per_class)
    final = Path(base) if base_won else soup_blend(
        _train_final(fold_info, runs, settings, kw, progress), base, work / "final_blend.pt",
        blend)
    summary = {"base": str(given_base), "runs": runs, "lr": lr, "blend": blend,
               "noise_rel": list(noise_rel), "distill": distill, "folds": fold_info,
               "oof": tuning.summary(), "base_kept": base_won, "kept_from_base": kept,
               "scores": {k: t.score for k, (t, _) in tuned.items()},
               "per_class": {k: t.summary()["per_class"] for k, (t, _) in tuned.items()},
               "versus_base": list(versus), "per_class_versus_base": per_class,
               "final": str(final), "trained_on": str(project.path)}
    _write(final, out, tuning.thresholds, calibration, summary,
           {project.path.name: {d.run: d.confidence for d in base_dets or dets}})
    return summary


def _write(final: Path, out: Path, thresholds: dict, calibration: dict, summary: dict,
           confidence: dict) -> None:
    """The checkpoint written: `final`'s weights with the out-of-fold thresholds and
    calibration, and the written model's confidence on those runs ({project: {run: c}}),
    which infer compares each tomogram's with (stream.warn_if_unsure)."""
    from sparse_det.checkpoint import write_retuned

    write_retuned(final, out, thresholds=thresholds, calibration=calibration,
                  extra={"finetune": summary, "tuned_confidence": confidence})


def _log_plan(base, runs: list[str], project, n_folds: int, steps: int, lr: float,
              budget_s: float) -> None:
    log.info("fine-tuning %s on %d annotated run(s) of %s: %d folds, then the final model "
             "on all runs; up to %d steps each at lr %g%s", Path(base).name, len(runs),
             project.path, n_folds, steps, lr, f", {budget_s:.0f} s each" if budget_s else "")


def _named_base(project_path: str, truth_user: str | None, base, class_map, work: Path):
    """(the project, the base to fine-tune): where the base knows the
    project's classes by other names (or `class_map`'s pairs), a copy of it that calls them
    as the project does (class_match.named_as_listed), so that every comparison by name
    holds and the checkpoint written does too."""
    from data_tools.copick_io import CopickProject
    from sparse_det.class_match import named_as_listed

    project = CopickProject(project_path, truth_user=truth_user)
    return project, named_as_listed(base, project.particles, class_map, work, log.info)


def check_budget(steps: int, minutes: float, blend: float) -> None:
    """A training's step count, time budget and blend, checked before any work: 0 steps
    trained nothing and then failed on a missing checkpoint, a negative budget trained
    unbounded."""
    check_blend(blend)
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    if not minutes >= 0:
        raise ValueError(f"--minutes must be 0 (no budget) or more, got {minutes}")


def _check_arguments(steps: int, minutes: float, blend: float, lr: float, noise_rel,
                     distill: float) -> None:
    check_budget(steps, minutes, blend)
    if not distill >= 0:
        raise ValueError(f"--distill must be 0 or more, got {distill}")
    if not lr > 0:
        raise ValueError(f"--lr must be positive, got {lr}")
    if len(noise_rel) != 2 or not 0 <= noise_rel[0] <= noise_rel[1]:
        raise ValueError(f"--noise-rel LO HI needs 0 <= LO <= HI, got {list(noise_rel)}")


def _keeping_base_classes(project, runs: list[str], settings, base, work: Path, device: str,
                          truth_user: str | None):
    """(the project to fine-tune on, whose picks are its truth, the classes kept): where no
    run annotates some of the base's scored classes, a project whose runs also annotate
    them with the base's picks (sparse_det/keep_classes.py)."""
    from sparse_det.keep_classes import SESSION, USER, never_annotated, with_base_picks

    lost = never_annotated(project, runs, settings.particles)
    if not lost:
        return project, truth_user, []
    return (with_base_picks(project, runs, lost, Path(base), work, work / "shards", device),
            f"{USER}:{SESSION}", lost)


def _train_final(fold_info, runs, settings, kw: dict, progress: bool) -> Path:
    """A model trained on every run for the folds' median best number of steps."""
    from sparse_det.training import train

    final_steps = sorted(f["best_step"] for f in fold_info)[len(fold_info) // 2]
    name = training_name("final", runs, runs, kw["lr"], final_steps, kw["truth_user"],
                         kw["noise_rel"], kw["distill"])
    log.info("final model (%s): all %d runs for %d steps", name, len(runs), final_steps)
    cfg = training_config(settings.config, name=name, train_runs=runs, val_runs=runs,
                          **(kw | {"steps": final_steps}))
    cfg.train.steps_per_epoch, cfg.train.patience = final_steps, 0  # validate once
    return train(cfg, progress=progress).with_name("last.pt")


def _run_folds(folds, project, settings, kw: dict, progress: bool, trainer=None,
               blend: float = 1.0):
    """Each fold trained; its best epoch's detections (blended with the base as the final
    model will be) on its held-out runs."""
    from sparse_det.training import train

    cfgs = []
    for i, (train_runs, val_runs) in enumerate(folds):
        name = training_name(f"fold{i}", train_runs, val_runs, kw["lr"],
                             truth_user=kw["truth_user"], noise_rel=kw["noise_rel"],
                             distill=kw["distill"])
        log.info("fold %d/%d (%s): train %s, validate %s", i + 1, len(folds), name,
                 train_runs, val_runs)
        cfgs.append(training_config(settings.config, name=name, train_runs=train_runs,
                                    val_runs=val_runs, **kw))
    bests = (trainer or (lambda cs: [train(c, progress=progress) for c in cs]))(cfgs)
    dets, truths, fold_info = [], [], []
    for i, ((train_runs, val_runs), best) in enumerate(zip(folds, bests, strict=True)):
        best = Path(best)
        picked_by = soup_blend(best, kw["base"], kw["work"] / f"fold{i}_blend.pt", blend)
        dets += fold_detections(picked_by, project, val_runs, kw["work"] / "shards",
                                 kw["device"])
        truths += [project.read_truth(r) for r in val_runs]
        fold_info.append({"train": train_runs, "val": val_runs, "best_step": _best_step(best),
                          "checkpoint": str(best), "picked_by": str(picked_by)})
    return dets, truths, fold_info


def _best_step(checkpoint: Path) -> int:
    from sparse_det.checkpoint import read_checkpoint

    return int(read_checkpoint(checkpoint)["extra"]["step"])


def finetune_arguments(doc: str) -> argparse.ArgumentParser:
    ap = adaptation_arguments(doc, project="copick project with annotated runs",
                              out="the fine-tuned checkpoint", steps=FINETUNE_STEPS,
                              per="training")
    ap.add_argument("--fit-all-thresholds", action="store_true",
                    help="set every class's threshold from the out-of-fold detections alone "
                         "(default: a class keeps the base's unless they lead it by more "
                         "than 2 standard errors run by run)")
    ap.add_argument("--lr", type=float, default=FINETUNE_LR, help="learning rate")
    ap.add_argument("--folds", type=int, default=None,
                    help=f"cross-validation folds, each holding out every n-th run (default "
                         f"{FOLDS}; 4 with 4 runs, so that no fold trains on 2 of them)")
    ap.add_argument("--noise-rel", type=float, nargs=2, metavar=("LO", "HI"),
                    default=list(FINETUNE_NOISE_REL),
                    help="added noise of the runs' appearance copies, in the volume's robust "
                         "sigma (default %(default)s: a complex learnt on 3 clean runs held "
                         "on noisier ones; 0 2.5, the base's, fine-tuned 4 runs at SNR "
                         "0.22-0.3 better out of fold)")
    ap.add_argument("--distill", type=float, default=FINETUNE_DISTILL, metavar="W",
                    help="weight of a term keeping the class probabilities near the base's "
                         "on every voxel trained on (learning without forgetting; default "
                         "%(default)s, 0: off)")
    add_truth_user_argument(ap)
    add_class_map_argument(ap)
    return ap


def run_finetune_command(a: argparse.Namespace, **kw) -> int:
    """finetune() from parsed finetune_arguments (`kw`: e.g. a trainer) → exit status."""
    setup_logging(a.quiet)
    s = run_or_report(lambda: finetune(
        a.project, a.out, base=a.checkpoint, runs=a.runs, steps=a.steps, minutes=a.minutes,
        device=a.device, work=a.work, fresh=a.fresh, blend=a.blend,
        fit_all=a.fit_all_thresholds, lr=a.lr, n_folds=a.folds, truth_user=a.truth_user,
        class_map=parse_class_map(a.class_map), config_radii=a.config_radii,
        noise_rel=tuple(a.noise_rel), distill=a.distill,
        progress=not a.quiet and sys.stderr.isatty(), **kw))
    if s is None:
        return 2
    kept = " (the base's: the fine-tune did not beat it)" if s["base_kept"] else ""
    print(f"out-of-fold weighted F4 {s['oof']['score']:.4f}{kept}; wrote {a.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_finetune_command(expand_home(finetune_arguments(__doc__).parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
