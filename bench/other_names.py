"""The shipped default on a project whose config calls the classes otherwise: as copick's
data-portal layer names them, as labs write them, or by names of its own with the right PDB
IDs, against the same runs under the competition's names.

    python bench/other_names.py [--project data/heldout_in] [--json F]

Each naming is a copick config over the project's tomograms (nothing copied) with the
annotations under its names. "exact names only" is infer as it was until 2026-12-06 (a
class is the checkpoint's under the very same name; reproduced by mapping every other name
to none); "matched" is infer now (sparse_det/class_match.py). Per class F4 under the
project's names, weighted F4, seconds per tomogram.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.atomic import atomic_write_text
from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.metric import score_tables
from sparse_det.writers import project_solution

NAMINGS: dict[str, dict[str, str]] = {
    "competition": {},
    # copick's portal layer: an annotation's object name, lower case, spaces as hyphens.
    "data portal": {"apo-ferritin": "ferritin-complex", "ribosome": "cytosolic-ribosome",
                    "virus-like-particle": "virus-like-capsid"},
    "a lab's": {"apo-ferritin": "Apoferritin", "beta-galactosidase": "beta-gal",
                "ribosome": "80S", "thyroglobulin": "TG", "virus-like-particle": "VLP",
                "beta-amylase": "beta_amylase"},
    "own names, PDB IDs": {"apo-ferritin": "target-1", "beta-galactosidase": "target-3",
                           "ribosome": "target-4", "thyroglobulin": "target-5",
                           "virus-like-particle": "target-6", "beta-amylase": "target-2"},
}


def named(project: CopickProject, dest: Path, rename: dict[str, str],
          portal_radius_A: float | None = None) -> CopickProject:
    """A config at `dest` over `project`'s tomograms calling its classes by `rename`'s
    names (PDB IDs kept; `portal_radius_A`: every radius that, and PDB IDs written
    "PDB-XXXX", as copick's data-portal layer writes them), its overlay holding the
    annotations under them."""
    table = ParticleTable([replace(p, name=rename.get(p.name, p.name)) if portal_radius_A is None
                           else replace(p, name=rename.get(p.name, p.name),
                                        radius_A=portal_radius_A, pdb_id=f"PDB-{p.pdb_id}")
                           for p in project.particles])
    out = project.config_over(dest, table, f"{project.path.name}, other names")
    for run in project.runs():
        for name, pts in project.read_picks(run).items():
            out.write_picks(run, rename.get(name, name), pts)
    return CopickProject(dest / "copick_config.json")


def picked(project: CopickProject, class_map: dict[str, str] | None) -> dict:
    from sparse_det.stream import infer_project

    t0 = time.perf_counter()
    picks = infer_project(project, DEFAULT_CHECKPOINT, device="cpu", class_map=class_map)
    seconds = (time.perf_counter() - t0) / len(project.runs())
    score = score_tables(project_solution(project, project.runs()), picks, project.particles)
    return {"score": score.score, "s_per_tomogram": seconds,
            "per_class": {k: c.fbeta for k, c in score.per_class.items()}}


PORTAL_RADIUS_A = 50.0  # copick's data-portal layer writes this for every object


def _folder(label: str) -> str:
    return label.replace(" ", "_").replace(",", "").replace("'", "")


def _row(view: CopickProject, class_map, rename: dict, label: str, way: str,
         project: CopickProject) -> dict:
    """One row picked, printed and returned."""
    r = picked(view, class_map) | {"names": rename}
    scored = [rename.get(p.name, p.name) for p in project.particles.scored]
    print(f"| {label} | {way} | " + " | ".join(f"{r['per_class'][n]:.3f}" for n in scored)
          + f" | {r['score']:.3f} | {r['s_per_tomogram']:.2f} |", flush=True)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default="data/heldout_in")
    ap.add_argument("--work", default="runs/other_names", help="the configs over it")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    project = CopickProject(a.project)
    rows = {}
    print("| naming | infer | " + " | ".join(p.name for p in project.particles.scored)
          + " | weighted F4 | s/tomo |\n|" + "---|" * (len(project.particles.scored) + 4))
    for label, rename in NAMINGS.items():
        view = named(project, Path(a.work) / _folder(label), rename) if rename else project
        ways = {"matched": None}
        if rename:
            ways = {"exact names only": {n: "" for n in rename.values()}, **ways}
        for way, class_map in ways.items():
            rows[f"{label}, {way}"] = _row(view, class_map, rename, label, way, project)
    # As copick's data-portal layer writes a config: every radius 50 Å, so F4 hits must lie
    # within 25 Å; then with the checkpoint's radii set (python -m sparse_det.classes).
    portal = NAMINGS["data portal"]
    view = named(project, Path(a.work) / "portal_as_written", portal, PORTAL_RADIUS_A)
    rows["data portal, radii 50 A"] = _row(view, None, portal, "data portal", "radii 50 Å",
                                           project)
    from sparse_det.classes import main as classes

    classes(["--project", str(view.path), "--set-radii"])
    rows["data portal, radii set"] = _row(CopickProject(view.path), None, portal,
                                          "data portal", "after --set-radii", project)
    if a.json:
        atomic_write_text(a.json, json.dumps({"project": a.project, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
