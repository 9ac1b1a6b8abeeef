"""tune's inference settings (sparse_det/tune.py: INFERENCE_SETTINGS): set where given, left
where None, returned as they were (so tune knows whether the checkpoint's thresholds still
fit its detections), and refused out of range before any run is read."""

from __future__ import annotations

import pytest

from sparse_det.config import PostprocessConfig
from sparse_det.tune import INFERENCE_SETTINGS, _set_inference, main


def test_given_settings_are_set_and_the_old_ones_returned():
    post = PostprocessConfig(keep_follow_foreground=0.27, keep_growth_max=2.4)
    was = _set_inference(post, {"keep_growth_max": 1.5, "grown_mirrors": False,
                                "norm_stats": None})
    assert was == {"keep_follow_foreground": 0.27, "keep_growth_max": 2.4,
                   "grown_mirrors": True, "norm_stats": "training"}
    assert (post.keep_growth_max, post.grown_mirrors, post.norm_stats) == (1.5, False,
                                                                           "training")
    assert _set_inference(post) == {k: getattr(post, k) for k in INFERENCE_SETTINGS}


@pytest.mark.parametrize("bad", [{"keep_follow_foreground": 1.0}, {"keep_growth_max": 0.5},
                                 {"prob_floor": 0.3}])
def test_out_of_range_settings_are_refused(bad):
    post = PostprocessConfig()
    with pytest.raises(ValueError):
        _set_inference(post, bad)
    assert post == PostprocessConfig()  # nothing half-set


def test_the_command_line_refuses_a_growth_under_one(tmp_path, capsys):
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(tmp_path),
                 "--out", str(tmp_path / "t.pt"), "--keep-growth-max", "0.5"]) == 2
    assert "--keep-growth-max must be at least 1" in capsys.readouterr().err


def test_the_command_line_refuses_a_share_out_of_range(tmp_path, capsys):
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(tmp_path),
                 "--out", str(tmp_path / "t.pt"), "--keep-fraction", "0.7"]) == 2
    assert "--keep-fraction must be in (0, 0.5)" in capsys.readouterr().err
    assert not (tmp_path / "t.pt").exists()


def test_a_tuned_share_is_the_share_the_checkpoint_then_keeps(tmp_path):
    """tune --keep-fraction reads every run at that share and stores it: the tuned
    checkpoint sparsifies a run at it (a 48-slice slab keeps 4.2 % by its depth rule, so
    6 % is the share's doing)."""
    import numpy as np

    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import simulate_project
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint
    from sparse_det.inference import Picker

    project = simulate_project(tmp_path / "p", 1, 5, (96, 192, 192),
                               ranges=SimRanges(snr=(1.5, 2.0)), progress=False)
    out = tmp_path / "t.pt"
    assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(project.path),
                 "--out", str(out), "--tta", "none", "--keep-fraction", "0.06"]) == 0
    assert read_checkpoint(out)["config"]["sparsify"]["keep_fraction"] == 0.06
    run = project.runs()[0]
    for ck, share in ((DEFAULT_CHECKPOINT, 40 / (48 * 20)), (out, 0.06)):
        sv = Picker.load(ck, "cpu").sparse(project, run)
        assert len(sv) / np.prod(sv.shape_zyx) == pytest.approx(share, rel=0.1), ck
