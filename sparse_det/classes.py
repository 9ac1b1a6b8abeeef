"""How a checkpoint reads a project's classes: which of its classes each one the project's
copick config lists is, by which rule (sparse_det/class_match.py), with both radii, before
anything runs; and the config's radii set to the checkpoint's where they are far off.

    python -m sparse_det.classes --project DIR [--checkpoint PT] [--class-map NAME=CLASS ...]
                                 [--set-radii]

`--set-radii`: each matched class whose radius in the config is off the checkpoint's by more
than class_match.RADIUS_FACTOR gets the checkpoint's (copick's data-portal configs say 50 Å
for every object; F4 and fine-tuning go by the config's). The config is rewritten in place,
everything else in it kept, the one before kept beside it as `<config>.before-set-radii`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, checkpoint_settings
from sparse_det.class_match import (
    ClassMatch,
    add_class_map_argument,
    match_classes,
    parse_class_map,
)


def table(match: ClassMatch, known: ParticleTable, listed: ParticleTable) -> str:
    """The project's classes against the checkpoint's, as a markdown table."""
    lines = ["| the project's class | radius Å | PDB / identifier / EMDB | F4 weight "
             "| the checkpoint's | radius Å | matched by |", "|---|---|---|---|---|---|---|"]
    for p in listed:
        ckpt = match.pairs.get(p.name)
        theirs = (f"{ckpt} | {known[ckpt].radius_A:g} | {match.how[p.name]}" if ckpt
                  else "none: picked by no class of it | | ")
        ids = " / ".join(i for i in (p.pdb_id, p.identifier, p.emdb_id) if i) or "-"
        lines.append(f"| {p.name} | {p.radius_A:g} | {ids} | {p.weight:g} | "
                     f"{theirs} |")
    return "\n".join(lines)


def set_radii(config: Path, radii: dict[str, float]) -> Path:
    """`config` with these objects' radii, written atomically; the one before is kept as
    `<config>.before-set-radii` (once: a second run keeps the first original)."""
    doc = json.loads(config.read_text())
    for obj in doc.get("pickable_objects", []):
        if obj.get("name") in radii:
            obj["radius"] = radii[obj["name"]]
    before = config.with_name(config.name + ".before-set-radii")
    if not before.exists():
        shutil.copy2(config, before)
    atomic_write_text(config, json.dumps(doc, indent=2))
    return before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--set-radii", action="store_true",
                    help="set far-off radii in the project's config to the checkpoint's")
    add_class_map_argument(ap)
    a = ap.parse_args(argv)
    try:
        project = CopickProject(a.project)
        known = checkpoint_settings(a.checkpoint).particles
        match = match_classes(known, project.particles, parse_class_map(a.class_map))
        print(table(match, known, project.particles))
        for line in match.warnings(known, project.particles):
            print(f"note: {line}")
        if a.set_radii:
            radii = {p: theirs for p, (_, theirs)
                     in match.far_radii(known, project.particles).items()}
            if project.config_path is None:
                raise DataError(f"{project.path}: no copick config to set radii in")
            if radii:
                before = set_radii(project.config_path, radii)
                print(f"set {radii} (Å) in {project.config_path}; the one before: {before}")
            else:
                print("no radius to set")
    except (DataError, CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
