"""Summarises a copick project: runs, tomograms (shape per scale, voxel spacing), pick counts.

    python -m data_tools.info PROJECT [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError


def project_info(project: CopickProject) -> dict:
    runs = {}
    for run in project.runs():
        tomos = {}
        for vs in project.voxel_spacings(run):
            for t in project.tomogram_types(run, vs):
                levels = project.tomogram_scales(run, vs, t)
                key = t if len(project.voxel_spacings(run)) == 1 else f"{t}@{vs:g}"
                tomos[key] = {"voxel_spacing": levels[0][1],
                              "shapes": [list(lv[2]) for lv in levels]}
        picks = {k: len(v) for k, v in project.read_picks(run).items()}
        runs[run] = {"tomograms": tomos, "picks": picks}
    return {"runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Runs, tomograms and pick counts of a project.")
    ap.add_argument("project")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        info = project_info(CopickProject(a.project))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    for run, d in info["runs"].items():
        print(run)
        for t, td in d["tomograms"].items():
            shapes = ", ".join("x".join(map(str, s)) for s in td["shapes"])
            print(f"  {t:<18} {td['voxel_spacing']:.3f} Å  {shapes}")
        print("  picks: " + ", ".join(f"{k} {v}" for k, v in d["picks"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
