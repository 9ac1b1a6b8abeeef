"""The typed config tree: unknown keys and wrong types fail loudly at load."""

import pytest

from sparse_det.config import ConfigError, config_from_dict


def test_unknown_config_key_fails():
    with pytest.raises(ConfigError, match=r"unknown keys \['stepz'\]"):
        config_from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match="expected int"):
        config_from_dict({"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"config.train.crop_zyx: expected 3 values"):
        config_from_dict({"train": {"crop_zyx": [32, 64]}})
    # The `ray:` section belongs to ray_jobs: the library passes it by unread.
    assert config_from_dict({"ray": {"num_workers": 2}}).train.steps == 3000


def test_ray_section_is_checked_by_ray_jobs(tmp_path):
    from ray_jobs.config import load_train_config

    good = tmp_path / "good.yaml"
    good.write_text("train: {steps: 7}\nray: {num_workers: 2, storage_path: store}\n")
    cfg, ray_cfg = load_train_config(good)
    assert cfg.train.steps == 7 and ray_cfg.num_workers == 2, (cfg.train, ray_cfg)
    assert ray_cfg.storage_path == str(tmp_path / "store"), "relative to the config's root"
    bad = tmp_path / "bad.yaml"
    bad.write_text("ray: {num_wrkers: 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config.ray: unknown keys \['num_wrkers'\]"):
        load_train_config(bad)


def test_checkpoint_settings_are_read_without_torch():
    """Command lines check their input against the checkpoint's settings before loading
    torch; what they read must be what torch reads."""
    import subprocess
    import sys

    from sparse_det.checkpoint import (
        DEFAULT_CHECKPOINT,
        _settings,
        checkpoint_settings,
        read_checkpoint,
    )

    fast, slow = checkpoint_settings(DEFAULT_CHECKPOINT), _settings(
        DEFAULT_CHECKPOINT, read_checkpoint(DEFAULT_CHECKPOINT))
    assert fast.config == slow.config and fast.thresholds == slow.thresholds, (fast, slow)
    assert fast.feature_names == slow.feature_names, (fast, slow)
    assert fast.particles.to_list() == slow.particles.to_list(), (fast, slow)
    code = ("import sys\nfrom sparse_det.checkpoint import checkpoint_settings, "
            "DEFAULT_CHECKPOINT\ncheckpoint_settings(DEFAULT_CHECKPOINT)\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.strip() == "False", res.stdout + res.stderr[-1000:]


def test_checkpoint_settings_refuse_other_pickled_objects(tmp_path):
    import pickle
    import zipfile

    from sparse_det.checkpoint import CheckpointError, checkpoint_settings

    bad = tmp_path / "evil.pt"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"format": "x", "f": print}))
    with pytest.raises(CheckpointError, match=r"evil.pt: not a readable checkpoint.*"
                                              r"builtins.print is not allowed"):
        checkpoint_settings(bad)


def test_every_shipped_config_loads():
    """The configs/ files are the commands that reproduce the checkpoints: each must load,
    and class weights name real particles (the dataset manifest is not a training config:
    tests/test_datasets.py reads it)."""
    from pathlib import Path

    from data_tools.datasets import DEFAULT_MANIFEST
    from data_tools.particles import COMPETITION_PARTICLES, ParticleTable
    from sparse_det.config import load_config
    from sparse_det.losses import label_weights

    root = Path(__file__).resolve().parents[1]
    paths = sorted(p for p in (root / "configs").glob("*.yaml") if p != root / DEFAULT_MANIFEST)
    assert len(paths) >= 5, paths
    for path in paths:
        cfg = load_config(path)
        lw = label_weights(ParticleTable(COMPETITION_PARTICLES),
                           background_weight=cfg.loss.background_weight,
                           class_weights=cfg.loss.class_weights)
        assert lw[0] == cfg.loss.background_weight, path
    balanced = load_config(root / "configs" / "balanced.yaml")
    assert balanced.loss.class_weights["beta-galactosidase"] == 4, balanced.loss


def test_channel_group_dropout_out_of_range_fails():
    with pytest.raises(ConfigError, match=r"channel_group_dropout: 0.7, expected 0-0.5"):
        config_from_dict({"train": {"channel_group_dropout": 0.7}})
    cfg = config_from_dict({"train": {"channel_group_dropout": 0.5}})
    assert cfg.train.channel_group_dropout == 0.5


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_ema_decay_out_of_range_fails(decay):
    with pytest.raises(ConfigError, match=rf"train.ema_decay: {decay}, must be in \[0, 1\)"):
        config_from_dict({"train": {"ema_decay": decay}})
    assert config_from_dict({"train": {"ema_decay": 0.999}}).train.ema_decay == 0.999


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_unpicked_share_outside_0_1_is_refused(share):
    from sparse_det.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="loss.unpicked_share"):
        config_from_dict({"loss": {"unpicked_share": share}})
    assert config_from_dict({"loss": {"unpicked_share": 1.0}}).loss.unpicked_share == 1.0


def test_distillation_settings_are_checked():
    with pytest.raises(ConfigError, match="loss.distill_weight: -1.0, expected ≥ 0"):
        config_from_dict({"loss": {"distill_weight": -1.0}})
    # Without an init checkpoint it loads (`train --init` sets one later); training refuses
    # to start without one.
    ok = config_from_dict({"loss": {"distill_weight": 2.0}})
    assert ok.loss.distill_weight == 2.0
    import torch

    from data_tools.particles import COMPETITION_PARTICLES, ParticleTable
    from sparse_det.train_state import build_state

    with pytest.raises(ConfigError, match=r"set train.init_checkpoint \(train --init PT\)"):
        build_state(ok, ["a"], ParticleTable(COMPETITION_PARTICLES), torch.device("cpu"))
