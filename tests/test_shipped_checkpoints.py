"""The shipped checkpoints load, read their tomograms as their configs say, and pick the
small simulated project's particles (a known answer: its picks) well."""

import pytest

from sparse_det.checkpoint import (
    DEFAULT_CHECKPOINT,
    SHAPES_GENERAL_CHECKPOINT,
    SIMULATOR_SHAPES_CHECKPOINT,
    UNWHITENED_CHECKPOINT,
)
from sparse_det.inference import Picker
from sparse_det.thresholds import per_run_scores


@pytest.mark.parametrize("checkpoint, whitened", [(DEFAULT_CHECKPOINT, True),
                                                  (SIMULATOR_SHAPES_CHECKPOINT, True),
                                                  (UNWHITENED_CHECKPOINT, False),
                                                  (SHAPES_GENERAL_CHECKPOINT, True)])
def test_shipped_checkpoint_picks_the_small_project(checkpoint, whitened, small_project):
    picker = Picker.load(checkpoint, "cpu")
    cfg = picker.sparsify_config
    assert (cfg.whiten_sigma_A > 0) == whitened and not cfg.whitened_channels
    assert cfg.clip_sigma == (20.0 if whitened else 6.0)
    assert picker.ckpt.calibration, "thresholds are probabilities"
    for run in small_project.runs():
        picked = picker.pick(picker.detect_run(small_project, run))
        # Measured: 0.93 / 0.98 (default, whitened), 0.91 / 0.96 (unwhitened) and 0.89 / 0.91
        # (trained on procedural shapes too).
        f4 = per_run_scores([picked], [small_project.read_picks(run)], picker.particles,
                            {name: -1.0 for name in picker.thresholds})[0]
        assert f4 > 0.85, (checkpoint.name, run, f4)


def test_a_tomogram_unlike_the_tuning_runs_is_flagged(small_project, tmp_path, caplog):
    """The default knows the confidence range of the runs its thresholds were tuned on; a
    tomogram with every simulator parameter beyond its training range (read at 0.59-0.62
    here, F4 0.16 on full-size ones) is flagged by name, the in-range small project is not
    (0.90-0.94), and the picks are written either way."""
    import json
    import logging
    from pathlib import Path

    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import simulate_project
    from sparse_det.checkpoint import checkpoint_settings
    from sparse_det.stream import UNSURE_MARGIN, infer_project

    low, high = checkpoint_settings(DEFAULT_CHECKPOINT).tuned_confidence
    assert 0.8 < low < high < 0.95 and UNSURE_MARGIN == 0.05
    ranges = json.loads((Path(__file__).parents[1] / "bench/heldout_ranges.json").read_text())
    shifted = simulate_project(tmp_path / "shifted", 1, 900, (96, 384, 384),
                               SimRanges(**{k: tuple(v) for k, v in ranges.items()}),
                               progress=False)
    with caplog.at_level(logging.WARNING, logger="sparse_det.stream"):
        infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu")
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        picks = infer_project(shifted, DEFAULT_CHECKPOINT, device="cpu")
    run = shifted.runs()[0]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [run]
    assert "the network is unsure of this tomogram" in caplog.records[0].getMessage()
    assert len(picks), "still picked"
