"""A fine-tune on a config whose radii are placeholders (copick's data-portal configs say 50 Å
for every object) runs with the checkpoint's radii (sparse_det/checkpoint_radii.py). Until
2026-12-06 it ran with the config's: a VLP's capsid shell was trained as background and the
fine-tune's VLP read 0.770 on unseen runs, against 1.000 with the true radii."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.checkpoint import read_checkpoint
from sparse_det.checkpoint_radii import FOLDER, with_checkpoint_radii

KNOWN = ParticleTable.competition()
TRUE_RADII = {p.name: p.radius_A for p in KNOWN}


def portal_view(project: CopickProject, dest) -> CopickProject:
    """`project` with every radius 50 Å, its annotations copied, ribosome marked as picked
    in part in the first run."""
    view = project.config_over(dest, ParticleTable([replace(p, radius_A=50.0)
                                                    for p in project.particles]), "50 Å")
    for run in project.runs():
        for name, pts in project.read_picks(run).items():
            view.write_picks(run, name, pts)
    view.mark_partly_picked(project.runs()[0], ["ribosome"])
    return CopickProject(view.config_path)


def test_placeholder_radii_give_way_to_the_checkpoints(small_project, tmp_path):
    view = portal_view(small_project, tmp_path / "portal")
    runs = view.runs()
    out, user = with_checkpoint_radii(view, runs, KNOWN, tmp_path / "work", None)
    assert user == "checkpoint-radii:1" and out.path.parent == tmp_path / "work" / FOLDER
    # apo-ferritin's 60 Å and beta-amylase's 65 Å lie within 1.5x of 50 Å: the config's.
    assert {p.name: p.radius_A for p in out.particles} == TRUE_RADII | {
        "apo-ferritin": 50.0, "beta-amylase": 50.0}
    for run in runs:
        mine, theirs = view.training_truth(run), out.training_truth(run)
        assert mine[1] == theirs[1]  # the same classes unannotated or picked in part
        assert mine[0].keys() == theirs[0].keys()
        for name, pts in mine[0].items():
            np.testing.assert_allclose(theirs[0][name], pts)
    assert out.partly_picked(runs[0]) == ["ribosome"]
    # The user's config is not written to.
    assert {p.radius_A for p in CopickProject(view.config_path).particles} == {50.0}
    # With the true radii nothing changes.
    same, user = with_checkpoint_radii(small_project, runs, KNOWN, tmp_path / "work2", "x")
    assert same is small_project and user == "x"
    assert not (tmp_path / "work2").exists()


def test_finetune_trains_on_the_checkpoints_radii_unless_told(small_project, tmp_path):
    """Six trainings of 10 steps (about 20 s): what each fold trained on."""
    from sparse_det.finetune import main

    view = portal_view(small_project, tmp_path / "portal")
    for flags, trained_on in (([], tmp_path / "ft.work" / FOLDER / "copick_config.json"),
                              (["--config-radii"], view.config_path)):
        out = tmp_path / "ft.pt"
        assert main(["--project", str(view.config_path), "--out", str(out), "--steps", "10",
                     "--folds", "2", "--device", "cpu", "--quiet", "--fresh", *flags]) == 0
        summary = read_checkpoint(out)["extra"]["finetune"]
        assert summary["trained_on"] == str(trained_on), summary["trained_on"]


def test_adapt_self_trains_with_the_checkpoints_radii_unless_told(small_project, tmp_path):
    """adapt's pseudo-labels are the checkpoint's picks: the copick project it trains on
    lists the checkpoint's radii where the config's are placeholders (two rounds of 5 steps,
    about a minute), the config's with --config-radii."""
    from sparse_det.adapt import main

    view = portal_view(small_project, tmp_path / "portal")
    for flags, labels, radii in (
            ([], "labels0", TRUE_RADII | {"apo-ferritin": 50.0, "beta-amylase": 50.0}),
            (["--config-radii"], "labels0_config_radii", dict.fromkeys(TRUE_RADII, 50.0))):
        out = tmp_path / "adapted.pt"
        assert main(["--project", str(view.config_path), "--out", str(out), "--steps", "5",
                     "--rounds", "1", "--device", "cpu", "--quiet", *flags]) == 0
        trained_on = CopickProject(tmp_path / "adapted.work" / labels / "copick_config.json")
        assert {p.name: p.radius_A for p in trained_on.particles} == radii
        assert read_checkpoint(out)["extra"]["adapt"]["radii"] == radii
        # The labels it trained on are the checkpoint's picks, VLPs among them.
        assert len(trained_on.read_picks(view.runs()[0], user_id="sparse-det-adapt")
                   ["virus-like-particle"]) > 0
    assert {p.radius_A for p in CopickProject(view.config_path).particles} == {50.0}
