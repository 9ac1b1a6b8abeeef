"""A fine-tune's appearance copies carry more added noise than the base's (0.5–4 times the
volume's robust sigma instead of 0–2.5): it sees a few runs of a narrow SNR span. A
proteasome learnt from 3 runs at SNR 1.2–2.25 read 0.30 on runs at 0.4–1.15 with the
base's, 0.68 with this (bench/new_complex.py, docs/experiments.md)."""

from __future__ import annotations

import copy

from sparse_det.checkpoint import DEFAULT_CHECKPOINT, checkpoint_settings
from sparse_det.data import appearance_ranges, appearance_variant
from sparse_det.finetune import FINETUNE_NOISE_REL, training_config, training_name


def test_a_fine_tunes_copies_carry_its_own_noise(small_project, tmp_path):
    base = checkpoint_settings(DEFAULT_CHECKPOINT).config
    assert base.data.appearance["noise_rel"] == [0.0, 2.5] and base.data.appearance_variants == 2
    r0, r1 = small_project.runs()
    kw = {"project": str(small_project.path), "base": str(DEFAULT_CHECKPOINT),
          "work": tmp_path, "name": "fold0", "train_runs": [r0], "val_runs": [r1],
          "steps": 1, "budget_s": 0.0, "device": "cpu"}
    cfg = training_config(base, **kw, noise_rel=FINETUNE_NOISE_REL)
    assert cfg.data.appearance == {**base.data.appearance, "noise_rel": [0.5, 4.0]}
    assert cfg.data.appearance_variants == 2
    assert base.data.appearance["noise_rel"] == [0.0, 2.5]  # the base's config is untouched
    # adapt's rounds (no noise_rel) keep the base's.
    assert training_config(base, **kw).data.appearance == base.data.appearance
    # A base trained with a moving average of its weights does not hand it on.
    averaged = copy.deepcopy(base)
    averaged.train.ema_decay = 0.999
    assert training_config(averaged, **kw).train.ema_decay == 0.0
    ranges = appearance_ranges(cfg.data.appearance)
    drawn = [appearance_variant(small_project, cfg.data.shards, cfg.sparsify, r0, v, 0,
                                ranges).input["appearance"]["noise_rel"] for v in (1, 2, 3)]
    assert all(0.5 <= x <= 4.0 for x in drawn), drawn
    assert len(set(drawn)) == 3
    # A fine-tune of other noise trains in folders of its own.
    assert training_name("fold0", [r0], [r1], 1e-3, noise_rel=FINETUNE_NOISE_REL) != \
        training_name("fold0", [r0], [r1], 1e-3)


def test_finetune_noise_rel_reaches_every_training(small_project, tmp_path, capsys):
    """`--noise-rel 0 2.5` (the base's, which fine-tuned 4 runs at SNR 0.22-0.3 better out
    of fold: docs/experiments.md) is what each fold trains with; a range below 0 or upside
    down is refused before anything runs."""
    from sparse_det.checkpoint import read_checkpoint
    from sparse_det.finetune import main

    out = tmp_path / "ft.pt"
    args = ["--project", str(small_project.path), "--out", str(out), "--steps", "1",
            "--folds", "2", "--device", "cpu", "--quiet"]
    for bad in (["-1", "2"], ["3", "2"]):
        assert main([*args, "--noise-rel", *bad]) == 2
        assert "--noise-rel LO HI needs 0 <= LO <= HI" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--noise-rel", "0", "2.5"]) == 0
    summary = read_checkpoint(out)["extra"]["finetune"]
    assert summary["noise_rel"] == [0.0, 2.5]
    for fold in summary["folds"]:
        config = read_checkpoint(fold["checkpoint"])["config"]
        assert config["data"]["appearance"]["noise_rel"] == [0.0, 2.5], fold
