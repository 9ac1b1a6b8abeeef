"""Summarises a copick project: runs; every tomogram (type, spacing folder, each pyramid
level's voxel size, origin and shape, and its chunk files not on disk); which one the
picker reads, how it brings it to the working grid and about how much memory picking it
takes; the ground truth's pick counts, whose picks they are, whether they can be in Å of
the tomogram, and the picks files not read as truth (a tool's, such as infer's own).

    python -m data_tools.info PROJECT [--runs RUN ...] [--json] [--tomo-type NAME]
        [--voxel-spacing A] [--truth-user USER[:SESSION]]

The choice shown is the default sparsify settings' (those of the shipped checkpoint: 20 Å
working grid, `denoised` preferred), with the same overrides infer takes.
"""

from __future__ import annotations

import argparse
import json
import sys

from data_tools.cli_args import add_runs_argument, expand_home
from data_tools.copick_io import CopickProject
from data_tools.ome_zarr import missing_chunks
from data_tools.particles import DataError
from data_tools.peak_memory import peak_bytes
from data_tools.picks_placement import picks_misplaced
from data_tools.run_names import runs_named
from data_tools.sparsify import plan_input
from data_tools.sparsify_config import SparsifyConfig
from data_tools.tomo_input import add_input_arguments, input_overrides, with_overrides
from data_tools.truth_user import add_truth_user_argument


def run_tomograms(project: CopickProject, run: str) -> dict:
    """{type or type@spacing: {voxel_spacing (level 0), shapes, levels: [...]}}, or {error}
    for a tomogram that cannot be read: the rest of the project still shows."""
    tomos = {}
    spacings = project.voxel_spacings(run)
    for vs in spacings:
        for t in project.tomogram_types(run, vs):
            key = t if len(spacings) == 1 else f"{t}@{vs:g}"
            try:
                levels = project.tomogram_scales(run, vs, t)
            except DataError as exc:
                tomos[key] = {"type": t, "folder_spacing_A": vs, "error": str(exc)}
                continue
            path = project.tomogram_path(run, vs, t)
            tomos[key] = {"type": t, "folder_spacing_A": vs, "voxel_spacing": levels[0][1],
                          "shapes": [list(lv[2]) for lv in levels],
                          "levels": [{"path": p, "voxel_A": v, "origin_A": o,
                                      "shape": list(s),
                                      "chunk_files_absent": (missing_chunks(path / p)
                                                             or (0, 0))[0]}
                                     for p, v, s, o in levels]}
    return tomos


def reads(project: CopickProject, run: str, cfg: SparsifyConfig) -> str:
    """What infer would read for this run and about how much memory picking it takes (or why
    it cannot be read)."""
    try:
        plan = plan_input(project, run, cfg)
    except DataError as exc:
        return f"nothing: {exc}"
    return f"{plan.describe()} (about {peak_bytes(plan) / 2**30:.1f} GB to pick)"


def truth(project: CopickProject, run: str) -> dict:
    """{"picks": counts per particle of the run's ground truth, "truth_from": whose picks
    they are, "not_truth": the picks files' users and sessions that are not read as truth}, or
    {"picks_error": why there is no one truth}."""
    try:
        files = project.truth_files(run)
        if not files:  # read as no particles, it would teach that they are background
            return {"picks": {}, "truth_from": [], "misplaced": None,
                    "not_truth": project.untrusted_picks(run), "no_file": [],
                    "partly_picked": []}
        truth = project.training_truth(run)[0]
        picks = {k: len(v) for k, v in truth.items()}
        return {"picks": picks, "truth_from": sorted({f"{f[2]}_{f[3]}" for f in files}),
                "misplaced": picks_misplaced(project, run, truth),
                "not_truth": project.untrusted_picks(run),
                "no_file": project.unannotated_particles(run),
                "partly_picked": project.partly_picked(run)}
    except DataError as exc:  # several annotators: the rest of the project still shows
        return {"picks_error": str(exc)}


def project_info(project: CopickProject, cfg: SparsifyConfig | None = None,
                 runs_wanted: list[str] | None = None) -> dict:
    """The summary of the runs `runs_wanted` name (runs or patterns; every run where None)."""
    cfg = cfg or SparsifyConfig()
    runs = {}
    project.require_runs()
    for run in runs_named([project], runs_wanted)[0]:
        runs[run] = {"tomograms": run_tomograms(project, run), "reads": reads(project, run, cfg)}
        runs[run] |= truth(project, run)
    return {"working_spacing_A": cfg.working_spacing_A, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Runs, tomograms and pick counts of a project.")
    ap.add_argument("project")
    add_runs_argument(ap)
    ap.add_argument("--json", action="store_true")
    add_input_arguments(ap)
    add_truth_user_argument(ap)
    a = expand_home(ap.parse_args(argv))
    try:
        info = project_info(CopickProject(a.project, truth_user=a.truth_user),
                            with_overrides(SparsifyConfig(), input_overrides(a)), a.runs)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    for run, d in info["runs"].items():
        print(run)
        for t, td in d["tomograms"].items():
            if "error" in td:
                print(f"  {t:<22} VoxelSpacing{td['folder_spacing_A']:.3f}: unreadable: "
                      f"{td['error']}")
                continue
            levels = ", ".join(f"{lv['voxel_A']:.3f} Å {'x'.join(map(str, lv['shape']))}"
                               + (f" ({lv['chunk_files_absent']} chunk files absent)"
                                  if lv["chunk_files_absent"] else "")
                               for lv in td["levels"])
            print(f"  {t:<22} VoxelSpacing{td['folder_spacing_A']:.3f}: {levels}")
        print(f"  reads: {d['reads']}")
        if "picks_error" in d:
            print(f"  picks: {d['picks_error']}")
            continue
        if d["truth_from"]:
            print(f"  picks ({', '.join(d['truth_from'])}): "
                  + ", ".join(f"{k} {v}" for k, v in d["picks"].items()))
        else:
            print("  picks: none read as truth (not annotated: left out of tune, finetune, "
                  "rescore and evaluate)")
        if d["misplaced"]:
            print(f"  not where the tomogram is: {d['misplaced']}")
        if d["no_file"]:
            print(f"  not annotated (no picks file; not scored, not trained as background): "
                  f"{', '.join(d['no_file'])}")
        if d["partly_picked"]:
            print(f"  picked in part (trained where picked, not scored): "
                  f"{', '.join(d['partly_picked'])}")
        if d["not_truth"]:
            print(f"  not read as truth: {', '.join(d['not_truth'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
