"""Re-tunes a checkpoint's per-class score thresholds for F4 on your own annotated runs (for
example the competition's 7 training tomograms) and writes a new checkpoint.

    python -m sparse_det.tune --checkpoint PT [PT ...] --project DIR [--project DIR ...]
                              [--runs ...] --out NEW.pt [--device auto|cpu|cuda]
                              [--network-alone]
                              [--tta none [flip ...]] [--class-map NAME=CLASS ...]
                              [@ARGS_FILE ...]

`--tta` tunes with test-time mirrors and stores the setting, so infer uses it by default;
more settings after it get thresholds of their own, tuned on the same runs, which infer
uses when asked for that setting (`--tta none flip`: one pass by default, the mirrors on
request, each with its own); the others are printed against the first, run by run.

Several `--checkpoint`s (for example the shipped default and an alternative trained for
another kind of data): each is tuned on the same runs, and `--out` gets the first unless
another leads it run by run by more than two standard errors — your own annotated runs
choose which network reads your tomograms. `--network-alone`: a checkpoint with a candidate
rescorer (the shipped default) competes with its network alone too, by the same rule
(sparse_det/tune_choice.py).

`@FILE` reads more arguments from FILE (shell words, `#` comments): a fixed list of tuning
projects and runs, such as `configs/tune_runs_45.args`, lives in one file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from data_tools.cli_args import add_runs_argument, expand_home
from data_tools.particles import DataError
from data_tools.tomo_input import add_input_arguments, input_overrides
from data_tools.truth_user import add_truth_user_argument
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import CheckpointError
from sparse_det.class_match import add_class_map_argument, parse_class_map
from sparse_det.config import CONFIDENCE_BY, NORM_STATS, TTA_MIRRORS
from sparse_det.tune_choice import choose_checkpoint
from sparse_det.tune_report import print_choice, print_tuning


def _detect_runs(pickers: list, projects: list[str], runs: list[str] | None,
                 truth_user: str | None = None
                 ) -> tuple[list[list], list[dict], list[tuple[str, str]]]:
    """Uncalibrated detections of every selected annotated run by each picker (one
    sparsification per run), the runs' picks (`truth_user`'s: CopickProject.truth_files),
    and their (project folder name, run) names. A run without annotations is left out (and
    logged): read as empty, its particles would push every threshold up."""
    from data_tools.copick_io import CopickProject
    from data_tools.run_names import runs_named

    dets: list[list] = [[] for _ in pickers]
    truths, names = [], []
    opened = [CopickProject(path, truth_user=truth_user) for path in projects]
    for path, project, chosen in zip(projects, opened, runs_named(opened, runs), strict=True):
        for run in project.annotated_runs(chosen):
            sv = pickers[0].sparse(project, run)
            for found, p in zip(dets, pickers, strict=True):
                found.append(p.detect_run(project, run, calibrated=False, sv=sv))
            truths.append(project.read_truth(run))
            names.append((Path(path).name, run))
    if not names:
        raise DataError(f"no annotated runs{' among ' + ', '.join(runs) if runs else ''} in "
                        f"{', '.join(map(str, projects))}: tuning needs runs with ground-truth "
                        "picks (python -m data_tools.info PROJECT shows whose picks are read)")
    return dets, truths, names


def _by_project(names: list[tuple[str, str]], values) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (project_name, run), v in zip(names, values, strict=True):
        out.setdefault(project_name, {})[run] = float(v)
    return out


class Retuned(NamedTuple):
    """What retune() found: the checkpoint's thresholds before (and whether they were
    probabilities), the Tuning of each test-time setting (the first is the default), the
    number of runs, the stored (confidence_by, power) with every tried pair's Tuning of the
    first setting, and each run's confidence {project: {run: c}}."""

    old_thresholds: dict
    old_calibrated: bool
    tunings: dict
    n_runs: int
    confidence_setting: tuple[str, float]
    by_confidence: dict
    confidence: dict
    # What `infer --min-score` would keep on these runs, the default setting's
    # (thresholds.precision_recall_at_floors)
    floors: dict = {}  # noqa: RUF012 (a NamedTuple's default, never mutated)

    @property
    def default(self):
        """The Tuning of the default test-time setting."""
        return next(iter(self.tunings.values()))


# PostprocessConfig fields that change what the network reads, set by tune's options and
# stored with the thresholds tuned under them.
INFERENCE_SETTINGS = ("keep_follow_foreground", "keep_growth_max", "grown_mirrors",
                      "norm_stats")


def _inference_of(post) -> dict:
    """The INFERENCE_SETTINGS of a PostprocessConfig."""
    return {k: getattr(post, k) for k in INFERENCE_SETTINGS}


def check_inference(settings: dict | None) -> dict:
    """The settings given (None values dropped); ValueError for a name that is not one of
    INFERENCE_SETTINGS, a crowding share outside [0, 1) or a growth under 1."""
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    if set(given) - set(INFERENCE_SETTINGS):
        raise ValueError(f"not inference settings: {sorted(set(given) - set(INFERENCE_SETTINGS))}")
    if not 0 <= given.get("keep_follow_foreground", 0) < 1:
        raise ValueError(f"--keep-follow-foreground must be in [0, 1), got "
                         f"{given['keep_follow_foreground']}")
    if given.get("keep_growth_max", 1) < 1:
        raise ValueError(f"--keep-growth-max must be at least 1, got "
                         f"{given['keep_growth_max']}")
    return given


def _set_inference(post, settings: dict | None = None) -> dict:
    """Sets the INFERENCE_SETTINGS given (None: left as they are; checked first, so nothing
    is half-set); returns them as they were."""
    was = _inference_of(post)
    for k, v in check_inference(settings).items():
        setattr(post, k, v)
    return was


def with_share(input_overrides: dict | None, keep_fraction: float | None) -> dict | None:
    """The input overrides with the kept share tune was given (checked first)."""
    if keep_fraction is None:
        return input_overrides
    if not 0 < keep_fraction < 0.5:
        raise ValueError(f"--keep-fraction must be in (0, 0.5), got {keep_fraction}")
    return (input_overrides or {}) | {"keep_fraction": keep_fraction}


def retune(checkpoint: str, projects: list[str], runs: list[str] | None, out: str,
           device: str, input_overrides: dict | None = None,
           tta: str | list[str] | None = None, inference: dict | None = None,
           confidence_powers: list[float] | None = None,
           confidence_by: list[str] | None = None, fit_all: bool = False,
           keep_fraction: float | None = None, truth_user: str | None = None):
    """Detections of every selected annotated run (truth: `truth_user`'s picks) → score
    calibration and thresholds over all of them (a class keeps the checkpoint's own unless
    beaten: keep_prior_unless_beaten; `fit_all`: only a class no run annotates) → `out`.
    `tta`: one setting or several; the first becomes the default, each other gets its own
    set, on the same runs.
    `inference`: INFERENCE_SETTINGS to tune with and store (None values: the checkpoint's).
    `confidence_powers`: candidates for PostprocessConfig.confidence_power, each tried with
    every `confidence_by`; the first pair is stored unless another leads it on these runs
    by more than two standard errors run by run. `keep_fraction`: every run kept at this
    share instead of the checkpoint's, which `out` then keeps (sparsify.keep_fraction)."""
    from dataclasses import replace

    from sparse_det.calibrated_tuning import calibrate_and_tune, tune_confidence_power
    from sparse_det.checkpoint import checkpoint_settings, write_retuned
    from sparse_det.inference import Picker, tta_mirrors

    check_inference(inference)  # bad settings fail before any work
    input_overrides = with_share(input_overrides, keep_fraction)
    fit_all = fit_all or keep_fraction is not None  # another share's thresholds: no prior
    # Loaded as it is: a setting it has no thresholds for yet is what this tunes.
    picker = Picker.load(checkpoint, device, input_overrides=input_overrides)
    post = picker.ckpt.config.postprocess
    as_tuned = _set_inference(post, inference)
    settings = [tta] if isinstance(tta, str) else list(dict.fromkeys(tta or [picker.tta]))
    list(map(tta_mirrors, settings))  # an unknown setting fails before any run is read
    pickers = [replace(picker, tta=t) for t in settings]
    dets, truths, names = _detect_runs(pickers, projects, runs, truth_user)
    # The detections carry the checkpoint's confidence power; each candidate rescales them.
    was = (post.confidence_by, post.confidence_power)
    best, by_power = tune_confidence_power(dets[0], truths, picker.particles,
                                           confidence_powers or [was[1]], was[1],
                                           tuple(confidence_by or [was[0]]), was[0])
    post.confidence_by, post.confidence_power = best
    dets = [[d.with_confidence_power(was[1], 0.0, was[0]).with_confidence_power(
        0.0, best[1], best[0]) for d in found] for found in dets]
    # The checkpoint's thresholds are a prior only for detections made as they were.
    as_made = _inference_of(post) == as_tuned
    own = checkpoint_settings(checkpoint).prior if best == was and as_made else lambda t: None
    tuned = {p.tta: calibrate_and_tune(found, truths, picker.particles,
                                       None if fit_all else own(p.tta), own(p.tta))
             for found, p in zip(dets, pickers, strict=True)}
    first, (tuning, calibration) = next(iter(tuned.items()))
    confidence = _by_project(names, [d.confidence for d in dets[0]])
    stored = {"tta": first, "confidence_power": best[1],
              "confidence_by": best[0]} | _inference_of(post)
    write_retuned(checkpoint, out, thresholds=tuning.thresholds, calibration=calibration,
                  extra={"tuned_on": projects,
                         "tuned_per_run": _by_project(names, tuning.per_run),
                         "tuned_confidence": confidence}, postprocess=stored,
                  sparsify=None if keep_fraction is None else {"keep_fraction": keep_fraction},
                  other_tta={k: (t.thresholds, c) for k, (t, c) in tuned.items() if k != first})
    return Retuned(picker.thresholds, bool(picker.ckpt.calibration),
                   {k: t for k, (t, _) in tuned.items()}, len(truths), best, by_power,
                   confidence, _floors(dets[0], truths, picker.particles, tuning, calibration))


def _floors(dets: list, truths: list, particles, tuning, calibration: dict) -> dict:
    """precision_recall_at_floors of the runs' detections, calibrated as tuned."""
    from sparse_det.calibration import apply_calibration
    from sparse_det.thresholds import precision_recall_at_floors

    return precision_recall_at_floors([apply_calibration(d, calibration) for d in dets],
                                      truths, particles, tuning.thresholds)


def _add_share_arguments(ap: argparse.ArgumentParser) -> None:
    """The options that set how much of each tomogram is kept."""
    ap.add_argument("--keep-fraction", type=float, metavar="SHARE",
                    help="keep this share of each tomogram's voxels instead of the "
                         "checkpoint's, tuned and stored with the thresholds (a network "
                         "trained with train.keep_share_range reads larger shares)")
    ap.add_argument("--keep-follow-foreground", type=float, metavar="SHARE",
                    help="keep more voxels where more than 1.5 × SHARE of the kept ones are "
                         "predicted particle (crowded ice), tuned and stored with the "
                         "thresholds; 0: off (default: the checkpoint's)")
    ap.add_argument("--keep-growth-max", type=float, metavar="FACTOR",
                    help="a crowded run keeps at most FACTOR times the share it kept; "
                         "stored with the thresholds (default: the checkpoint's)")


def _add_reading_arguments(ap: argparse.ArgumentParser) -> None:
    """How the projects' tomograms, picks and class names are read."""
    add_input_arguments(ap)
    add_truth_user_argument(ap)
    add_class_map_argument(ap)


def _parser() -> ArgumentFileParser:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, nargs="+",
                    help="several: each is tuned, and --out gets the first unless another "
                         "leads it on these runs by more than 2 standard errors run by run")
    ap.add_argument("--project", action="append", required=True)
    add_runs_argument(ap, help="only these runs (of any of the projects)")
    ap.add_argument("--out", required=True, help="the re-tuned checkpoint")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tta", choices=sorted(TTA_MIRRORS), nargs="+",
                    help="tune with these test-time mirrors (default: the checkpoint's); "
                         "several: the first becomes the default, and each other gets its "
                         "own thresholds, used when infer is given that --tta")
    _add_share_arguments(ap)
    ap.add_argument("--grown-mirrors", action=argparse.BooleanOptionalAction,
                    help="read a crowded run's larger kept set with every test-time mirror "
                         "(or, --no-grown-mirrors, by the identity pass alone: faster); "
                         "stored with the thresholds (default: the checkpoint's)")
    ap.add_argument("--norm-stats", choices=NORM_STATS,
                    help="BatchNorm statistics at inference: the running ones from training, "
                         "or each tomogram's own; tuned and stored with the thresholds "
                         "(default: the checkpoint's)")
    ap.add_argument("--confidence-power", type=float, nargs="+", metavar="K",
                    help="divide vote masses by the tomogram's confidence ** K; several: "
                         "the first is stored unless the best on these runs leads it by "
                         "more than 2 standard errors run by run (default: the "
                         "checkpoint's, 0 = off)")
    ap.add_argument("--confidence-by", choices=CONFIDENCE_BY, nargs="+",
                    help="whose confidence divides the masses: the tomogram's, or each "
                         "class's own; several: each is tried with every --confidence-power "
                         "(default: the checkpoint's)")
    ap.add_argument("--fit-all-thresholds", action="store_true",
                    help="set every class's threshold from these runs alone (default: a "
                         "class keeps the checkpoint's own unless these runs' best leads it "
                         "by more than 2 standard errors run by run)")
    ap.add_argument("--network-alone", action="store_true",
                    help="a checkpoint's network alone competes too, by the same rule (its "
                         "rescorer was fitted on the simulator's particle shapes)")
    ap.add_argument("--rescore-network-classes", nargs="+", metavar="CLASS",
                    help="these classes keep the network's own scores, not the candidate "
                         "rescorer's (each checkpoint must carry one); tuned and stored so")
    _add_reading_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = expand_home(_parser().parse_args(argv))
    tune_args = dict(projects=a.project, runs=a.runs, device=a.device, tta=a.tta,
                     truth_user=a.truth_user, input_overrides=input_overrides(a),
                     inference={k: getattr(a, k) for k in INFERENCE_SETTINGS},
                     confidence_powers=a.confidence_power, confidence_by=a.confidence_by,
                     fit_all=a.fit_all_thresholds, keep_fraction=a.keep_fraction)
    try:
        chosen, results, labels = choose_checkpoint(a.checkpoint, a.out, a.network_alone,
                                                    a.rescore_network_classes,
                                                    parse_class_map(a.class_map),
                                                    a.dataset_sets, **tune_args)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torch
        print(f"interrupted; nothing written to {a.out}", file=sys.stderr)
        return 130
    print_tuning(results[chosen])
    if len(labels) > 1:
        print_choice(labels, results, chosen)
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
