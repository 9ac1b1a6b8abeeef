"""Fine-tuning on runs that annotate only some particles: the partial-label loss against
reading a missing picks file as "none there" (the rule until 2026-12-05).

    python bench/partial_labels.py [--train data/heldout_tilt] [--test data/heldout2_tilt]
                                   [--steps 200] [--json bench/partial_labels.json]

The training project's first three runs train, each annotating half the particles (runs 0
and 2 the even table indices, run 1 the odd ones: every particle is annotated in one run at
least); its fourth run validates, annotated in full, for every variant alike. Variants:
`full` (every run annotated in full), `missing` (the unannotated particles have no picks
file: the partial-label loss) and `empty` (an empty picks file for each: the old reading,
which teaches them as background); `thinned` (`--variants`: every particle annotated, but
only every third pick kept: a class picked in part, its other copies read as background);
`thinned-marked` (the same picks, each marked as picked in part: trained as particles where
picked, never as background elsewhere); `apo-thinned` and `apo-thinned-marked` the same for
apo-ferritin alone, every other particle annotated in full (`--unpicked-share S`: the
marked variants train with loss.unpicked_share S, named so in the results).
Each fine-tunes the shipped checkpoint for the same
steps; each best checkpoint, and the shipped one, then picks the test project's runs.
Prints per-class F4 and recall; the JSON holds them and the seconds each training took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCORED = ["apo-ferritin", "beta-galactosidase", "ribosome", "thyroglobulin",
          "virus-like-particle"]
VARIANTS = ("full", "missing", "empty", "thinned", "thinned-marked", "apo-thinned",
            "apo-thinned-marked")


def annotated_names(names: list[str], i: int) -> list[str]:
    """Training run i's annotated particles: every other table entry, alternating by run."""
    return [n for j, n in enumerate(names) if j % 2 == i % 2]


def make_variant(src, dest: Path, variant: str, train_runs: list[str], val_run: str):
    """A project reading `src`'s tomograms, its picks alice's (session 1) as `variant` says."""
    from data_tools.atomic import atomic_write_text
    from data_tools.copick_io import CopickProject, copick_config

    (dest / "overlay").mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest / "copick_config.json", json.dumps(copick_config(
        f"partial labels: {variant}", src.particles, Path(src.static_root).resolve(),
        dest / "overlay")))
    project = CopickProject(dest / "copick_config.json")  # its roots are the config's
    names = src.particles.names
    for run in [*train_runs, val_run]:
        truth = src.read_truth(run)
        keep = names if variant.startswith(("full", "thinned", "apo")) or run == val_run else (
            annotated_names(names, train_runs.index(run)))
        for name in names:
            if name in keep:
                thin = run != val_run and (variant in ("thinned", "thinned-marked") or (
                    variant.startswith("apo-thinned") and name == "apo-ferritin"))
                project.write_picks(run, name, truth[name][::3] if thin else truth[name],
                                    "alice", "1")
                if thin and variant.endswith("-marked") and len(truth[name]):
                    project.mark_partly_picked(run, [name])
            elif variant == "empty":
                project.write_picks(run, name, truth[name][:0], "alice", "1")
    return project


def fine_tune(project, work: Path, train_runs: list[str], val_run: str, steps: int,
              seed: int, unpicked_share: float | None = None) -> dict:
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT, checkpoint_settings
    from sparse_det.finetune import training_config
    from sparse_det.training import train

    cfg = training_config(checkpoint_settings(DEFAULT_CHECKPOINT).config,
                          project=str(project.path), base=str(DEFAULT_CHECKPOINT),
                          work=work, name="ft", train_runs=train_runs, val_runs=[val_run],
                          steps=steps, budget_s=0.0, device="cpu")
    cfg.train.seed = seed
    if unpicked_share is not None:
        cfg.loss.unpicked_share = unpicked_share
    t0 = time.perf_counter()
    best = train(cfg, progress=False, resume=False)
    return {"checkpoint": str(best), "train_s": time.perf_counter() - t0}


def score_on(test_path: str, checkpoint: str) -> dict:
    import pandas as pd

    from data_tools.copick_io import CopickProject
    from sparse_det.metric import score_tables
    from sparse_det.stream import infer_project
    from sparse_det.writers import project_solution, to_submission

    test = CopickProject(test_path)
    rows = pd.concat([infer_project(test, checkpoint, runs=[r], device="cpu")
                      for r in test.runs()])
    s = score_tables(project_solution(test), to_submission(rows), test.particles)
    return {"score": s.score, "per_class": {k: s.per_class[k].fbeta for k in SCORED},
            "recall": {k: s.per_class[k].recall for k in SCORED},
            "fp": {k: s.per_class[k].fp for k in SCORED}} | oracle(test, checkpoint)


def oracle(test, checkpoint: str) -> dict:
    """Each class's F4 at the threshold best on the test runs themselves: what the network
    separates, apart from how well one validation run set its thresholds."""
    from sparse_det.inference import Picker
    from sparse_det.thresholds import tune_thresholds

    picker = Picker.load(checkpoint, "cpu")
    dets = [picker.detect_run(test, r, calibrated=False) for r in test.runs()]
    t = tune_thresholds(dets, [test.read_truth(r) for r in test.runs()], test.particles,
                        float("inf"))
    return {"oracle_score": t.score, "oracle": {k: t.per_class[k].fbeta for k in SCORED}}


def particle_probability(picker, project, runs: list[str]) -> dict[str, dict[str, float]]:
    """Per run and class, the network's mean probability of the class on the kept voxels
    within half a radius of that class's true centres: how far training taught a particle
    as background, apart from thresholds and clustering."""

    from sparse_det.data import truth_in_voxels
    from sparse_det.targets import make_targets

    out = {}
    for run in runs:
        _, sv, probs = picker.detect_outputs(picker.sparse(project, run))
        truth = project.read_picks(run)  # every particle, annotated for training or not
        centres, classes, radii = truth_in_voxels(sv, truth, project.particles)
        labels, _ = make_targets(sv.coords_zyx, centres, classes, radii, radius_fraction=0.5)
        p = probs.cpu().numpy()
        out[run] = {name: float(p[labels == k, k].mean()) for name in SCORED
                    if (labels == (k := project.particles.class_index(name))).any()}
    return out


def probabilities(checkpoint: str, src, test, train_runs: list[str]) -> dict:
    """particle_probability on the test runs (mean over them) and on the training runs,
    split by whether the run annotated the particle in the `missing`/`empty` variants."""
    import numpy as np

    from sparse_det.inference import Picker

    picker = Picker.load(checkpoint, "cpu")
    on_test = particle_probability(picker, test, test.runs())
    on_train = particle_probability(picker, src, train_runs)
    names = src.particles.names
    split = {"annotated": [], "not annotated": []}
    for i, run in enumerate(train_runs):
        for name, v in on_train[run].items():
            split["annotated" if name in annotated_names(names, i) else "not annotated"].append(v)
    return {"p_test": {k: float(np.mean([r[k] for r in on_test.values() if k in r]))
                       for k in SCORED},
            "p_train": {k: float(np.mean(v)) for k, v in split.items()}}


def table(results: dict) -> str:
    head = "| fine-tuned on | " + " | ".join(SCORED) + " | weighted F4 |"
    lines = [head, "|" + "---|" * (len(SCORED) + 2)]
    for name, r in results.items():
        cells = [f"{r['per_class'][k]:.3f} ({r['recall'][k]:.2f}; {r['oracle'][k]:.3f})"
                 for k in SCORED]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {r['score']:.3f} ({r['oracle_score']:.3f}) |")
    lines += ["", "| fine-tuned on | " + " | ".join(SCORED)
              + " | training runs: annotated / not annotated |", "|" + "---|" * (len(SCORED) + 2)]
    for name, r in results.items():
        train = r["p_train"]
        lines.append(f"| {name} | " + " | ".join(f"{r['p_test'][k]:.3f}" for k in SCORED)
                     + f" | {train['annotated']:.3f} / {train['not annotated']:.3f} |")
    return "\n".join(lines) + ("\n\nFirst table, per class on the test runs: F4 (recall; F4 at "
                               "the threshold best on the test runs themselves). Second: mean "
                               "p(class) on particle voxels (within half a radius).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="data/heldout_tilt")
    ap.add_argument("--test", default="data/heldout2_tilt")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--work", default="/tmp/partial_labels")
    ap.add_argument("--seed", type=int, default=0, help="training's seed")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:3]))
    ap.add_argument("--reuse", action="store_true",
                    help="score the checkpoints a run with this --work and --seed trained")
    ap.add_argument("--unpicked-share", type=float,
                    help="loss.unpicked_share for the marked variants (default: the config's)")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    import logging

    from data_tools.copick_io import CopickProject
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    src = CopickProject(a.train)
    runs = src.annotated_runs()
    train_runs, val_run = runs[:3], runs[3]
    test = CopickProject(a.test)
    results = {"shipped (no fine-tune)": score_on(a.test, str(DEFAULT_CHECKPOINT))
               | probabilities(str(DEFAULT_CHECKPOINT), src, test, train_runs)}
    for variant in a.variants:
        share = a.unpicked_share if variant.endswith("-marked") else None
        name = variant if share is None else f"{variant} (unpicked share {share:g})"
        work = Path(a.work) / f"seed{a.seed}" / name.replace(" ", "_").strip("()")
        if a.reuse and (work / "ft" / "best.pt").is_file():
            trained = json.loads((work / "trained.json").read_text())
        else:
            shutil.rmtree(work, ignore_errors=True)
            project = make_variant(src, work / "project", variant, train_runs, val_run)
            trained = fine_tune(project, work, train_runs, val_run, a.steps, a.seed, share)
            (work / "trained.json").write_text(json.dumps(trained))
        results[name] = (score_on(a.test, trained["checkpoint"]) | trained
                         | probabilities(trained["checkpoint"], src, test, train_runs))
        print(f"{name}: {results[name]['score']:.3f} "
              f"({trained['train_s']:.0f} s training)", flush=True)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps({"train": a.train, "test": a.test, "seed": a.seed,
                                            "steps": a.steps, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
