"""Fitting the candidate rescorer (sparse_det/rescore.py) on annotated runs: each run's
candidates described and labelled, also on copies of the run with added noise
(sparse_det/rescore_examples.py), then small MLPs fitted on them and written into a copy of
the network's checkpoint with its thresholds marked stale. `python -m sparse_det.rescore`
runs main(); `sparse_det.tune` fits the thresholds next.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from data_tools.cli_args import (
    RUNS_HELP,
    add_runs_argument,
    at_least,
    expand_home,
    run_argument,
)
from data_tools.copick_io import CopickProject
from data_tools.datasets import require_projects
from data_tools.particles import DataError
from data_tools.run_names import runs_named
from data_tools.truth_user import add_truth_user_argument
from sparse_det.checkpoint import (
    NETWORK_TUNED,
    RESCORER,
    RESCORER_RUNS,
    THRESHOLDS_STALE,
    CheckpointError,
    read_checkpoint,
)
from sparse_det.profile_jitter import draw_profile_jitter, jitter_profiles
from sparse_det.rescore import RescoreNet
from sparse_det.rescore_cache import ExampleCache, network_digest
from sparse_det.rescore_examples import TRUTH_JITTER_VOX, examples_of_runs
from sparse_det.rescore_profiles import PROB_SHELLS_VOX

log = logging.getLogger(__name__)

# Fewer annotated runs than this fit a rescorer to their accidents: fitted on 4 runs of a
# family and tuned on them, it scored below the shipped one (fitted on 171) on new runs of
# that family (docs/experiments.md, *A rescorer fitted on your few runs*).
FEW_RUNS = 20


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 25, seed: int = 0,
        batch: int = 512, calibration: dict[str, list[float]] | None = None,
        prob_shells: tuple = PROB_SHELLS_VOX, members: int = 1,
        profile_jitter: bool = False) -> RescoreNet:
    """A RescoreNet whose `members` are each fitted by cross-entropy (AdamW, one-cycle
    schedule) from seeds seed, seed + 1, ...; `prob_shells`: the network-output shells the
    features hold (none: profiles and scores only); `profile_jitter`: every batch's
    profiles redrawn (jitter_profiles)."""
    if len(x) == 0:
        raise DataError("no training examples: the runs have no candidates and no picks")
    net = RescoreNet(x.shape[1], n_classes, calibration=calibration, prob_shells=prob_shells,
                     members=0)
    net.mean.copy_(torch.as_tensor(x.mean(0)))
    net.std.copy_(torch.as_tensor(x.std(0) + 1e-6))
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for m in range(members):
        torch.manual_seed(seed + m)  # each member's initial weights from its own seed
        _fit_member(net, net.add_member(), xt, yt, epochs, seed + m, batch, profile_jitter)
    return net.eval()


def _fit_member(net: RescoreNet, m: int, xt: torch.Tensor, yt: torch.Tensor, epochs: int,
                seed: int, batch: int, profile_jitter: bool = False) -> None:
    opt = torch.optim.AdamW(net.members[m].parameters(), 1e-3, weight_decay=1e-3)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        perm, total = torch.randperm(len(xt), generator=gen), 0.0
        for i in range(0, len(xt), batch):
            b = perm[i:i + batch]
            xb = (jitter_profiles(xt[b], *draw_profile_jitter(len(b), gen)) if profile_jitter
                  else xt[b])
            loss = torch.nn.functional.cross_entropy(net(xb, m), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        log.info("rescorer member %d, epoch %d/%d: loss %.4f", m + 1, epoch + 1, epochs,
                 total / len(xt))


def few_runs_warning(n_runs: int) -> str:
    return (f"warning: a rescorer fitted on {n_runs} run(s) follows their accidents: fitted "
            "on 4 runs of one family and tuned there, it scored below the shipped default "
            "on 4 and 2 new runs of that family (tilt series 0.811 against 0.841, SNR "
            "0.22-0.3 0.706 against 0.725). With a few annotated runs, tune the shipped "
            "checkpoint (python -m sparse_det.tune) or fine-tune it (sparse_det.finetune); "
            "and tune a new rescorer on runs it was not fitted on")


def _parser():
    from sparse_det.argfile import ArgumentFileParser

    ap = ArgumentFileParser(description="Fit the candidate rescorer on annotated runs and "
                            "write a checkpoint that carries it (tune it next)")
    ap.add_argument("--checkpoint", required=True, help="the network's checkpoint")
    ap.add_argument("--project", action="append", required=True)
    add_runs_argument(ap, nargs="+", help="only these runs (default: every run)")
    ap.add_argument("--exclude", nargs="+", default=[], type=run_argument, metavar="RUN",
                    help=f"runs to leave out, where the projects have them; {RUNS_HELP}")
    add_truth_user_argument(ap)
    ap.add_argument("--epochs", type=at_least(1), default=25)
    ap.add_argument("--appearance-variants", type=at_least(0), default=0,
                    help="also N appearance-randomised copies of each run (the ranges "
                         "the network was trained with, from its checkpoint's config)")
    ap.add_argument("--noise-copies", type=at_least(0), default=1,
                    help="also N copies of each run with added noise only (0.5-1.5x its "
                         "own; the default's: 1; 0: none)")
    ap.add_argument("--median-copies", type=at_least(0), default=0,
                    help="also N copies with that noise, then median-filtered (the cross "
                         "or the 3^3 cube at the working spacing; the default's: 0)")
    ap.add_argument("--learnt-copies", type=at_least(0), default=0,
                    help="also N copies with that noise, then the general Noise2Noise "
                         "denoiser of --learnt-denoiser (the default's: 0)")
    ap.add_argument("--learnt-denoiser", default="",
                    help="--learnt-copies' network (python -m data_tools.n2n)")
    ap.add_argument("--learnt-share", type=float, default=1.0,
                    help="only this share of the runs, drawn by name, get --learnt-copies "
                         "(each costs a denoiser pass, 40-60 s a run on 2 cores; "
                         "default: every run)")
    ap.add_argument("--moved-picks", action="store_true",
                    help=f"also every pick moved by {TRUTH_JITTER_VOX} voxels as an example "
                         "(the first rescorer's recipe)")
    ap.add_argument("--without-network-outputs", action="store_true",
                    help="features without the network's per-voxel probabilities around "
                         "each candidate (the first rescorer's)")
    ap.add_argument("--members", type=at_least(1), default=5,
                    help="MLPs fitted from seeds seed, seed + 1, ... on the same examples; "
                         "their probabilities are averaged (the default's: 5)")
    ap.add_argument("--profile-jitter", action="store_true",
                    help="redraw each example's radial profiles in every batch (size "
                         "x0.9-1.1, smoothing along r, density gain): the MLPs learn sizes "
                         "and masses, not the simulator's particle models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--examples-dir",
                    help="each run's examples are kept here, so an interrupted fit resumes "
                         "and a refit with other --members/--epochs reads them back "
                         "(default: OUT.examples/; see sparse_det/rescore_cache.py)")
    ap.add_argument("--no-examples-dir", action="store_true",
                    help="keep no examples on disk")
    return ap


def _check_learnt(ap, a) -> None:
    """--learnt-* refused now, not at the first learnt copy after minutes of extraction."""
    if a.learnt_copies and not a.learnt_denoiser:
        ap.error("--learnt-copies needs --learnt-denoiser PATH (python -m data_tools.n2n)")
    if not 0.0 <= a.learnt_share <= 1.0:
        ap.error(f"--learnt-share {a.learnt_share}: a share of the runs, 0 to 1")
    if a.learnt_copies:
        from data_tools.appearance import general_denoiser
        try:  # the cached load every learnt copy then reuses
            general_denoiser(a.learnt_denoiser)
        except DataError as exc:
            ap.error(f"--learnt-denoiser: {exc}")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    a = expand_home(ap.parse_args(argv))
    _check_learnt(ap, a)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fit_rescorer(a)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torch
        kept = ("" if a.no_examples_dir else "; the same command reads back the runs' "
                f"examples kept in {_examples_folder(a)}")
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    return 0


def _examples_folder(a: argparse.Namespace) -> str:
    return a.examples_dir or f"{a.out}.examples"


def fit_rescorer(a: argparse.Namespace) -> None:
    """The command line's work: the rescorer fitted on the annotated runs, written into a
    copy of the checkpoint at `a.out`."""
    from data_tools.atomic import atomic_path
    from sparse_det.inference import Picker

    # The network alone, at the thresholds and calibration tuned for its vote masses (a
    # checkpoint that carries a rescorer keeps them): the new rescorer reads those scores.
    picker = Picker.load(a.checkpoint, "cpu", rescore=False)
    require_projects(a.project, a.dataset_sets)  # every missing one named at once
    projects = [CopickProject(p, truth_user=a.truth_user) for p in a.project]
    selected = zip(projects, runs_named(projects, a.runs, a.exclude), strict=True)
    todo = [(pr, r) for pr, runs in selected for r in pr.annotated_runs(runs)]
    if not todo:
        raise DataError(f"no annotated runs in {', '.join(a.project)}: the rescorer is fit "
                        "on runs with ground-truth picks (python -m data_tools.info PROJECT "
                        "shows whose picks are read)")
    if len(todo) < FEW_RUNS:
        log.warning(few_runs_warning(len(todo)))
    folder = _examples_folder(a)
    cache = None if a.no_examples_dir else ExampleCache(folder, network_digest(picker))
    xs, ys = examples_of_runs(picker, todo, a.appearance_variants, a.seed,
                              noise_copies=a.noise_copies, median_copies=a.median_copies,
                              learnt_copies=a.learnt_copies,
                              learnt_denoiser=a.learnt_denoiser,
                              learnt_share=a.learnt_share, moved_picks=a.moved_picks,
                              read_outputs=not a.without_network_outputs, cache=cache)
    net = fit(np.concatenate(xs), np.concatenate(ys), len(picker.particles), epochs=a.epochs,
              seed=a.seed, calibration=picker.ckpt.calibration,
              prob_shells=() if a.without_network_outputs else PROB_SHELLS_VOX,
              members=a.members, profile_jitter=a.profile_jitter)
    doc = read_checkpoint(a.checkpoint)
    doc.pop("optimizer", None)
    doc["extra"] = dict(doc.get("extra", {})) | {
        RESCORER: net.to_state(), THRESHOLDS_STALE: True,
        NETWORK_TUNED: {"thresholds": dict(picker.ckpt.thresholds),
                        "calibration": dict(picker.ckpt.calibration),
                        "tuned_for_tta": dict(picker.ckpt.tuned_for_tta),
                        "tta": picker.tta},
        RESCORER_RUNS: [f"{pr.path.name}/{r}" for pr, r in todo],
        "rescorer_appearance_variants": a.appearance_variants,
        "rescorer_noise_copies": a.noise_copies,
        "rescorer_median_copies": a.median_copies,
        "rescorer_learnt_copies": a.learnt_copies,
        "rescorer_learnt_denoiser": a.learnt_denoiser,
        "rescorer_learnt_share": a.learnt_share,
        "rescorer_moved_picks": a.moved_picks,
        "rescorer_profile_jitter": a.profile_jitter}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(a.out)) as tmp:
        torch.save(doc, tmp)
    print(f"wrote {a.out}: rescorer fitted on {len(todo)} runs "
          f"({sum(len(y) for y in ys)} examples); its thresholds are stale: "
          f"python -m sparse_det.tune --checkpoint {a.out} ... next")


if __name__ == "__main__":
    sys.exit(main())
