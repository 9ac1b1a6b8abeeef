"""Half precision (`--precision fp16`): spconv takes fp16 only with weights and features in
the same dtype, so the picker casts both; `--precision bf16`: the CPU's conv products in
bfloat16. The picks must stay those of fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_tools.simulate import simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.inference import Picker
from sparse_det.structures import SparseBatch


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return simulate_project(tmp_path_factory.mktemp("fp16") / "p", 1, 5, (64, 192, 192),
                            progress=False)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_picks_match_fp32(small_run, precision):
    run = small_run.runs()[0]
    full = Picker.load(DEFAULT_CHECKPOINT, "cpu", rescore=False)
    half = Picker.load(DEFAULT_CHECKPOINT, "cpu", precision=precision, rescore=False)
    sv = full.sparse(small_run, run)
    if precision == "fp16":
        assert next(half.ckpt.model.parameters()).dtype.itemsize == 2
    else:  # fp32 weights; the conv products in bf16, so the logits move a little
        assert next(half.ckpt.model.parameters()).dtype == torch.float32
        b = SparseBatch.from_numpy([sv.coords_zyx], [sv.feats], sv.shape_zyx)
        with torch.no_grad():
            pf, ph = full.ckpt.model(b)["cls_logits"], half.ckpt.model(b)["cls_logits"]
        assert 0 < (pf - ph).abs().max() < 0.1 * pf.abs().max(), "bf16 did not run, or broke"
    a, b = full.pick(full.detect(sv)), half.pick(half.detect(sv))
    n = 0
    for p in full.particles:
        xa, xb = a[p.name][0], b[p.name][0]
        assert abs(len(xa) - len(xb)) <= max(1, len(xa) // 20), (p.name, len(xa), len(xb))
        if len(xa) and len(xb):
            d = np.linalg.norm(xa[:, None] - xb[None], axis=2).min(axis=1)
            assert np.mean(d < 0.25 * p.radius_A) >= 0.95, (p.name, d)
        n += len(xa)
    assert n > 10, "the run should give picks to compare"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        Picker.load(DEFAULT_CHECKPOINT, "cpu", precision="int8")


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_it(monkeypatch):
    """infer's default: bf16 products on a CPU with bf16 instructions, fp32 elsewhere (a
    CPU without them would emulate bf16, slower; CUDA keeps spconv's fp32 kernels); an
    explicit precision is taken as given, and the Picker says what it runs at."""
    from sparse_det import inference
    from sparse_det.config import INFER_PRECISION

    assert INFER_PRECISION == "auto"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    native = inference.cpu_multiplies_bf16()
    assert inference.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert inference.resolve_precision("auto", cuda) == "fp32"
    for explicit in ("fp32", "fp16", "bf16"):
        assert inference.resolve_precision(explicit, cpu) == explicit
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu", precision="auto", rescore=False)
    assert picker.precision == ("bf16" if native else "fp32")
    monkeypatch.setattr(inference, "cpu_multiplies_bf16", lambda: False)
    assert inference.resolve_precision("auto", cpu) == "fp32"
    assert Picker.load(DEFAULT_CHECKPOINT, "cpu", precision="auto",
                       rescore=False).precision == "fp32"
    monkeypatch.setattr(inference, "cpu_multiplies_bf16", lambda: True)
    assert inference.resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        inference.resolve_precision("int8", cpu)
