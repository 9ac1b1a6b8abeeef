"""Test-time normalisation (`postprocess.norm_stats: tomogram`): each tomogram's own
BatchNorm statistics. The network's convolutions have no bias, so with them its output no
longer depends on the input's overall scale; the checkpoint's running statistics stay
untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, write_retuned
from sparse_det.config import ConfigError, config_from_dict
from sparse_det.inference import Picker, predict_sparse


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    project = simulate_project(tmp_path_factory.mktemp("bn") / "p", 1, 5, (96, 192, 192),
                               ranges=SimRanges(snr=(1.5, 2.0)), progress=False)
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu", rescore=False)
    return picker, picker.sparse(project, project.runs()[0])


def test_tomogram_statistics_make_the_output_scale_free(sparse_run):
    picker, sv = sparse_run
    model, dev = picker.ckpt.model, picker.device
    before = {k: v.clone() for k, v in model.state_dict().items()}
    louder = replace(sv, feats=sv.feats * 3.0)
    p, o = predict_sparse(model, sv, dev, amp=False, norm_stats="tomogram")
    p3, o3 = predict_sparse(model, louder, dev, amp=False, norm_stats="tomogram")
    torch.testing.assert_close(p3, p, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(o3, o, atol=1e-3, rtol=1e-3)
    # With the running statistics the same change moves the prediction.
    q, _ = predict_sparse(model, sv, dev, amp=False)
    q3, _ = predict_sparse(model, louder, dev, amp=False)
    assert float((q3 - q).abs().max()) > 0.1
    assert float((p - q).abs().max()) > 1e-3, "tomogram statistics changed nothing"
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"


def test_the_setting_travels_with_the_checkpoint(sparse_run, tmp_path):
    picker, sv = sparse_run
    ck = write_retuned(DEFAULT_CHECKPOINT, tmp_path / "t.pt", thresholds=picker.thresholds,
                       calibration=picker.ckpt.calibration, extra={},
                       postprocess={"norm_stats": "tomogram"})
    adapted = Picker.load(ck, "cpu", rescore=False)
    assert adapted.ckpt.config.postprocess.norm_stats == "tomogram"
    louder = replace(sv, feats=sv.feats * 3.0)
    a, b = adapted.detect(sv), adapted.detect(louder)
    for name in a.per_class:
        np.testing.assert_allclose(b[name][1], a[name][1], rtol=1e-3, err_msg=name)
    assert sum(len(s) for _, s in a.per_class.values()) > 0
    with pytest.raises(ConfigError, match="norm_stats"):
        config_from_dict({"postprocess": {"norm_stats": "batch"}})
