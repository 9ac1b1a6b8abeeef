"""A project's own particle classes: its copick config may list the checkpoint's classes in
another order, fewer of them, or complexes the checkpoint never learnt. Training from a
checkpoint matches the class head's rows by name, and infer picks the classes the project
lists. (Until 2026-12-06 the head was read by position: a config in another order trained
each class's row as another class, and one with fewer or more classes failed with a shape
mismatch.)"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable, ParticleType
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, checkpoint_settings, read_checkpoint
from sparse_det.model import build_model, remap_classes


def relabelled(src, dst, *, rename: dict[str, str] | None = None, drop=(), order=None,
               keep_pdb: bool = False):
    """A copy of project `src` whose config and picks call classes by `rename`'s names,
    leave out `drop`, and list the classes in `order` (default: as `src` does), labelled
    1..K in the order listed. A renamed class loses its PDB ID (a complex of its own)
    unless `keep_pdb`."""
    rename = rename or {}
    shutil.copytree(src.path, dst)
    kept = [p for p in src.particles if p.name not in drop]
    table = [ParticleType(rename.get(p.name, p.name), p.radius_A, p.weight, p.label,
                          p.pdb_id if keep_pdb or p.name not in rename else "", p.color)
             for p in kept]
    if order is not None:
        table = sorted(table, key=lambda p: order.index(p.name))
    table = [ParticleType(p.name, p.radius_A, p.weight, i + 1, p.pdb_id, p.color)
             for i, p in enumerate(table)]
    out = CopickProject(dst, ParticleTable(table))
    for run in src.runs():
        for f, *_ in out.picks_files(run):
            f.unlink()
        for name, pts in src.read_picks(run).items():
            if name not in drop:
                out.write_picks(run, rename.get(name, name), pts)
    out.write_config("relabelled")
    return CopickProject(dst)


def test_remap_classes_moves_rows_by_name():
    torch.manual_seed(0)
    old = ["a", "b", "c"]
    model = build_model(in_channels=2, num_classes=3, channels=(4, 8), blocks_per_level=1,
                        device="cpu")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    new = ["c", "new", "a"]  # reordered, "b" left out, "new" added
    remapped = remap_classes(state, old, new)
    grown = build_model(in_channels=2, num_classes=3, channels=(4, 8), blocks_per_level=1,
                        device="cpu")
    grown.load_state_dict(remapped)
    f = torch.randn(50, 4)
    with torch.no_grad():
        before, after = model.cls_head(f), grown.cls_head(f)
    # Background, "c" and "a" give the same logits as before, wherever they now stand.
    for i_new, i_old in ((0, 0), (1, 3), (3, 1)):
        torch.testing.assert_close(after[:, i_new], before[:, i_old], rtol=0, atol=0)
    # The new class: zero weights and the lowest class bias it had: one logit everywhere.
    bias = state["cls_head.2.bias"]
    assert torch.equal(after[:, 2], torch.full((50,), float(bias[1:].min())))
    assert torch.count_nonzero(remapped["cls_head.2.weight"][2]) == 0
    # The rest of the network is untouched.
    assert all(torch.equal(remapped[k], v) for k, v in state.items()
               if not k.startswith("cls_head.2."))
    with pytest.raises(ValueError, match="the class head has 3 classes, not the 2 named"):
        remap_classes(state, ["a", "b"], new)


def test_training_from_a_checkpoint_matches_its_classes_by_name(capsys):
    """build_state on a project whose config lists the shipped classes backwards, without
    beta-amylase, and with a complex the checkpoint never saw: every known class predicts
    what the checkpoint's row for it predicted."""
    from sparse_det.train_state import build_state

    settings = checkpoint_settings(DEFAULT_CHECKPOINT)
    names = [n for n in reversed(settings.particles.names) if n != "beta-amylase"]
    table = ParticleTable(
        [ParticleType(n, settings.particles[n].radius_A, settings.particles[n].weight, i + 1)
         for i, n in enumerate(names)]
        + [ParticleType("proteasome", 75.0, 1.0, len(names) + 1)])
    cfg = copy.deepcopy(settings.config)
    cfg.train.init_checkpoint = str(DEFAULT_CHECKPOINT)
    state = build_state(cfg, settings.feature_names, table, torch.device("cpu"))
    said = capsys.readouterr().out
    assert "classes matched by name" in said and "new, learnt from the annotations alone: " \
        "['proteasome']; left out: ['beta-amylase']" in said, said
    doc = read_checkpoint(DEFAULT_CHECKPOINT)
    base = build_model(in_channels=len(settings.feature_names), num_classes=6,
                       channels=cfg.model.channels,
                       blocks_per_level=cfg.model.blocks_per_level, device="cpu")
    base.load_state_dict(doc["model"])
    f = torch.randn(200, cfg.model.channels[0])
    with torch.no_grad():
        now, before = state.core.cls_head(f), base.cls_head(f)
    # The rows themselves move bit for bit; their logits agree to float rounding only, since
    # a CPU's GEMM may sum a column another way at another position (AVX-512 hosts do).
    head_now, head_before = state.core.cls_head[2], base.cls_head[2]
    for k_now, k_before in [(0, 0)] + [(table.class_index(n), settings.particles.class_index(n))
                                       for n in names]:
        assert torch.equal(head_now.weight[k_now], head_before.weight[k_before])
        assert torch.equal(head_now.bias[k_now], head_before.bias[k_before])
        torch.testing.assert_close(now[:, k_now], before[:, k_before], rtol=1e-5, atol=1e-6)
    # The new class: one logit everywhere until trained, the checkpoint's lowest class bias.
    lowest = float(doc["model"]["cls_head.2.bias"][1:].min())
    assert torch.equal(now[:, -1], torch.full((200,), lowest))
    # The backbone is the checkpoint's.
    for key, value in doc["model"].items():
        if not key.startswith("cls_head.2."):
            assert torch.equal(state.core.state_dict()[key], value), key


def test_infer_picks_the_classes_the_project_lists(small_project, tmp_path, caplog):
    """The shipped default on a project whose config leaves out beta-galactosidase and lists
    the rest in another order: the same picks as on the full project, without that class's,
    and a warning; not a refusal."""
    from sparse_det.stream import infer_project

    full = infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu")
    names = list(reversed(small_project.particles.names))
    fewer = relabelled(small_project, tmp_path / "fewer", drop=("beta-galactosidase",),
                       order=names)
    assert fewer.particles.names == [n for n in names if n != "beta-galactosidase"]
    with caplog.at_level("WARNING"):
        picked = infer_project(fewer, DEFAULT_CHECKPOINT, device="cpu")
    assert "lists no ['beta-galactosidase']" in caplog.text, caplog.text
    assert (full["particle_type"] == "beta-galactosidase").sum() > 0
    expected = full[full["particle_type"] != "beta-galactosidase"].reset_index(drop=True)
    assert len(picked) == len(expected) > 0
    np.testing.assert_array_equal(picked["particle_type"], expected["particle_type"])
    np.testing.assert_allclose(picked[["x", "y", "z", "score"]].to_numpy(),
                               expected[["x", "y", "z", "score"]].to_numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow  # three trainings of 50 steps (about a minute)
def test_finetune_learns_a_complex_the_checkpoint_never_saw(small_project, tmp_path):
    """beta-galactosidase renamed "my-complex" with a label of its own: to the shipped
    default an unknown class. Fine-tuned on the two runs' picks, the new row learns it
    out of fold; the base scores 0 on it, and the written checkpoint picks it by name."""
    from sparse_det.finetune import main
    from sparse_det.stream import infer_project

    project = relabelled(small_project, tmp_path / "renamed",
                         rename={"beta-galactosidase": "my-complex"})
    out = tmp_path / "ft.pt"
    assert main(["--project", str(project.path), "--out", str(out), "--steps", "50",
                 "--device", "cpu", "--quiet"]) == 0
    doc = read_checkpoint(out)
    summary = doc["extra"]["finetune"]
    assert summary["per_class"]["base"]["my-complex"] == 0.0, summary["per_class"]
    learnt = summary["per_class"]["fine-tune"]["my-complex"]
    # Measured: 0.607 out of fold (weighted F4 0.881 against the base's 0.825; 0.562 and
    # 0.884 before the fine-tune's noise went to 0.5-4).
    assert learnt > 0.3, summary["per_class"]
    # Its lead, 0.048 ± 0.047 run by run, is within 2 SE; the base cannot pick the class at
    # all, so the fine-tune that learnt it is written (against_base._learnt_what_the_base_cannot).
    assert summary["base_kept"] is False
    assert [p["name"] for p in doc["particles"]] == project.particles.names
    picks = infer_project(project, out, device="cpu")
    assert (picks["particle_type"] == "my-complex").sum() > 0
    assert "beta-galactosidase" not in set(picks["particle_type"])


def test_infer_says_which_listed_classes_the_checkpoint_cannot_pick(small_project, tmp_path,
                                                                   caplog):
    from sparse_det.stream import infer_project

    renamed = relabelled(small_project, tmp_path / "renamed",
                         rename={"beta-galactosidase": "my-complex"})
    with caplog.at_level("WARNING"):
        picked = infer_project(renamed, DEFAULT_CHECKPOINT, device="cpu")
    assert "default.pt has no class ['my-complex'] that the project's config lists" \
        in caplog.text, caplog.text
    assert "lists no ['beta-galactosidase']" in caplog.text
    assert set(picked["particle_type"]) <= set(renamed.particles.names) - {"my-complex"}


def test_classes_no_run_annotates_are_annotated_by_the_base(small_project, tmp_path):
    """Runs that annotate only the ribosome, in a config listing all: the base's other
    scored classes would be forgotten (bench/new_complex.py --new-picks-only), so the
    fine-tune reads a project over the same tomograms whose runs annotate them with the
    base's picks, away from the annotated ribosomes; the user's project is not written."""
    from sparse_det.inference import Picker
    from sparse_det.keep_classes import never_annotated, with_base_picks

    settings = checkpoint_settings(DEFAULT_CHECKPOINT)
    one = relabelled(small_project, tmp_path / "one")
    runs = one.runs()
    for run in runs:
        for f, name, *_ in one.picks_files(run):
            if name != "ribosome":
                f.unlink()
    # A class picked in part keeps its picks and its mark (until 2026-12-06 the copy read
    # scoring's truth, which leaves such a class out, and trained its picks as unknown).
    one.mark_partly_picked(runs[1], ["ribosome"])
    before = sorted(p.name for p in (tmp_path / "one").rglob("*.json"))
    lost = never_annotated(one, runs, settings.particles)
    assert lost == ["apo-ferritin", "beta-galactosidase", "thyroglobulin",
                    "virus-like-particle"], lost  # beta-amylase is unscored
    assert never_annotated(small_project, runs, settings.particles) == []
    kept = with_base_picks(one, runs, lost, DEFAULT_CHECKPOINT, tmp_path / "work",
                           tmp_path / "work" / "shards", "cpu")
    assert sorted(p.name for p in (tmp_path / "one").rglob("*.json")) == before
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    for run in runs:
        truth, ribosomes = kept.training_truth(run)[0], one.training_truth(run)[0]["ribosome"]
        assert sorted(truth) == sorted([*lost, "ribosome"])
        np.testing.assert_array_equal(truth["ribosome"], ribosomes)
        np.testing.assert_array_equal(kept.read_tomogram(run).data,
                                      one.read_tomogram(run).data)
        picked = picker.pick(picker.detect_run(one, run))
        for name in lost:
            base_xyz, xyz = picked[name][0], truth[name]
            reach = 0.5 * (one.particles[name].radius_A + 150.0)
            # Every base pick away from the ribosomes, and none of the others.
            d_base = np.linalg.norm(base_xyz[:, None] - ribosomes[None], axis=2).min(1)
            np.testing.assert_allclose(xyz, base_xyz[d_base > reach])
        assert sum(len(truth[n]) for n in lost) > 20
    assert kept.unannotated_particles(runs[0]) == ["beta-amylase"]  # unscored: not kept
    assert kept.partly_picked(runs[1]) == ["ribosome"] and kept.partly_picked(runs[0]) == []
    assert "ribosome" not in kept.read_truth(runs[1])  # scoring skips it there, as in one


def test_a_pick_where_an_annotated_particle_is_is_left_out():
    from sparse_det.keep_classes import away_from

    table = ParticleTable.competition()
    truth = {"ribosome": np.array([[1000.0, 1000, 500]]), "apo-ferritin": np.zeros((0, 3))}
    # apo-ferritin (60 Å) near a ribosome (150 Å): reach 105 Å.
    picks = np.array([[1104.0, 1000, 500], [1106.0, 1000, 500], [3000, 3000, 500]])
    np.testing.assert_array_equal(away_from(picks, 60.0, truth, table), [False, True, True])
    assert away_from(np.zeros((0, 3)), 60.0, truth, table).shape == (0,)


@pytest.mark.slow  # three trainings of 50 steps (about a minute)
def test_finetune_on_a_new_complex_alone_keeps_the_base_classes(small_project, tmp_path):
    """Both runs annotate only "my-complex" (beta-galactosidase renamed) in a config listing
    every class: finetune annotates the base's other scored classes with its own picks,
    gates on the annotated class alone, and the checkpoint written picks both."""
    from sparse_det.finetune import main
    from sparse_det.stream import infer_project

    project = relabelled(small_project, tmp_path / "renamed",
                         rename={"beta-galactosidase": "my-complex"})
    for run in project.runs():
        for f, name, *_ in project.picks_files(run):
            if name != "my-complex":
                f.unlink()
    out = tmp_path / "ft.pt"
    assert main(["--project", str(project.path), "--out", str(out), "--steps", "50",
                 "--device", "cpu", "--quiet"]) == 0
    summary = read_checkpoint(out)["extra"]["finetune"]
    assert summary["kept_from_base"] == ["apo-ferritin", "ribosome", "thyroglobulin",
                                         "virus-like-particle"], summary
    assert summary["base_kept"] is False, summary
    # The gate scored the annotated class alone: the base's weighted F4 is its 0 there.
    assert summary["scores"]["base"] == 0.0, summary["scores"]
    picks = infer_project(project, out, device="cpu")
    counts = picks["particle_type"].value_counts()
    assert counts.get("my-complex", 0) > 0 and counts.get("ribosome", 0) > 0, counts
    assert counts.get("apo-ferritin", 0) > 0, counts
    assert not any((tmp_path / "renamed").rglob("with-base-picks_*"))


def test_base_picks_never_touch_a_flat_projects_own_files(small_project, tmp_path):
    """A project folder holding ExperimentRuns directly (the competition's test/static) is
    the derived config's static root, its picks among those it lists: written twice, the
    derived project leaves every file of the user's as it was."""
    from sparse_det.keep_classes import with_base_picks

    flat = tmp_path / "flat"
    shutil.copytree(small_project.path / "static", flat)
    for run in small_project.runs():
        src = small_project.path / "overlay" / "ExperimentRuns" / run / "Picks"
        dest = flat / "ExperimentRuns" / run / "Picks"
        dest.mkdir(exist_ok=True)
        shutil.copy(src / "curation_0_ribosome.json", dest)
    project = CopickProject(flat)
    before = {p: p.read_bytes() for p in flat.rglob("*.json")}
    assert len(before) == len(project.runs()) > 0
    for _ in range(2):
        kept = with_base_picks(project, project.runs(), ["apo-ferritin"], DEFAULT_CHECKPOINT,
                               tmp_path / "work", tmp_path / "work" / "shards", "cpu")
    assert {p: p.read_bytes() for p in flat.rglob("*.json")} == before
    run = project.runs()[0]
    assert sorted(kept.read_truth(run)) == ["apo-ferritin", "ribosome"]
    np.testing.assert_array_equal(kept.read_truth(run)["ribosome"],
                                  project.read_truth(run)["ribosome"])


def test_the_epoch_line_marks_classes_no_validation_run_annotates():
    """A class the validation runs do not annotate shows "-", not an F4 of 0.00 that reads
    as a class the network lost (a fine-tune on runs annotating one complex)."""
    from sparse_det.metric import ClassScore
    from sparse_det.thresholds import Tuning
    from sparse_det.training import epoch_line

    tuning = Tuning({"ribosome": 0.5, "proteasome": 0.5},
                    {"ribosome": ClassScore(0, 0, 0), "proteasome": ClassScore(3, 1, 1)}, 0.7)
    val = tuning.summary()
    assert val["references"] == {"ribosome": 0, "proteasome": 4}
    rec = {"epoch": 1, "step": 50, "loss": 0.5, "voxels_per_s": 10.0, "val_score": 0.7,
           "val_f4": val["per_class"], "val_references": val["references"]}
    assert epoch_line(rec).endswith("ribosome=- proteasome=0.75")
    # A record from before the references were kept reads as before.
    assert epoch_line({**rec, "val_references": {}}).endswith("ribosome=0.00 proteasome=0.75")
