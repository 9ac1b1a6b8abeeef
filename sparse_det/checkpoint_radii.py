"""A fine-tune on a config whose radii are placeholders: the checkpoint's radii instead.

copick's data-portal layer writes every object's radius as 50 Å. A fine-tune labels each
annotated particle's voxels out to the config's radius, decodes its picks with it and tunes
its thresholds on F4 with hits within half of it: at 50 Å a virus-like particle's capsid
shell (135 Å out) and a ribosome's outer two thirds were trained as background, and the
checkpoint written decoded with 50 Å (bench/new_complex.py --portal: VLP 1.000 -> 0.770 on
unseen runs). Where a class the base knows has a radius in the config off the base's by more
than class_match.RADIUS_FACTOR, the fine-tune runs on a copick project over the same
tomograms whose config gives that class the base's radius, its runs holding the user's
annotations (under the fine-tune's work folder; the user's project is not written to).
`finetune --config-radii` keeps the config's. `adapt` writes its pseudo-labels under the
checkpoint's radii too (they are its picks), unless `adapt --config-radii`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.class_match import ClassMatch

log = logging.getLogger(__name__)

FOLDER = "checkpoint_radii"  # under the fine-tune's work folder
# Whose picks its runs hold, so that the fine-tune's training folders, named by whose picks
# they read, are not those of one run on the config's radii.
USER, SESSION = "checkpoint-radii", "1"


def far_radii(listed: ParticleTable, known: ParticleTable) -> dict[str, tuple[float, float]]:
    """{class: (the config's radius, the checkpoint's)} for the classes of both tables (the
    base already calls them as the project does) whose radii differ by more than
    class_match.RADIUS_FACTOR."""
    same = ClassMatch(pairs={n: n for n in listed.names if n in known})
    return same.far_radii(known, listed)


def with_radii(listed: ParticleTable, far: dict[str, tuple[float, float]]) -> ParticleTable:
    """`listed` with each class of `far` ({class: (config's, checkpoint's)}) at the
    checkpoint's radius."""
    return ParticleTable([replace(p, radius_A=far[p.name][1]) if p.name in far else p
                          for p in listed])


def say_far(far: dict[str, tuple[float, float]], what: str, where) -> None:
    log.info("%s with the checkpoint's radii for %s (the config's are far off them: a "
             "placeholder, as the data portal's 50 Å, labels most of a large particle as "
             "background); --config-radii keeps the config's (%s)", what,
             ", ".join(f"{n} {theirs:g} Å, not {mine:g}" for n, (mine, theirs) in far.items()),
             where)


def copy_annotations(project: CopickProject, out: CopickProject, runs: list[str],
                     user: str, session: str) -> dict[str, dict]:
    """Each run's annotations of `project` written into `out` as `user`'s in `session`, the
    classes picked in part marked so there too; returns {run: its training picks}."""
    truths = {}
    for run in runs:
        truth, _ = project.training_truth(run)
        for name, pts in truth.items():
            out.write_picks(run, name, pts, user, session)
        if partly := project.partly_picked(run):
            out.mark_partly_picked(run, partly)
        truths[run] = truth
    return truths


def with_checkpoint_radii(project: CopickProject, runs: list[str], known: ParticleTable,
                          work: Path, truth_user: str | None
                          ) -> tuple[CopickProject, str | None]:
    """(the project to fine-tune on, whose picks are its truth): `project` itself where no
    class's radius is far off the base's (`known`), else a project in `work`/FOLDER with
    the base's radii for those classes and `runs`' annotations (written anew each call)."""
    far = far_radii(project.particles, known)
    if not far:
        return project, truth_user
    dest = work / FOLDER
    # Only the overlay goes: the config's static root is the user's.
    shutil.rmtree(dest / "overlay", ignore_errors=True)
    out = project.config_over(dest, with_radii(project.particles, far),
                              f"{project.path.name} with the checkpoint's radii",
                              truth_user=f"{USER}:{SESSION}")
    copy_annotations(project, out, runs, USER, SESSION)
    say_far(far, "fine-tuning", out.path)
    return out, f"{USER}:{SESSION}"


def labelled_with_checkpoint_radii(project: CopickProject, known: ParticleTable
                                   ) -> CopickProject:
    """`project` read with the base's (`known`) radii for the classes whose config radius
    is far off them: adapt's pseudo-labels are the base's picks, made with its radii, and
    the config's placeholders would train most of a large particle as background."""
    far = far_radii(project.particles, known)
    if not far:
        return project
    say_far(far, "self-training", project.path)
    return CopickProject(project.path, with_radii(project.particles, far))
