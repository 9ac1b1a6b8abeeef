"""Weight averaging (sparse_det.soup): the mean of real checkpoints' weights, loadable as a
model, and refused with the file named when checkpoints cannot be averaged."""

from dataclasses import replace

import pytest
import torch

from data_tools.particles import ParticleTable
from sparse_det.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sparse_det.config import Config
from sparse_det.model import build_model
from sparse_det.soup import average_checkpoints, blend, main

NAMES = ["norm", "smooth", "dog30A", "dog60A", "dog100A"]


def _checkpoint(path, seed, channels=(8, 16), names=NAMES, particles=None):
    cfg = Config()
    cfg.model.channels = channels
    particles = particles or ParticleTable.competition()
    torch.manual_seed(seed)
    model = build_model(in_channels=len(names), num_classes=len(particles),
                        channels=list(channels), blocks_per_level=1, device="cpu")
    with torch.no_grad():  # every tensor differs between seeds, BatchNorm's included
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))  # positive: running variances stay valid
            elif name.endswith("num_batches_tracked"):
                t.fill_(seed + 1)
    thresholds = {p: 0.1 * (seed + 1) for p in particles.names}
    return save_checkpoint(path, model=model, config=cfg, particles=particles,
                           feature_names=list(names), thresholds=thresholds,
                           extra={"step": seed})


def test_soup_is_the_weighted_mean_and_loads(tmp_path):
    a = _checkpoint(tmp_path / "a.pt", 0)
    b = _checkpoint(tmp_path / "b.pt", 1)
    wa = load_checkpoint(a).model.state_dict()
    wb = load_checkpoint(b).model.state_dict()
    out = average_checkpoints([a, b], tmp_path / "soup.pt", weights=[3, 1])
    soup = load_checkpoint(out)
    ws = soup.model.state_dict()
    floats = [k for k, v in wa.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)
    assert all(not torch.equal(wa[k], wb[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(ws[k], 0.75 * wa[k] + 0.25 * wb[k], rtol=0, atol=1e-6)
    counters = [k for k in wa if k.endswith("num_batches_tracked")]
    assert counters and all(int(ws[k]) == 1 for k in counters), "integer buffers: the first's"
    assert soup.thresholds == load_checkpoint(a).thresholds
    assert soup.feature_names == NAMES

    # A soup of one checkpoint with itself is that checkpoint, to the bit.
    same = load_checkpoint(average_checkpoints([a, a, a], tmp_path / "same.pt"))
    for k, v in wa.items():
        assert torch.equal(same.model.state_dict()[k], v), k


def test_soup_refuses_what_cannot_be_averaged(tmp_path, capsys):
    a = _checkpoint(tmp_path / "a.pt", 0)
    wider = _checkpoint(tmp_path / "wider.pt", 1, channels=(8, 24))
    other_features = _checkpoint(tmp_path / "feats.pt", 1, names=[*NAMES[:4], "dog200A"])
    with pytest.raises(CheckpointError, match=r"wider\.pt.*config\.model"):
        average_checkpoints([a, wider], tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"feats\.pt.*feature_names"):
        average_checkpoints([a, other_features], tmp_path / "x.pt")
    table = ParticleTable.competition()
    renamed = _checkpoint(tmp_path / "renamed.pt", 1, particles=ParticleTable(
        [replace(p, name="80S") if p.name == "ribosome" else p for p in table]))
    with pytest.raises(CheckpointError, match=r"renamed\.pt.*classes"):
        average_checkpoints([a, renamed], tmp_path / "x.pt")
    # Same classes, other radii and identifiers (a fine-tune's table is its project's, the
    # shipped base's names none): averaged, until 2026-12-06 refused.
    project_table = _checkpoint(tmp_path / "project.pt", 1, particles=ParticleTable(
        [replace(p, radius_A=50.0, identifier="") for p in table]))
    average_checkpoints([project_table, a], tmp_path / "both.pt")
    with pytest.raises(ValueError, match="at least 2"):
        average_checkpoints([a], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="weights"):
        average_checkpoints([a, a], tmp_path / "x.pt", weights=[1, -1])
    assert not (tmp_path / "x.pt").exists(), "nothing half-written"
    assert main(["--checkpoint", str(a), str(tmp_path / "missing.pt"),
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_soup_reads_a_missing_setting_as_its_default(tmp_path):
    """A checkpoint written before a sparsify setting existed stores no key for it and
    means the default: it averages with one that stores the default, not with one that
    sets another value."""
    a = _checkpoint(tmp_path / "a.pt", 0)
    doc = torch.load(a, weights_only=True)
    old = dict(doc, config=dict(doc["config"], sparsify={
        k: v for k, v in doc["config"]["sparsify"].items() if k != "whiten_clip_sigma"}))
    torch.save(old, tmp_path / "old.pt")
    average_checkpoints([tmp_path / "old.pt", a], tmp_path / "soup.pt")
    other = dict(doc, config=dict(doc["config"], sparsify=dict(doc["config"]["sparsify"],
                                                               whiten_clip_sigma=12.0)))
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*config\.sparsify"):
        average_checkpoints([tmp_path / "old.pt", tmp_path / "other.pt"], tmp_path / "x.pt")


def test_blend_moves_a_fine_tune_part_way_back_to_its_start(tmp_path):
    start = _checkpoint(tmp_path / "start.pt", 0)
    tuned = _checkpoint(tmp_path / "tuned.pt", 1)
    w0, w1 = (load_checkpoint(p).model.state_dict() for p in (start, tuned))
    out = load_checkpoint(blend(tuned, start, tmp_path / "b.pt", 0.25))
    for k, v in out.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * w1[k] + 0.75 * w0[k], rtol=0, atol=1e-6)
    assert out.thresholds == load_checkpoint(tuned).thresholds, "the fine-tune's record"
    assert blend(tuned, start, tmp_path / "c.pt", 1.0) == tuned
    assert not (tmp_path / "c.pt").exists(), "share 1 is the fine-tune itself, not a copy"
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="--blend must lie in"):
            blend(tuned, start, tmp_path / "d.pt", bad)
