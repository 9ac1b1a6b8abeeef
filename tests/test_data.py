"""Training data and the voxel ↔ Å round trip, with known answers: flips keep offsets
pointing at centres; perfect network outputs at bin 2 give back the picks in Å; the
sparsifier ignores the tomogram's scale and offset; a resumed run restores its optimiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.particles import ParticleTable
from data_tools.sparsify import read_input, sparsify, sparsify_run
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.config import Config, PostprocessConfig, TrainConfig
from sparse_det.data import CropSampler, RunSample, truth_in_voxels
from sparse_det.inference import detections_from_outputs
from sparse_det.structures import SparseVolume
from sparse_det.targets import make_targets


def _ball_sample(centers_zyx: np.ndarray, radius: float, shape=(24, 40, 40),
                 n_feats: int = 5, seed: int = 0) -> RunSample:
    """A run whose kept voxels are the balls around `centers_zyx` (class 1) plus a few
    background voxels."""
    rng = np.random.default_rng(seed)
    grid = np.argwhere(np.ones(shape, bool))
    near = np.min(np.linalg.norm(grid[:, None] - centers_zyx[None], axis=2), axis=1) <= radius
    coords = grid[near | (rng.random(len(grid)) < 0.01)].astype(np.int32)
    sv = SparseVolume(coords, rng.normal(size=(len(coords), n_feats)), shape, 20.0, "syn")
    classes = np.ones(len(centers_zyx), np.int64)
    labels, offsets = make_targets(sv.coords_zyx, centers_zyx, classes,
                                   np.full(len(centers_zyx), radius))
    return RunSample(sv, labels, offsets, centers_zyx, classes, {})


@pytest.mark.parametrize("flip_xy,flip_z", [(True, True), (True, False), (False, False)])
def test_flips_keep_offsets_pointing_at_the_centre(flip_xy, flip_z):
    centre = np.array([[9.25, 14.5, 23.75]])
    sample = _ball_sample(centre, radius=4.0)
    shape = np.array(sample.sv.shape_zyx)
    train = TrainConfig(crop_zyx=tuple(int(s) for s in shape), flip_xy=flip_xy,
                        flip_z=flip_z, intensity_jitter=0.0)
    sampler = CropSampler([sample], train, seed=3)
    seen_flipped = np.zeros(3, bool)
    for _ in range(40):
        coords, _, labels, offsets, _ = sampler.sample()
        fg = labels > 0
        votes = coords[fg] + offsets[fg]
        assert fg.sum() == (sample.labels > 0).sum(), "a whole-volume crop lost voxels"
        np.testing.assert_allclose(votes, np.broadcast_to(votes[0], votes.shape), atol=1e-5,
                                   err_msg="after a flip the voxels vote for different points")
        mirrored = shape - 1 - centre[0]
        for ax in range(3):
            v = votes[0, ax]
            assert np.isclose(v, centre[0, ax]) or np.isclose(v, mirrored[ax]), (ax, v)
            seen_flipped[ax] |= np.isclose(v, mirrored[ax]) and not np.isclose(
                mirrored[ax], centre[0, ax])
    assert seen_flipped.tolist() == [flip_z, flip_xy, flip_xy], \
        f"flipped axes z,y,x {seen_flipped} with flip_xy={flip_xy} flip_z={flip_z}"


def test_perfect_outputs_at_bin_2_return_the_picks_in_angstrom(small_project):
    """Voxel → Å conversion at the working level (2× binned, origin half a full voxel in):
    one-hot classes and exact offsets must give every particle back within 0.1 voxel."""
    run = small_project.runs()[0]
    sv = sparsify_run(small_project, run, SparsifyConfig(bin_factor=2))
    assert sv.voxel_size_A > 19 and sv.origin_A > 0, (sv.voxel_size_A, sv.origin_A)
    particles = small_project.particles
    truth = small_project.read_picks(run)
    centers, classes, radii = truth_in_voxels(sv, truth, particles)
    labels, offsets = make_targets(sv.coords_zyx, centers, classes, radii)
    probs = np.zeros((len(sv), len(particles) + 1), np.float32)
    probs[np.arange(len(sv)), labels] = 1.0
    post = PostprocessConfig(prob_floor=0.5, min_votes=1)
    dets = detections_from_outputs(sv, probs, offsets, particles, post)
    votes = sv.coords_zyx + offsets
    checked = 0
    for name, pts in truth.items():
        found, _ = dets[name]
        mine = votes[labels == particles.class_index(name)]
        for ref in pts:
            c = xyz_A_to_zyx_vox(ref, sv.voxel_size_A, sv.origin_A)[0]
            if not np.any(np.linalg.norm(mine - c, axis=1) < 1e-3):
                continue  # no kept voxel votes for this particle
            err_vox = np.min(np.linalg.norm(found - ref, axis=1)) / sv.voxel_size_A
            assert err_vox < 0.1, f"{name} at {ref} Å found {err_vox:.3f} voxels away"
            checked += 1
    assert checked > 20, f"only {checked} particles checked"


def test_sparsifier_ignores_scale_and_offset(small_project):
    cfg = SparsifyConfig(bin_factor=2)
    run = small_project.runs()[0]
    tomo, _ = read_input(small_project, run, cfg)
    a = sparsify(tomo.data, tomo.voxel_size_A, cfg, run)
    scaled = tomo.data.astype(np.float64) * 1e4 + 123.0
    b = sparsify(scaled, tomo.voxel_size_A, cfg, run)
    np.testing.assert_array_equal(a.coords_zyx, b.coords_zyx,
                                  err_msg="scale/offset changed the kept voxels")
    np.testing.assert_allclose(a.feats, b.feats, atol=1e-5, rtol=0,
                               err_msg="scale/offset changed the features")


def test_resume_restores_optimizer_and_schedule(tmp_path):
    from sparse_det.checkpoint import read_checkpoint, save_checkpoint
    from sparse_det.train_state import build_state
    from sparse_det.training import train_step

    cfg = Config()
    cfg.model.channels, cfg.train.steps, cfg.train.crop_zyx = (8, 16), 40, (24, 40, 40)
    particles = ParticleTable.competition()
    sample = _ball_sample(np.array([[9.0, 14.0, 23.0], [15.0, 30.0, 8.0]]), radius=4.0)
    names = [f"f{i}" for i in range(5)]
    dev = torch.device("cpu")
    torch.manual_seed(0)
    state = build_state(cfg, names, particles, dev)
    sampler = CropSampler([sample], cfg.train, seed=0)
    for _ in range(7):
        train_step(state=state, sampler=sampler, cfg=cfg, device=dev, batch_size=1)
        state.step += 1
    val = {"thresholds": {}}
    save_checkpoint(tmp_path / "last.pt", **state.checkpoint_fields(cfg, val),
                    extra=state.resume_extra(val))
    torch.manual_seed(1)  # a different init: everything must come from the checkpoint
    fresh = build_state(cfg, names, particles, dev)
    fresh.restore(read_checkpoint(tmp_path / "last.pt"))
    assert fresh.step == 7 and fresh.sched.last_epoch == state.sched.last_epoch == 7
    assert fresh.sched.get_last_lr() == pytest.approx(state.sched.get_last_lr()), \
        "learning rate not restored"
    a, b = state.opt.state_dict(), fresh.opt.state_dict()
    assert a["param_groups"] == b["param_groups"], "param groups differ"
    for k, st in a["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(st[name], b["state"][k][name],
                                       msg=f"optimizer {name} of param {k} not restored")
    # The next step from both is the same step.
    s1, s2 = (CropSampler([sample], cfg.train, seed=5) for _ in range(2))
    train_step(state=state, sampler=s1, cfg=cfg, device=dev, batch_size=1)
    train_step(state=fresh, sampler=s2, cfg=cfg, device=dev, batch_size=1)
    for (k, v), w in zip(state.core.state_dict().items(), fresh.core.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(v, w, msg=f"{k} differs after one resumed step")


def test_stop_reason_budget_and_patience():
    from types import SimpleNamespace

    from sparse_det.training import stop_reason

    cfg = Config()
    state = SimpleNamespace(history=[{"val_score": s} for s in (0.5, 0.7, 0.6, 0.65)])
    assert stop_reason(cfg, state, 1e9) is None, "no budget and no patience: never stop"
    cfg.train.patience = 2
    assert stop_reason(cfg, state, 0.0) == "no better validation F4 in 2 epoch(s)"
    cfg.train.patience = 3
    assert stop_reason(cfg, state, 0.0) is None, "only 2 epochs since the best"
    cfg.train.time_budget_s = 10.0
    assert stop_reason(cfg, state, 11.0) == "time budget of 10 s spent"


def test_channel_group_dropout_zeroes_one_group_of_a_crop_never_both():
    sample = _ball_sample(np.array([[12.0, 20.0, 20.0]]), radius=4.0, n_feats=4)
    sample.sv.feature_names = ["norm", "smooth", "norm_white", "smooth_white"]
    sample.sv.feats += 5.0  # no channel is 0 by chance
    shape = tuple(int(s) for s in sample.sv.shape_zyx)
    seen = {"none": 0, "usual": 0, "white": 0}
    train = TrainConfig(crop_zyx=shape, intensity_jitter=0.0, channel_group_dropout=0.5)
    sampler = CropSampler([sample], train, seed=1)
    for _ in range(200):
        feats = sampler.sample()[1]
        zero = np.all(feats == 0.0, axis=0)
        assert zero.tolist() in ([False] * 4, [True, True, False, False],
                                 [False, False, True, True]), zero
        seen["white" if zero[2] else "usual" if zero[0] else "none"] += 1
    assert 70 < seen["none"] < 130 and seen["usual"] > 30 and seen["white"] > 30, seen
    # Without whitened channels there is nothing to drop, whatever the setting.
    sample.sv.feature_names = ["a", "b", "c", "d"]
    plain = CropSampler([sample], train, seed=1)
    assert all(np.all(plain.sample()[1] != 0.0) for _ in range(50))


def test_a_class_radius_fraction_widens_that_class_alone(small_project, tmp_path):
    """targets.class_radius_fraction, read through a real project's shard: the named class
    gains foreground voxels (each within 1.6 of its radii of its centre, voting for it), and
    every other class's labels stay as they were."""
    from sparse_det.config import ConfigError
    from sparse_det.data import load_run_sample

    run = small_project.runs()[0]
    cfg = SparsifyConfig(bin_factor=2)
    shards = tmp_path / "shards"
    plain = load_run_sample(small_project, shards, cfg, run, 1.0)
    wide = load_run_sample(small_project, shards, cfg, run, 1.0,
                           class_radius_fraction={"beta-galactosidase": 1.6})
    k = small_project.particles.class_index("beta-galactosidase")
    assert (plain.labels == k).sum() > 0
    grown = (wide.labels == k) & (plain.labels != k)
    assert grown.sum() > 0, "no voxel joined beta-galactosidase at 1.6 of its radius"
    others = (plain.labels != k) & (wide.labels != k)
    np.testing.assert_array_equal(wide.labels[others], plain.labels[others])
    assert ((plain.labels == k) <= (wide.labels == k)).all()
    radius_vox = small_project.particles["beta-galactosidase"].radius_A / plain.sv.voxel_size_A
    votes = wide.sv.coords_zyx[grown] + wide.offsets[grown]
    reach = np.linalg.norm(wide.offsets[grown], axis=1)
    was_background = plain.labels[grown] == 0
    assert was_background.any() and (reach[was_background] > radius_vox).all()
    assert (reach <= 1.6 * radius_vox + 1e-4).all()
    owners = wide.centers_zyx[wide.center_class == k]
    nearest = np.linalg.norm(votes[:, None] - owners[None], axis=2).min(axis=1)
    np.testing.assert_allclose(nearest, 0, atol=1e-4)
    with pytest.raises(ConfigError, match="names 'nope', which .*project does not have"):
        load_run_sample(small_project, shards, cfg, run, 1.0, class_radius_fraction={"nope": 2})
    for bad in ("1.3", 0, -1.0, True):
        with pytest.raises(ConfigError, match=f"ribosome: {bad!r} is not a share"):
            load_run_sample(small_project, shards, cfg, run, 1.0,
                            class_radius_fraction={"ribosome": bad})
