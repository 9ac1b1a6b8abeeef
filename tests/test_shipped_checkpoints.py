"""The two shipped checkpoints load, read their tomograms as their configs say, and pick the
small simulated project's particles (a known answer: its picks) well."""

import pytest

from sparse_det.checkpoint import DEFAULT_CHECKPOINT, UNWHITENED_CHECKPOINT
from sparse_det.inference import Picker
from sparse_det.thresholds import per_run_scores


@pytest.mark.parametrize("checkpoint, whitened", [(DEFAULT_CHECKPOINT, True),
                                                  (UNWHITENED_CHECKPOINT, False)])
def test_shipped_checkpoint_picks_the_small_project(checkpoint, whitened, small_project):
    picker = Picker.load(checkpoint, "cpu")
    cfg = picker.sparsify_config
    assert (cfg.whiten_sigma_A > 0) == whitened and not cfg.whitened_channels
    assert cfg.clip_sigma == (20.0 if whitened else 6.0)
    assert picker.ckpt.calibration, "thresholds are probabilities"
    for run in small_project.runs():
        picked = picker.pick(picker.detect_run(small_project, run))
        # Measured: 0.93 / 0.98 (default, whitened) and 0.91 / 0.96 (unwhitened).
        f4 = per_run_scores([picked], [small_project.read_picks(run)], picker.particles,
                            {name: -1.0 for name in picker.thresholds})[0]
        assert f4 > 0.85, (checkpoint.name, run, f4)
