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
