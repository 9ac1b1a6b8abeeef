"""Whose picks are the ground truth. A user annotates a few runs in a copick tool (saved as
USER_SESSION_PARTICLE.json, session not "0") in a project where infer has written its own
picks (session "0"); fine-tune, tune, evaluate and info must read the person's picks and
never the picker's own. Until 2026-12-05 a project without 'curation' picks read every
picks file as truth: the picker's predictions trained and scored it."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from data_tools.copick_io import CopickProject
from data_tools.info import main as info_main
from data_tools.particles import DataError
from data_tools.truth_user import parse_truth_user
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, checkpoint_settings
from sparse_det.data import annotated_project, load_run_sample
from sparse_det.evaluate import main as evaluate_main
from sparse_det.finetune import main as finetune_main
from sparse_det.finetune import training_config, training_name
from sparse_det.writers import write_copick_picks

ALICE = np.array([[400.0, 500.0, 300.0], [900.0, 700.0, 250.0]])  # Å, x y z
BOB = np.array([[1200.0, 300.0, 350.0]])


@pytest.fixture
def annotated(small_project, tmp_path):
    """small_project without its curation picks: run 0 annotated by alice (session 1), and
    infer's picks of both runs written into the project itself (sparse-det, session 0)."""
    root = tmp_path / "project"
    shutil.copytree(small_project.path, root)
    project = CopickProject(root)
    for f in root.rglob("Picks/*.json"):
        f.unlink()
    runs = project.runs()
    project.write_picks(runs[0], "ribosome", ALICE, user_id="alice", session_id="1")
    predicted = pd.DataFrame({"experiment": runs * 3, "particle_type": "ribosome",
                              "x": 100.0, "y": 200.0, "z": np.arange(6) * 50.0 + 100.0,
                              "score": 0.9})
    write_copick_picks(root, project, predicted, runs=runs, user_id="sparse-det",
                       session_id="0")
    return CopickProject(root), runs


def test_the_pickers_own_picks_are_never_truth(annotated, caplog):
    project, (run0, run1) = annotated
    assert len(project.read_picks(run0, user_id="sparse-det")["ribosome"]) == 3
    np.testing.assert_array_equal(project.read_picks(run0)["ribosome"], ALICE)
    assert not any(len(v) for v in project.read_picks(run1).values())
    assert project.untrusted_picks(run1) == ["sparse-det_0"]
    assert project.annotated_runs() == [run0]
    # alice picked ribosomes only: every other class is not annotated there, and is said so
    assert list(project.read_truth(run0)) == ["ribosome"]
    assert len(project.read_picks(run0)) == len(project.particles)  # read_picks: every class
    others = [p for p in project.particles.names if p != "ribosome"]
    assert project.unannotated_particles(run0) == others
    assert project.unannotated_particles(run1) == []  # no truth at all: left out instead
    assert f"{run0}: no picks file of {', '.join(others)}: not annotated there" in caplog.text


def test_several_annotators_are_not_merged(annotated):
    project, (run0, _) = annotated
    project.write_picks(run0, "ribosome", BOB, user_id="bob", session_id="2")
    with pytest.raises(DataError, match=r"ribosome picked by several annotators or sessions "
                                        r"\(alice:1, bob:2\).*--truth-user"):
        project.read_picks(run0)
    as_bob = CopickProject(project.path, truth_user="bob")
    np.testing.assert_array_equal(as_bob.read_picks(run0)["ribosome"], BOB)
    assert as_bob.untrusted_picks(run0) == ["alice_1", "sparse-det_0"]
    alice_1 = CopickProject(project.path, truth_user="alice:1")
    np.testing.assert_array_equal(alice_1.read_picks(run0)["ribosome"], ALICE)
    assert not len(CopickProject(project.path, truth_user="alice:2").read_picks(run0)["ribosome"])
    # one person's second pass over the same particle is no more merged than another's
    project.write_picks(run0, "ribosome", BOB, user_id="alice", session_id="2")
    for f in (project.path / "overlay/ExperimentRuns" / run0 / "Picks").glob("bob_*"):
        f.unlink()
    with pytest.raises(DataError, match=r"\(alice:1, alice:2\)"):
        project.read_picks(run0)
    # curation, where there is any, stays the truth whoever else annotated
    project.write_picks(run0, "ribosome", BOB[:1] + 10.0)
    np.testing.assert_array_equal(project.read_picks(run0)["ribosome"], BOB[:1] + 10.0)


@pytest.mark.parametrize("spec", ["a_b", "../x", "alice:", ":1", "alice:1:2"])
def test_truth_user_names_a_copick_user(spec):
    if spec == "alice:":  # an empty session is no session
        assert parse_truth_user(spec) == ("alice", None)
        return
    with pytest.raises(DataError, match="--truth-user"):
        parse_truth_user(spec)


def test_finetune_trains_on_the_named_annotators_picks(annotated, tmp_path):
    project, (run0, _) = annotated
    project.write_picks(run0, "ribosome", BOB, user_id="bob", session_id="2")
    base = checkpoint_settings(DEFAULT_CHECKPOINT).config
    cfg = training_config(base, project=str(project.path), base=str(DEFAULT_CHECKPOINT),
                          work=tmp_path / "work", name="fold0", train_runs=[run0],
                          val_runs=[run0], steps=1, budget_s=0.0, device="cpu",
                          truth_user="bob")
    sample = load_run_sample(annotated_project(cfg), cfg.data.shards, cfg.sparsify, run0,
                             cfg.targets.radius_fraction)
    np.testing.assert_array_equal(sample.truth_xyz_A["ribosome"], BOB)
    assert sample.center_class.tolist() == [4]  # ribosome; alice's and infer's picks unread
    assert (sample.labels == 4).sum() > 0
    # another annotator's fine-tune trains in folders of its own; none named: the name the
    # code before --truth-user gave (acabbd4)
    assert training_name("fold0", [run0], [run0], 1e-3, truth_user="bob") != \
        training_name("fold0", [run0], [run0], 1e-3)
    assert training_name("fold0", ["a"], ["b"], 1e-3) == "fold0_lr0.001_ff18004a"


def test_finetune_says_which_picks_it_did_not_read(annotated, tmp_path, capsys, caplog):
    project, (_, run1) = annotated
    caplog.set_level(logging.INFO)
    rc = finetune_main(["--project", str(project.path), "--out", str(tmp_path / "ft.pt"),
                        "--quiet"])
    assert rc == 2
    assert "needs at least 2 annotated runs" in capsys.readouterr().err
    assert f"left out: {run1} (no annotations; not read as truth: sparse-det_0)" in caplog.text


def test_evaluate_and_info_read_the_same_truth(annotated, tmp_path, capsys):
    project, (run0, run1) = annotated
    project.write_picks(run0, "ribosome", BOB, user_id="bob", session_id="2")
    csv = tmp_path / "alice.csv"
    pd.DataFrame({"id": range(2), "experiment": run0, "particle_type": "ribosome",
                  "x": ALICE[:, 0], "y": ALICE[:, 1], "z": ALICE[:, 2]}).to_csv(csv, index=False)

    def ribosome_counts(user):
        assert evaluate_main(["--solution", str(project.path), "--submission", str(csv),
                              "--json", "--truth-user", user]) == 0
        return json.loads(capsys.readouterr().out)["per_class"]["ribosome"]

    alice, bob = ribosome_counts("alice"), ribosome_counts("bob")
    assert (alice["tp"], alice["fp"], alice["fn"]) == (2, 0, 0), alice
    assert (bob["tp"], bob["fp"], bob["fn"]) == (0, 2, 1), bob
    assert evaluate_main(["--solution", str(project.path), "--submission", str(csv)]) == 2
    assert "ribosome picked by several annotators or sessions (alice:1, bob:2)" in \
        capsys.readouterr().err

    assert info_main([str(project.path), "--truth-user", "alice"]) == 0
    out = capsys.readouterr().out
    assert "picks (alice_1): ribosome 2\n" in out
    assert "not annotated (no picks file; not scored, not trained as background): " \
        "apo-ferritin, beta-amylase, beta-gal" in out
    assert "not read as truth: bob_2, sparse-det_0" in out
    assert info_main([str(project.path)]) == 0  # one run's conflict does not hide the rest
    out = capsys.readouterr().out
    assert "picks: run " in out and "several annotators" in out and run1 in out


def test_annotators_of_different_particles_are_read_together(annotated):
    """A lab that splits the work by particle: alice the ribosomes, bob the apo-ferritins."""
    project, (run0, _) = annotated
    project.write_picks(run0, "apo-ferritin", BOB, user_id="bob", session_id="2")
    picks = project.read_picks(run0)
    np.testing.assert_array_equal(picks["ribosome"], ALICE)
    np.testing.assert_array_equal(picks["apo-ferritin"], BOB)
    assert project.untrusted_picks(run0) == ["sparse-det_0"]


def test_infer_warns_when_its_picks_would_read_as_a_persons(small_project, tmp_path, caplog):
    from sparse_det.infer import main as infer_main

    args = ["--project", str(small_project.path), "--out", str(tmp_path / "sub.csv"),
            "--picks-out", str(tmp_path / "picks"), "--checkpoint", str(tmp_path / "no.pt")]
    assert infer_main([*args, "--session-id", "0"]) == 2  # the missing checkpoint
    assert "copick reads a session" not in caplog.text
    assert infer_main([*args, "--session-id", "3"]) == 2
    assert "--session-id 3: copick reads a session other than 0 as a person's" in caplog.text


def test_picks_in_the_static_root_are_read_as_copick_reads_them(small_project, tmp_path):
    """A facility shares ground truth read-only in the static root (copick lists those
    picks too); an overlay file of the same name shadows it."""
    root = tmp_path / "project"
    shutil.copytree(small_project.path, root)
    run = CopickProject(root).runs()[0]
    expected = CopickProject(root).read_picks(run)
    overlay_picks = root / "overlay/ExperimentRuns" / run / "Picks"
    static_picks = root / "static/ExperimentRuns" / run / "Picks"
    shutil.move(overlay_picks, static_picks)
    moved = CopickProject(root).read_picks(run)
    assert sum(len(v) for v in moved.values()) > 0
    for name, pts in expected.items():
        np.testing.assert_array_equal(moved[name], pts, err_msg=name)
    CopickProject(root).write_picks(run, "ribosome", ALICE)  # curation_0 in the overlay
    np.testing.assert_array_equal(CopickProject(root).read_picks(run)["ribosome"], ALICE)
    np.testing.assert_array_equal(CopickProject(root).read_picks(run)["apo-ferritin"],
                                  expected["apo-ferritin"])


def test_tune_reads_annotated_runs_only(annotated, tmp_path, capsys, caplog):
    """A project with one of its runs annotated: read as a run with no particles, the other
    would push every threshold up."""
    from sparse_det.inference import Picker
    from sparse_det.tune import _detect_runs
    from sparse_det.tune import main as tune_main

    project, (run0, run1) = annotated
    caplog.set_level(logging.INFO)
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    _, truths, names = _detect_runs([picker], [str(project.path)], None)
    assert [r for _, r in names] == [run0]
    np.testing.assert_array_equal(truths[0]["ribosome"], ALICE)
    assert f"left out: {run1} (no annotations; not read as truth: sparse-det_0)" in caplog.text
    rc = tune_main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(project.path),
                    "--runs", run1, "--out", str(tmp_path / "t.pt")])
    assert rc == 2 and "no annotated runs among " + run1 in capsys.readouterr().err
    rc = tune_main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(project.path),
                    "--runs", run0, "TS_typo", "--out", str(tmp_path / "t.pt")])
    assert rc == 2 and f"{project.path}: no run 'TS_typo'; runs: " in capsys.readouterr().err
    # the rescorer's fit says the same, and of a run without annotations, as one line
    from sparse_det.rescore_fit import main as rescore_main

    for runs, said in (([run0, "TS_typo"], f"{project.path}: no run 'TS_typo'; runs: "),
                       ([run1], "no annotated runs in ")):
        rc = rescore_main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project",
                           str(project.path), "--runs", *runs, "--out", str(tmp_path / "r.pt")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: ") and said in err and "\n" not in err, err
    assert not (tmp_path / "r.pt").exists()


def test_training_splits_the_annotated_runs(annotated):
    from sparse_det.config import Config
    from sparse_det.data import split_runs

    project, (run0, run1) = annotated
    project.write_picks(run1, "ribosome", BOB, user_id="alice", session_id="1")
    cfg = Config()
    cfg.data.project, cfg.data.n_val = str(project.path), 1
    assert split_runs(cfg, project) == ([run0], [run1])
    for f in (project.path / "overlay/ExperimentRuns" / run1 / "Picks").glob("alice_*"):
        f.unlink()
    with pytest.raises(ValueError, match="no training runs left"):
        split_runs(cfg, project)  # run0 validates; nothing else is annotated
    cfg.data.train_runs, cfg.data.val_runs = [run1], [run0]
    with pytest.raises(ValueError, match=rf"\['{run1}'\] have no ground-truth picks"):
        split_runs(cfg, project)
    project.write_picks(run1, "ribosome", BOB, user_id="alice", session_id="1")
    cfg.data.train_runs, cfg.data.val_runs = [f"*{run0[-3:]}"], [f"TS_*[{run1[-1]}]"]
    assert split_runs(cfg, project) == ([run0], [run1])  # named by patterns
    cfg.data.val_runs = ["TS_nope*"]
    with pytest.raises(DataError, match=r"no run 'TS_nope\*'; runs: "):
        split_runs(cfg, project)


def test_the_rescorers_cached_examples_follow_the_truth(annotated, tmp_path):
    """The rescorer's examples are labelled by the truth: read as another annotator's, or
    after an edit, a run's cached examples are not read back."""
    from sparse_det.rescore_cache import ExampleCache, truth_digest

    project, (run0, _) = annotated
    project.write_picks(run0, "apo-ferritin", BOB, user_id="bob", session_id="2")
    cache = ExampleCache(tmp_path / "examples", "net")

    def path(p):
        return cache.path(p.path, run0, [], True, truth_digest(p.read_picks(run0)))

    both, again = path(project), path(CopickProject(project.path))
    alice = path(CopickProject(project.path, truth_user="alice"))
    project.write_picks(run0, "ribosome", ALICE[:1], user_id="alice", session_id="1")
    edited = path(project)
    assert both == again and len({both, alice, edited}) == 3


def test_picks_names_copick_cannot_split_are_refused(annotated):
    """"my_picker_0_ribosome.json" would read back as user "my", session "picker" and
    particle "0_ribosome": a user or session id holding "_" is refused before writing."""
    project, (run0, _) = annotated
    before = sorted(p.name for p in project.run_dir(run0, overlay=True).glob("Picks/*"))
    for user, session in (("my_picker", "0"), ("alice", "1_2"), ("", "1")):
        with pytest.raises(DataError, match="must be letters, digits, '.' or '-'"):
            project.write_picks(run0, "ribosome", BOB, user_id=user, session_id=session)
    assert sorted(p.name for p in project.run_dir(run0, overlay=True).glob("Picks/*")) == before
    project.write_picks(run0, "ribosome", BOB, user_id="bob.v2-x", session_id="3")
    assert len(project.read_picks(run0, user_id="bob.v2-x")["ribosome"]) == 1


def test_a_class_a_run_does_not_annotate_is_neither_scored_nor_background(annotated, tmp_path,
                                                                          capsys):
    """alice picked ribosomes only in run 0. An apo-ferritin found there is not a false
    positive, and training lets that run's background voxels be any class but ribosome."""
    from sparse_det.config import Config

    project, (run0, _) = annotated
    csv = tmp_path / "sub.csv"
    pd.DataFrame({"id": range(3), "experiment": run0,
                  "particle_type": ["ribosome", "ribosome", "apo-ferritin"],
                  "x": [*ALICE[:, 0], 50.0], "y": [*ALICE[:, 1], 50.0],
                  "z": [*ALICE[:, 2], 50.0]}).to_csv(csv, index=False)
    assert evaluate_main(["--solution", str(project.path), "--submission", str(csv),
                          "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["score"] == pytest.approx(1.0), doc  # ribosome F4 1 of the annotated classes
    assert doc["per_class"]["apo-ferritin"]["fp"] == 0
    assert [run0, "apo-ferritin"] in doc["not_annotated"]
    assert evaluate_main(["--solution", str(project.path), "--submission", str(csv)]) == 0
    assert f"not scored in {run0} (not annotated, or picked in part, there): apo-ferritin, " in \
        capsys.readouterr().out

    cfg = Config()
    sample = load_run_sample(project, tmp_path / "shards", cfg.sparsify, run0,
                             cfg.targets.radius_fraction)
    ribosome = project.particles.class_index("ribosome")
    expected = sum(1 << project.particles.class_index(n) for n in project.particles.names
                   if n != "ribosome")
    assert sample.unknown_bits == expected and not sample.unknown_bits & (1 << ribosome)
    assert (sample.labels == ribosome).any() and set(np.unique(sample.labels)) == {0, ribosome}
    from sparse_det.data import CropSampler

    crop = CropSampler([sample], cfg.train, seed=0).sample()
    assert (crop.unknown_bits[crop.labels == 0] == expected).all()
    assert (crop.unknown_bits[crop.labels > 0] == 0).all()


def test_a_training_step_on_a_partly_annotated_run(annotated, tmp_path):
    """The real model on a real crop of alice's ribosome-only run: the partial-label class
    loss is below plain cross-entropy's (each background voxel may also be any of the five
    unannotated classes), and train_step takes that path and steps."""
    import torch

    from sparse_det.config import Config
    from sparse_det.data import CropSampler
    from sparse_det.losses import detection_losses
    from sparse_det.train_state import build_state
    from sparse_det.training import train_step

    project, (run0, _) = annotated
    cfg = Config()
    sample = load_run_sample(project, tmp_path / "shards", cfg.sparsify, run0,
                             cfg.targets.radius_fraction)
    torch.manual_seed(0)
    state = build_state(cfg, list(sample.sv.feature_names), project.particles,
                        torch.device("cpu"))
    batch, labels, offsets, unknown = CropSampler([sample], cfg.train, seed=0).batch(2)
    assert (unknown[labels == 0] == sample.unknown_bits).all() and (labels > 0).any()
    with torch.no_grad():
        out = state.model(batch)
    kw = dict(background_weight=cfg.loss.background_weight, focal_gamma=cfg.loss.focal_gamma,
              offset_weight=cfg.loss.offset_weight, label_weight=state.label_weight)
    plain = detection_losses(out["cls_logits"], out["offsets"], labels, offsets, **kw)
    partial = detection_losses(out["cls_logits"], out["offsets"], labels, offsets,
                               unknown_bits=unknown, **kw)
    assert partial["loss_cls"] < plain["loss_cls"]
    assert partial["loss_offset"] == plain["loss_offset"]
    before = [p.detach().clone() for p in state.model.parameters()]
    m = train_step(state=state, sampler=CropSampler([sample], cfg.train, seed=0), cfg=cfg,
                   device=torch.device("cpu"), batch_size=2)
    assert np.isfinite(m["loss"]) and m["loss_cls"] == pytest.approx(
        float(partial["loss_cls"]), rel=0.05)  # same crops; train mode's batch norm differs
    assert any(not torch.equal(a, b) for a, b in zip(before, state.model.parameters(),
                                                       strict=True))


def test_tune_keeps_the_checkpoints_threshold_for_classes_no_run_annotates(annotated,
                                                                          tmp_path):
    """alice's run annotates ribosomes alone. `tune --fit-all-thresholds` fits the ribosome
    from it; every other class keeps the vote mass the checkpoint's threshold stood for."""
    from sparse_det.calibrated_tuning import _log_mass
    from sparse_det.tune import main as tune_main

    project, _ = annotated
    out = tmp_path / "t.pt"
    assert tune_main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project",
                      str(project.path), "--fit-all-thresholds", "--network-alone",
                      "--out", str(out)]) == 0
    base, tuned = checkpoint_settings(DEFAULT_CHECKPOINT), checkpoint_settings(out)
    alone = base.prior(base.config.postprocess.tta)  # what --network-alone tunes from
    for name in project.particles.names:
        if name == "ribosome":
            continue
        assert _log_mass(name, tuned.thresholds[name], tuned.calibration) == pytest.approx(
            _log_mass(name, alone[0][name], alone[1]), abs=1e-6), name


def test_the_rescorer_takes_background_from_runs_annotated_in_full(annotated, small_project):
    """A candidate in alice's ribosome-only run may be an unannotated particle: that run
    gives particle examples only; the same run annotated in full gives background too."""
    from sparse_det.inference import Picker
    from sparse_det.rescore_examples import run_examples

    project, (run0, _) = annotated
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    [(x, y)] = run_examples(picker, project, run0, None)
    ribosome = project.particles.class_index("ribosome")
    assert len(y) and set(np.unique(y)) == {ribosome}, np.unique(y)
    [(xf, yf)] = run_examples(picker, small_project, run0, None)
    assert (yf == 0).sum() > 0 and x.shape[1] == xf.shape[1]


def test_a_particle_picked_in_part_trains_where_picked_and_is_not_scored(annotated, tmp_path,
                                                                         capsys):
    """alice picked two ribosomes of run 0 and marked them as some of its ribosomes: they
    train as ribosomes, the run's background may be a ribosome too, and no ribosome found
    there is scored."""
    from sparse_det.config import Config
    from sparse_det.data import CropSampler
    from sparse_det.import_picks import main as import_main
    from sparse_det.losses import PARTLY_SHIFT

    project, (run0, _) = annotated
    csv = tmp_path / "some.csv"
    pd.DataFrame({"id": [0, 1], "experiment": run0, "particle_type": "ribosome",
                  "x": ALICE[:, 0], "y": ALICE[:, 1], "z": ALICE[:, 2]}).to_csv(csv, index=False)
    assert import_main([str(csv), "--project", str(project.path), "--user-id", "alice",
                        "--partly-picked", "--complete"]) == 2
    assert "give one" in capsys.readouterr().err
    assert import_main([str(csv), "--project", str(project.path), "--user-id", "alice",
                        "--partly-picked"]) == 0
    assert project.partly_picked(run0) == ["ribosome"]
    assert "ribosome" not in project.read_truth(run0)
    truth, unknown = project.training_truth(run0)
    np.testing.assert_array_equal(truth["ribosome"], ALICE)
    assert set(unknown) == set(project.particles.names)  # the rest unannotated
    cfg = Config()
    sample = load_run_sample(project, tmp_path / "shards", cfg.sparsify, run0,
                             cfg.targets.radius_fraction)
    ribosome = project.particles.class_index("ribosome")
    others = sum(1 << project.particles.class_index(n) for n in project.particles.names
                 if n != "ribosome")  # not annotated; the ribosome picked in part
    assert (sample.labels == ribosome).any()
    assert sample.unknown_bits == others | (1 << (PARTLY_SHIFT + ribosome))
    assert sample.truth_xyz_A == {}
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": [0], "experiment": run0, "particle_type": "ribosome", "x": [5.0],
                  "y": [5.0], "z": [5.0]}).to_csv(sub, index=False)
    capsys.readouterr()
    assert evaluate_main(["--solution", str(project.path), "--submission", str(sub)]) == 2
    assert "nothing to score" in capsys.readouterr().err
    project.write_picks(run0, "apo-ferritin", ALICE[:0], user_id="alice", session_id="1")
    assert evaluate_main(["--solution", str(project.path), "--submission", str(sub),
                          "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["per_class"]["ribosome"]["fp"] == 0 and [run0, "ribosome"] in \
        doc["not_annotated"]
    crop = CropSampler([sample], cfg.train, seed=0).sample()
    assert (crop.unknown_bits[crop.labels == 0] == sample.unknown_bits).all()
    assert info_main([str(project.path)]) == 0
    out = capsys.readouterr().out
    assert "picks (alice_1): apo-ferritin 0, ribosome 2\n" in out
    assert "picked in part (trained where picked, not scored): ribosome" in out
    marks = project.run_dir(run0, overlay=True) / "sparse-det-partly-picked.txt"
    marks.write_text("ribosme\n")
    with pytest.raises(DataError, match="unknown particles \\['ribosme'\\]"):
        project.partly_picked(run0)


def test_training_validation_keeps_the_inits_threshold_for_classes_no_run_annotates(
        annotated, tmp_path):
    """sparse_det.train from the default, validated on alice's ribosome-only run: the
    validation thresholds (which the checkpoint it writes carries) keep the vote mass the
    init's network-alone threshold stood for in every other class, instead of the
    uncalibrated default 0.5. The default's own thresholds map its rescorer's probabilities,
    not vote masses (read as masses they passed nearly every candidate)."""
    import torch

    from sparse_det.calibrated_tuning import _log_mass
    from sparse_det.train_state import build_state
    from sparse_det.training import Hooks, _validate

    project, (run0, _) = annotated
    base = checkpoint_settings(DEFAULT_CHECKPOINT)
    cfg = training_config(base.config, project=str(project.path),
                          base=str(DEFAULT_CHECKPOINT), work=tmp_path / "work", name="f",
                          train_runs=[run0], val_runs=[run0], steps=1, budget_s=0.0,
                          device="cpu")
    sample = load_run_sample(annotated_project(cfg), cfg.data.shards, cfg.sparsify, run0,
                             cfg.targets.radius_fraction)
    state = build_state(cfg, list(sample.sv.feature_names), project.particles,
                        torch.device("cpu"))
    prior = base.network_prior(cfg.postprocess.tta)
    assert base.has_rescorer and prior[1] != base.prior(cfg.postprocess.tta)[1]
    assert state.threshold_prior == prior
    val, _ = _validate(state, [sample], cfg, torch.device("cpu"),
                       hooks=Hooks(save=lambda *a: None), payload={})
    others = [n for n in project.particles.names if n != "ribosome"]
    for name in others:
        assert _log_mass(name, val["thresholds"][name], val["calibration"]) == \
            pytest.approx(_log_mass(name, prior[0][name], prior[1]), abs=1e-6), name
    state.threshold_prior = None  # the rule before: an unannotated class got 0.5
    val, _ = _validate(state, [sample], cfg, torch.device("cpu"),
                       hooks=Hooks(save=lambda *a: None), payload={})
    assert all(val["thresholds"][n] == pytest.approx(0.5) for n in others)
