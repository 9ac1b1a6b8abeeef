"""How a checkpoint learns a complex it has never seen: the 20S proteasome (a barrel of four
heptameric rings, data_tools/shapes.py), drawn beside the competition's five.

    python bench/new_complex.py [--train-runs 3] [--test-runs 2] [--steps 300]
        [--test-seed S] [--only-new | --new-picks-only | --portal [--set-radii]]
        [--distill W] [--json F]

Simulates two projects with the proteasome in their config (in-range physics, full size,
made once under data/): one whose runs `finetune` learns from, one whose runs nobody trains
or tunes on. The base checkpoint (no proteasome output) and the fine-tune pick the second;
per class F4 of both, with seconds. The base cannot score on the proteasome; the question is
how far a few annotated runs take the new output, and what the others lose meanwhile.
`--only-new`: as a biologist after one complex would set it up: both projects' configs list
the proteasome alone (copick configs over the same tomograms, with overlays holding its
picks only), so the fine-tune keeps one class output and the base's five are dropped.
`--new-picks-only`: the training project's config lists every class, its runs annotate the
proteasome alone (the five are then neither trained as background nor scored there), and
the unseen runs are scored on every class: does annotating only the new complex keep the
five?
`--portal`: the training project's config as copick's data-portal layer writes one (the
portal's names, every radius 50 Å, PDB IDs as "PDB-XXXX"; bench/other_names.py), fine-tuned
as it comes; with `--set-radii`, after `python -m sparse_det.classes --set-radii`;
`--config-radii`: fine-tuned with the config's radii, as before 2026-12-06.
`--appearance-variants N`, `--noise-rel LO HI`: the fine-tune's appearance randomisation
instead of finetune's (2 copies a run, noise 0.5-4 since 2026-12-06; before, the base's
0-2.5: `--noise-rel 0 2.5`). The unseen runs
are scored under the simulator's own config (the true radii)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.atomic import atomic_path, atomic_write_text
from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.metric import score_tables
from sparse_det.writers import project_solution

EXTRA = ("proteasome",)
TRAIN_SEED, TEST_SEED = 1101, 1102


def ensure(path: Path, runs: int, seed: int) -> CopickProject:
    """The project at `path`, simulated when missing (under a temporary name, renamed)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=False) as tmp:
            simulate_project(tmp, runs, seed, run_prefix="TS_prot", progress=False,
                             extra_particles=EXTRA)
        CopickProject(path).write_config(f"simulated (seed {seed}), with {list(EXTRA)}")
    return CopickProject(path)


def only_new(project: CopickProject, dest: Path, listed: ParticleTable | None = None
             ) -> CopickProject:
    """A copick config at `dest` over `project`'s tomograms listing `listed` (default: the
    EXTRA complexes only), its overlay (under `dest`'s folder) holding the EXTRA complexes'
    picks alone."""
    if not dest.exists():
        table = listed or ParticleTable([project.particles[n] for n in EXTRA])
        out = project.config_over(dest, table, f"{project.path.name}, {list(EXTRA)} annotated")
        for run in project.runs():
            for name, pts in project.read_picks(run).items():
                if name in EXTRA:
                    out.write_picks(run, name, pts)
    return CopickProject(dest / "copick_config.json")


def portal_view(project: CopickProject, dest: Path, set_radii: bool) -> CopickProject:
    """`project` as copick's data-portal layer writes its config, at `dest` (made once);
    `set_radii`: then the default checkpoint's radii set in it (sparse_det.classes)."""
    from other_names import NAMINGS, PORTAL_RADIUS_A, named

    if not dest.exists():
        named(project, dest, NAMINGS["data portal"], PORTAL_RADIUS_A)
        if set_radii:
            from sparse_det.classes import main as classes

            classes(["--project", str(dest), "--set-radii"])
    return CopickProject(dest / "copick_config.json")


def appearance_override(variants: int | None, noise_rel) -> None:
    """Every fine-tune training of this process with these appearance settings instead of
    the base's (an experiment: finetune has no option for them)."""
    import sparse_det.finetune as ft

    made = ft.training_config

    def training_config(*args, **kw):
        cfg = made(*args, **kw)
        if variants is not None:
            cfg.data.appearance_variants = variants
        if noise_rel:
            cfg.data.appearance = {**cfg.data.appearance, "noise_rel": list(noise_rel)}
        return cfg

    ft.training_config = training_config


def picked_score(project: CopickProject, checkpoint: Path) -> dict:
    from sparse_det.stream import infer_project

    t0 = time.perf_counter()
    picks = infer_project(project, checkpoint, device="cpu")
    seconds = (time.perf_counter() - t0) / len(project.runs())
    score = score_tables(project_solution(project, project.runs()), picks, project.particles)
    return {"score": score.score, "s_per_tomogram": seconds,
            "per_class": {k: c.fbeta for k, c in score.per_class.items()},
            "precision_recall": {k: [c.precision, c.recall]
                                 for k, c in score.per_class.items()}}


def markdown(rows: dict) -> str:
    names = list(next(iter(rows.values()))["per_class"])
    head = "| checkpoint | " + " | ".join(names) + " | weighted F4 | s/tomo |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for label, r in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{r['per_class'][n]:.3f}" for n in names)
                     + f" | {r['score']:.3f} | {r['s_per_tomogram']:.2f} |")
    return "\n".join(lines)


def arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data", help="where the two projects are made")
    ap.add_argument("--train-runs", type=int, default=3)
    ap.add_argument("--test-runs", type=int, default=2)
    ap.add_argument("--test-seed", type=int, default=TEST_SEED,
                    help="another draw of unseen runs (its own project under --data)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/new_complex.pt", help="the fine-tuned checkpoint")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--only-new", action="store_true",
                      help="the projects list the new complex alone")
    kind.add_argument("--new-picks-only", action="store_true",
                      help="the training runs annotate the new complex alone")
    kind.add_argument("--portal", action="store_true",
                      help="the training project's config as the data portal writes it")
    ap.add_argument("--set-radii", action="store_true",
                    help="with --portal: the checkpoint's radii set in it first")
    ap.add_argument("--config-radii", action="store_true",
                    help="fine-tune with the config's radii (finetune --config-radii)")
    ap.add_argument("--appearance-variants", type=int,
                    help="appearance-randomised copies of each run (default: the base's)")
    ap.add_argument("--noise-rel", type=float, nargs=2, metavar=("LO", "HI"),
                    help="added noise std / the volume's robust sigma (default: finetune's)")
    from sparse_det.finetune import FINETUNE_DISTILL

    ap.add_argument("--distill", type=float, default=FINETUNE_DISTILL,
                    help="finetune's --distill (default %(default)s, finetune's)")
    ap.add_argument("--json", help="write the results here")
    return ap


def main() -> int:
    ap = arguments()
    a = ap.parse_args()
    if a.appearance_variants is not None or a.noise_rel:
        appearance_override(a.appearance_variants, a.noise_rel)
    if a.set_radii and not a.portal:
        ap.error("--set-radii goes with --portal")
    data = Path(a.data)
    train = ensure(data / f"new_complex_train_{a.train_runs}", a.train_runs, TRAIN_SEED)
    seed = "" if a.test_seed == TEST_SEED else f"_seed{a.test_seed}"
    test = ensure(data / f"new_complex_test_{a.test_runs}{seed}", a.test_runs, a.test_seed)
    if a.only_new:
        train, test = (only_new(p, data / f"{p.path.name}_only_new") for p in (train, test))
    elif a.new_picks_only:
        train = only_new(train, data / f"{train.path.name}_new_picks_only", train.particles)
    elif a.portal:
        suffix = "_portal_radii_set" if a.set_radii else "_portal"
        train = portal_view(train, data / f"{train.path.name}{suffix}", a.set_radii)
    from sparse_det.finetune import finetune

    t0 = time.perf_counter()
    summary = finetune(str(train.path), a.out, steps=a.steps, device="cpu",
                       config_radii=a.config_radii, distill=a.distill)
    minutes = (time.perf_counter() - t0) / 60
    rows = {"shipped default": picked_score(test, DEFAULT_CHECKPOINT),
            f"fine-tuned on {a.train_runs} runs ({minutes:.1f} min)": picked_score(test,
                                                                                  Path(a.out))}
    print(markdown(rows))
    if a.json:
        atomic_write_text(a.json, json.dumps({
            "rows": rows, "finetune_minutes": minutes, "steps": a.steps,
            "only_new": a.only_new, "new_picks_only": a.new_picks_only,
            "portal": a.portal, "set_radii": a.set_radii, "config_radii": a.config_radii,
            "distill": summary["distill"],
            "out_of_fold": summary["per_class"], "base_kept": summary["base_kept"],
            "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
