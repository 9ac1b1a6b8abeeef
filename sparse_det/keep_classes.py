"""The base's classes a fine-tune would forget, kept: the scored classes the base checkpoint
has that no annotated run annotates.

Fine-tuned on runs that annotate only a new complex, the shipped default lost the five it
knew (bench/new_complex.py --new-picks-only: apo-ferritin 0.979 -> 0.000, VLP 1.000 ->
0.711, ribosome 1.000 -> 0.847 on unseen runs): unannotated, they are neither trained as
themselves nor as background, the weights under them move, and their thresholds cannot be
calibrated. Here the base's own picks of those classes in each annotated run stand for
their annotations, in a copick project over the same tomograms (the user's project is not
written to): the fine-tune is taught to go on picking what the base picked, and its
thresholds for those classes pass as many picks as the base's do
(calibrated_tuning.as_many_as_base). A base pick where an annotated particle is (the base reading
a new complex as a class of like size) is left out: that is what the annotations
correct."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.checkpoint_radii import copy_annotations

log = logging.getLogger(__name__)

FOLDER = "with_base_picks"  # under the fine-tune's work folder
# Whose picks its runs hold (every class's, as one annotator's), so that the fine-tune's
# training folders, named by whose picks they read, are not those of one without them.
USER, SESSION = "with-base-picks", "1"


def never_annotated(project: CopickProject, runs: list[str], known: ParticleTable
                    ) -> list[str]:
    """The scored classes of the project that `known` (the base's table) has and no run of
    `runs` annotates."""
    unannotated = [set(project.unannotated_particles(r)) for r in runs]  # one listing a run
    return [p.name for p in project.particles.scored if p.name in known
            and all(p.name in u for u in unannotated)]


def away_from(xyz_A: np.ndarray, radius_A: float, truth: dict[str, np.ndarray],
              particles: ParticleTable) -> np.ndarray:
    """The rows of `xyz_A` (picks of a class of `radius_A`) farther than half the two radii
    from every annotated particle of `truth`: two particles that close would overlap by
    more than half, so the pick is the base's reading of the annotated one."""
    keep = np.ones(len(xyz_A), bool)
    for name, pts in truth.items():
        if len(pts) and len(xyz_A):
            reach = 0.5 * (radius_A + particles[name].radius_A)
            dist, _ = cKDTree(np.asarray(pts, float)).query(np.asarray(xyz_A, float))
            keep &= dist > reach
    return keep


def with_base_picks(project: CopickProject, runs: list[str], lost: list[str], base: Path,
                    work: Path, shards: Path, device: str) -> CopickProject:
    """A copick project (a config in `work`/FOLDER over `project`'s tomograms) whose runs
    annotate what `project`'s do, and each class of `lost` with the base's picks of it
    away from the annotated particles, all as USER's in SESSION (written anew each call);
    read it with
    truth_user f"{USER}:{SESSION}"."""
    from sparse_det.inference import Picker

    dest = work / FOLDER
    # An earlier call's picks go; nothing else is removed: the config's static root is the
    # user's, and its picks (a flat project's) would be listed among the project's own.
    shutil.rmtree(dest / "overlay", ignore_errors=True)
    out = project.config_over(dest, project.particles,
                              f"{project.path.name} with {Path(base).name}'s picks of {lost}",
                              truth_user=f"{USER}:{SESSION}")
    picker = Picker.load(base, device)
    counts = dict.fromkeys(lost, 0)
    truths = copy_annotations(project, out, runs, USER, SESSION)
    for run in runs:
        truth = truths[run]
        picked = picker.pick(picker.detect_run(project, run, shards))
        for name in lost:
            xyz = picked[name][0]
            xyz = xyz[away_from(xyz, project.particles[name].radius_A, truth,
                                project.particles)]
            out.write_picks(run, name, xyz, USER, SESSION)
            counts[name] += len(xyz)
    log.info("no run annotates %s: the base's picks of them (%s over %d runs) stand for "
             "their annotations, so that the fine-tune keeps picking them (%s)", lost,
             ", ".join(f"{n} {c}" for n, c in counts.items()), len(runs), out.path)
    return out
