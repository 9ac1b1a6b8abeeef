"""The candidate rescorer (sparse_det/rescore.py, fitted by rescore_fit.py): its radial
profiles on volumes with known answers, its labels on a hand-made case, and the real path —
fitted by its command line on one simulated run, carried in a checkpoint, used by Picker and
refused when incompatible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_tools.particles import DataError
from sparse_det import rescore_profiles
from sparse_det.checkpoint import (
    DEFAULT_CHECKPOINT,
    RESCORER,
    CheckpointError,
    checkpoint_settings,
    load_checkpoint,
)
from sparse_det.rescore import RescoreNet, n_features
from sparse_det.rescore_examples import MEDIAN_AFTER_NOISE, NOISE_ONLY, labels_for
from sparse_det.rescore_fit import main
from sparse_det.rescore_profiles import (
    PROB_SHELLS_VOX,
    R_MAX_VOX,
    probability_shells,
    radial_profiles,
)

N_SHELLS = R_MAX_VOX + 1


def ball(shape, centre, radius, value=1.0):
    zz, yy, xx = np.indices(shape)
    d = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    return np.where(d <= radius, value, 0.0).astype(np.float32)


def test_profiles_of_a_ball_are_its_radius():
    """A ball of radius 5.5 voxels: the shell means are its value out to shell 5 and 0 from
    shell 6 on (shell r holds distances r ± 0.5), with no spread inside or outside; a
    constant channel reads as itself everywhere, at the volume's edge too."""
    shape = (40, 44, 48)
    vol, flat = ball(shape, (20, 22, 24), 5.5, 2.0), np.full(shape, 3.0, np.float32)
    prof = radial_profiles([vol, flat], np.array([[20.0, 22.0, 24.0], [0.0, 1.0, 47.0]]),
                           spreads=2).reshape(2, 4, N_SHELLS)
    np.testing.assert_allclose(prof[0, 0, :6], 2.0)
    np.testing.assert_allclose(prof[0, 0, 6:], 0.0)
    np.testing.assert_allclose(prof[0, 2, :6], 0.0, atol=1e-6)  # no spread within a shell
    np.testing.assert_allclose(prof[:, 1], 3.0, rtol=1e-6)
    np.testing.assert_allclose(prof[:, 3], 0.0, atol=1e-3)
    assert prof[1, 0].max() == 0.0  # the corner is far from the ball


def _profiles_by_loop(vol, centre, r_max, clip):
    """Shell means and spreads of one centre, one offset at a time: the definition."""
    shape = np.array(vol.shape)
    c = np.clip(np.rint(centre).astype(int), 0, shape - 1)
    values = [[] for _ in range(r_max + 1)]
    for dz in range(-r_max, r_max + 1):
        for dy in range(-r_max, r_max + 1):
            for dx in range(-r_max, r_max + 1):
                d = np.sqrt(dz * dz + dy * dy + dx * dx)
                if d <= r_max + 0.5:
                    z, y, x = np.clip(c + np.array([dz, dy, dx]), 0, shape - 1)
                    values[int(np.rint(d))].append(np.clip(float(vol[z, y, x]), -clip, clip))
    return (np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values]))


@pytest.mark.parametrize("interleave_from", [0.0, np.inf])
def test_profiles_equal_a_loop_inside_and_at_the_edges(monkeypatch, interleave_from):
    """Centres far from every edge (indices by one addition) and centres near or beyond an
    edge (clamped per axis), in one call and across gather chunks: each profile is the loop's,
    clipped values included, whether the channels are gathered interleaved or one by one
    (the two give the same bits)."""
    monkeypatch.setattr(rescore_profiles, "INTERLEAVE_FROM", interleave_from)
    rng = np.random.default_rng(5)
    shape, r_max = (30, 34, 38), 6
    vol = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    inside = rng.uniform(r_max, np.array(shape) - r_max - 1, size=(70, 3))
    edges = rng.uniform(-3, np.array(shape) + 2, size=(70, 3))
    centres = np.concatenate([inside, edges])[rng.permutation(140)]
    prof = radial_profiles([vol], centres, r_max=r_max, spreads=1, clip=4.0)
    prof = prof.reshape(len(centres), 2, r_max + 1)
    for i in range(0, len(centres), 7):
        mean, spread = _profiles_by_loop(vol, centres[i], r_max, 4.0)
        np.testing.assert_allclose(prof[i, 0], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(prof[i, 1], spread, rtol=1e-4, atol=1e-5)
    other = np.inf if interleave_from == 0.0 else 0.0
    monkeypatch.setattr(rescore_profiles, "INTERLEAVE_FROM", other)
    again = radial_profiles([vol], centres, r_max=r_max, spreads=1, clip=4.0)
    np.testing.assert_array_equal(again.reshape(prof.shape), prof)


def test_profiles_do_not_see_orientation():
    """An elongated, off-centre object and its axis-permuted, mirrored copy give the same
    profiles about corresponding centres: the features cannot learn orientations."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 0.2, (36, 36, 36)).astype(np.float32)
    vol[14:22, 16:20, 10:28] += 1.5
    turned = np.ascontiguousarray(vol.transpose(2, 0, 1)[::-1])
    a = radial_profiles([vol], np.array([[18.0, 18.0, 18.0]]), spreads=1)
    b = radial_profiles([turned], np.array([[35 - 18.0, 18.0, 18.0]]), spreads=1)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_probability_shells_by_hand():
    """Kept voxels at distances 0, 1 (shell 0-2), 3 (2-4), 5 and 6 (4-7) and 7 (none) of
    a centre: each shell's mean of each column and its kept count over its volume; a
    centre with no kept voxel nearby reads zeros."""
    coords = np.array([[10, 10, 10], [10, 10, 11], [10, 13, 10], [15, 10, 10],
                       [10, 10, 4], [17, 10, 10]])
    assert np.allclose(np.sqrt(((coords - 10) ** 2).sum(1)), [0, 1, 3, 5, 6, 7])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.5, 0.5], [0.1, 0.9],
                      [0.0, 1.0]])
    out = probability_shells(coords, probs, np.array([[10.0, 10.0, 10.0], [40.0, 40, 40]]))
    assert out.shape == (2, len(PROB_SHELLS_VOX) * 3)
    got = out[0].reshape(len(PROB_SHELLS_VOX), 3)
    vol = [4 / 3 * np.pi * (b ** 3 - a ** 3) for a, b in PROB_SHELLS_VOX]
    np.testing.assert_allclose(got[0], [0.4, 0.6, 2 / vol[0]], rtol=1e-6)
    np.testing.assert_allclose(got[1], [1.0, 0.0, 1 / vol[1]], rtol=1e-6)
    np.testing.assert_allclose(got[2], [0.3, 0.7, 2 / vol[2]], rtol=1e-6)
    assert not out[1].any()


def test_profiles_beyond_the_edge_read_the_edge():
    """A centre outside the volume reads as the nearest voxel on its edge; numpy volumes
    and tensors give the same profiles."""
    vol = np.random.default_rng(3).normal(0, 1, (20, 24, 28)).astype(np.float32)
    outside = radial_profiles([vol], np.array([[-4.0, 30.0, 13.2]]), r_max=5, spreads=1)
    edge = radial_profiles([vol], np.array([[0.0, 23.0, 13.0]]), r_max=5, spreads=1)
    np.testing.assert_array_equal(outside, edge)
    as_tensor = radial_profiles([torch.from_numpy(vol)], np.array([[0.0, 23.0, 13.0]]),
                                r_max=5, spreads=1)
    np.testing.assert_array_equal(as_tensor, edge)


def test_probability_shells_equal_every_pair_measured():
    """Random kept voxels and centres (some off the grid, near and beyond its edges): each
    shell's mean and count as measured pair by pair."""
    rng = np.random.default_rng(4)
    coords = np.unique(rng.integers(0, 30, (900, 3)), axis=0)
    probs = rng.dirichlet(np.ones(3), len(coords))
    centres = np.concatenate([rng.uniform(-3, 33, (40, 3)), [[0.0, 0.0, 0.0], [29, 29, 29]]])
    got = probability_shells(coords, probs, centres).reshape(len(centres), -1, 4)
    d = np.linalg.norm(centres[:, None] - coords[None], axis=-1)
    for k, (lo, hi) in enumerate(PROB_SHELLS_VOX):
        inside = (d >= lo) & (d < hi)
        count = inside.sum(1)
        mean = inside @ probs / np.maximum(count, 1)[:, None]
        np.testing.assert_allclose(got[:, k, :3], mean, atol=1e-6)
        np.testing.assert_allclose(got[:, k, 3], count / (4 / 3 * np.pi * (hi ** 3 - lo ** 3)),
                                   rtol=1e-6)
    assert got[:, :, 3].max() > 0.05  # the shells held voxels
    tensor = probability_shells(coords, torch.from_numpy(probs), centres)
    np.testing.assert_array_equal(tensor, got.reshape(len(centres), -1))


def test_labels_by_the_nearest_pick_in_radii(small_project):
    """Hit radius = 0.5 radius (apo-ferritin 60 Å → 30 Å, ribosome 150 Å → 75 Å); a point
    within two hit radii takes the class it is nearer to in radii."""
    particles = small_project.particles
    truth = {"apo-ferritin": np.array([[100.0, 100.0, 100.0]]),
             "ribosome": np.array([[100.0, 100.0, 160.0]])}
    pts = np.array([[100.0, 100.0, 125.0],   # 25 Å = 0.83 apo hit radii, 35 Å = 0.47 ribo
                    [100.0, 100.0, 110.0],   # 0.33 apo, 0.67 ribo
                    [100.0, 100.0, 69.0],    # 31 Å from apo, 91 Å from ribo: neither
                    [400.0, 400.0, 400.0]])
    apo, ribo = particles.names.index("apo-ferritin") + 1, particles.names.index("ribosome") + 1
    assert labels_for(pts, truth, particles).tolist() == [ribo, apo, 0, 0]


def test_a_noise_copy_adds_noise_and_changes_nothing_else():
    """--noise-copies' draws: deterministic for a seed, every parameter but the noise the
    identity; on a volume, the copy is the standardised volume (rescaled by the new robust
    sigma, nothing blurred or re-weighted) plus noise of the draw's size."""
    from data_tools.appearance import randomise_appearance, robust_sigma
    from sparse_det.data import appearance_ranges

    ranges = appearance_ranges(NOISE_ONLY)
    draws = [ranges.draw(np.random.default_rng([0, i])) for i in range(20)]
    assert draws[3] == ranges.draw(np.random.default_rng([0, 3])) and draws[3] != draws[4]
    assert all(d["band_gain"] == [1.0] * 4 and d["blur_vox"] == 0.0 and d["gamma"] == 1.0
               for d in draws)
    assert all(0.5 <= d["noise_rel"] <= 1.5 for d in draws)
    assert 0 < sum(d["flip"] for d in draws) < 20

    rng = np.random.default_rng(1)
    vol = rng.standard_normal((24, 48, 48)).astype(np.float32) + ball((24, 48, 48),
                                                                      (12, 24, 24), 5, -3.0)
    params = dict(draws[0], flip=False, noise_blur_vox=0.0)
    med, sigma = robust_sigma(vol)
    z = (vol - med) / sigma
    out = randomise_appearance(vol, 20.0, params)
    # out = (z + noise) / (its robust sigma): the volume scaled by a, plus noise that is
    # noise_rel of the volume's own sigma before the scaling
    a = float((out * z).sum() / (z * z).sum())
    rel = params["noise_rel"]
    assert a == pytest.approx(1 / np.sqrt(1 + rel**2), rel=0.05)
    assert (out - a * z).std() / a == pytest.approx(rel, rel=0.05)


def test_a_median_copy_is_the_noise_copy_median_filtered():
    """--median-copies' draws: NOISE_ONLY's parameters with a footprint always drawn; on a
    volume, the copy is closer to the clean particle than its twin (the same draw without
    the filter)."""
    from data_tools.appearance import MEDIAN_FOOTPRINTS, randomise_appearance
    from sparse_det.data import appearance_ranges

    ranges = appearance_ranges(MEDIAN_AFTER_NOISE)
    draws = [ranges.draw(np.random.default_rng([0, 2000, i])) for i in range(20)]
    assert {d["median"] for d in draws} == set(MEDIAN_FOOTPRINTS)
    assert all(d["band_gain"] == [1.0] * 4 and d["gamma"] == 1.0 for d in draws)

    # a dark ball in weak noise, then the draw's noise (1.5x) with and without the cube
    clean = ball((24, 48, 48), (12, 24, 24), 5, -3.0).astype(np.float32)
    vol = clean + 0.3 * np.random.default_rng(1).standard_normal(clean.shape, np.float32)
    params = dict(draws[0], flip=False, noise_blur_vox=0.0, noise_rel=1.5, median="cube")
    filtered = randomise_appearance(vol, 20.0, params)
    noisy = randomise_appearance(vol, 20.0, dict(params, median="none"))

    def corr(a):
        return float(np.corrcoef(a.ravel(), clean.ravel())[0, 1])

    assert corr(filtered) > corr(noisy) + 0.1 and corr(noisy) > 0.2


def test_learnt_copies_draw_the_noise_then_the_network_and_need_one(tmp_path, capsys):
    """--learnt-copies' draws: NOISE_ONLY's parameters, the network always named and no
    median; without --learnt-denoiser, or with one that is not a denoiser, the command
    refuses before reading anything."""
    from sparse_det.data import appearance_ranges
    from sparse_det.rescore_examples import learnt_after_noise

    path = tmp_path / "g.pt"
    path.write_bytes(b"")  # only its existence is checked when the ranges are made
    ranges = appearance_ranges(learnt_after_noise(str(path)))
    draws = [ranges.draw(np.random.default_rng([0, 3000, i])) for i in range(10)]
    assert all(d["learnt_denoiser"] == str(path) and d["median"] == "none" for d in draws)
    assert all(d["band_gain"] == [1.0] * 4 and d["gamma"] == 1.0 for d in draws)
    assert all(0.5 <= d["noise_rel"] <= 1.5 for d in draws)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(tmp_path),
              "--learnt-copies", "1", "--out", str(tmp_path / "x.pt")])
    # A denoiser that is missing or no denoiser is named before any run is read.
    for bad in (tmp_path / "missing.pt", path):
        with pytest.raises(SystemExit):
            main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(tmp_path),
                  "--learnt-copies", "1", "--learnt-denoiser", str(bad),
                  "--out", str(tmp_path / "x.pt")])
        assert str(bad) in capsys.readouterr().err


def test_learnt_share_picks_runs_by_name_alone(tmp_path):
    """--learnt-share: about that share of many runs get learnt copies, the shares nest (a
    larger share only adds runs, whose smaller-share examples stay valid), 0 and 1 are
    exact, and a share outside 0-1 is refused."""
    from sparse_det.rescore_examples import learnt_run

    runs = [f"TS_x_{i:04d}" for i in range(2000)]
    third = [r for r in runs if learnt_run(r, 1 / 3)]
    assert 0.30 < len(third) / len(runs) < 0.37
    assert set(third) <= {r for r in runs if learnt_run(r, 0.5)}
    assert all(learnt_run(r, 1.0) for r in runs) and not any(learnt_run(r, 0.0) for r in runs)
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(tmp_path),
              "--learnt-copies", "1", "--learnt-denoiser", "g.pt", "--learnt-share", "1.5",
              "--out", str(tmp_path / "x.pt")])


@pytest.fixture(scope="module")
def rescored(small_project, tmp_path_factory):
    """The default checkpoint with a rescorer fitted by the command line on run 0, one
    appearance-randomised copy of it, one with added noise, one median-filtered and one
    through a (small, briefly trained) general Noise2Noise denoiser."""
    from data_tools.n2n import N2NConfig, save_general, train_general_n2n

    folder = tmp_path_factory.mktemp("rescore")
    out, denoiser = folder / "rescored.pt", folder / "general.pt"
    halves = np.random.default_rng(0).standard_normal((2, 20, 40, 40)).astype(np.float32)
    small = N2NConfig(steps=3, patch_vox=16, batch=2, channels=4)
    save_general(train_general_n2n([tuple(halves)], small), denoiser, small, ["noise"])
    run0 = small_project.runs()[0]
    assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(small_project.path),
                 "--runs", run0, "--epochs", "60", "--appearance-variants", "1",
                 "--noise-copies", "1", "--median-copies", "1", "--learnt-copies", "1",
                 "--learnt-denoiser", str(denoiser), "--out", str(out)]) == 0
    extra = torch.load(out, weights_only=True)["extra"]
    assert extra["rescorer_runs"] == [f"{small_project.path.name}/{run0}"]
    assert extra["rescorer_appearance_variants"] == 1 and extra["rescorer_noise_copies"] == 1
    assert extra["rescorer_median_copies"] == 1 and extra["rescorer_learnt_copies"] == 1
    assert extra["rescorer_learnt_denoiser"] == str(denoiser)
    assert extra["rescorer_learnt_share"] == 1.0
    assert extra["rescorer_moved_picks"] is False and extra[RESCORER]["members"] == 5
    assert extra[RESCORER]["prob_shells_vox"] == [list(s) for s in PROB_SHELLS_VOX]
    return out


def test_rescorer_travels_in_the_checkpoint_and_picks_an_unseen_run(rescored, small_project):
    """Fitted on run 0, the rescorer's scores on run 1 (never seen) rank its particles:
    at thresholds tuned on run 1 the weighted F4 is high (measured 0.95; the same with an
    untrained rescorer 0.66, every candidate in every class), every score is a
    probability, and the checkpoint says its thresholds are stale until `tune`."""
    from sparse_det.inference import Picker
    from sparse_det.thresholds import per_run_scores, tune_thresholds

    assert checkpoint_settings(rescored).thresholds_stale
    picker = Picker.load(rescored, "cpu")
    assert isinstance(picker.ckpt.rescorer, RescoreNet)
    run1 = small_project.runs()[1]
    dets = picker.detect_run(small_project, run1, calibrated=False)
    scores = np.concatenate([s for _, s in dets.per_class.values()])
    assert len(scores) and scores.min() >= 0.0 and scores.max() <= 1.0
    truth = small_project.read_picks(run1)
    tuning = tune_thresholds([dets], [truth], picker.particles, 0.5)
    f4 = per_run_scores([dets], [truth], picker.particles, tuning.thresholds)[0]
    assert f4 > 0.85, f4
    # The same picker without its rescorer gives the network's vote masses back.
    plain = picker.detect_run(small_project, run1, calibrated=False, rescored=False)
    assert max(s.max() for _, s in plain.per_class.values() if len(s)) > 1.0
    # Its calibration is the rescorer's: applying it to vote masses is refused.
    with pytest.raises(ValueError, match="candidate rescorer's"):
        picker.detect_run(small_project, run1, rescored=False)


def test_an_incompatible_rescorer_is_refused_by_name(rescored, tmp_path):
    doc = torch.load(rescored, weights_only=True)
    doc["extra"][RESCORER]["r_max_vox"] = R_MAX_VOX + 3
    bad = tmp_path / "bad_rescorer.pt"
    torch.save(doc, bad)
    with pytest.raises(CheckpointError, match="bad_rescorer.pt.*rescorer reads"):
        load_checkpoint(bad)


def test_from_state_checks_the_feature_count():
    """A rescorer without network-output shells (the first one shipped: its state has no
    such entry) loads with the profile-and-score features only; one with them, with 8 per
    shell for 6 classes; a count or shells this code does not make are refused."""
    first = RescoreNet(n_features(6), 6)
    old = first.to_state()
    del old["prob_shells_vox"], old["members"]  # as the first rescorer stored itself
    old["weights"] = {k.replace("members.0.", "mlp."): v for k, v in old["weights"].items()}
    loaded = RescoreNet.from_state(old, "x")
    assert loaded.prob_shells == () and len(loaded.members) == 1
    x = np.random.default_rng(0).normal(size=(5, n_features(6))).astype(np.float32)
    np.testing.assert_array_equal(loaded.probabilities(x), first.eval().probabilities(x))
    assert n_features(6) == 108
    shells = len(PROB_SHELLS_VOX)
    two = RescoreNet(n_features(6, prob_shells=shells), 6, prob_shells=PROB_SHELLS_VOX,
                     members=2).eval()
    state = two.to_state()
    assert n_features(6, prob_shells=shells) == 108 + 8 * shells
    again = RescoreNet.from_state(state, "x")
    assert again.prob_shells == PROB_SHELLS_VOX and len(again.members) == 2
    x = np.random.default_rng(1).normal(size=(5, n_features(6, prob_shells=shells)))
    np.testing.assert_array_equal(again.probabilities(x), two.probabilities(x))
    state["n_in"] = n_features(6) + 1
    with pytest.raises(DataError, match="x: its rescorer reads"):
        RescoreNet.from_state(state, "x")
    state["prob_shells_vox"] = [[0.0, 3.0]]
    with pytest.raises(DataError, match="x: its rescorer reads the network's outputs"):
        RescoreNet.from_state(state, "x")


def test_members_average_their_probabilities():
    """Three members fitted from seeds 0, 1, 2 on a separable toy set: the ensemble's
    probabilities are the mean of its members' softmaxes, member 0 is the one-member fit of
    seed 0, and every member learns the rule (x0 > 0 → class 1)."""
    from sparse_det.rescore_fit import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    net = fit(x, y, 1, epochs=20, seed=0, prob_shells=(), members=3)
    one = fit(x, y, 1, epochs=20, seed=0, prob_shells=())
    xt = torch.as_tensor(x)
    with torch.no_grad():
        each = [torch.softmax(net(xt, m), 1).numpy() for m in range(3)]
        np.testing.assert_allclose(each[0], torch.softmax(one(xt), 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(net.probabilities(x), np.mean(each, 0), atol=1e-6)
    assert not np.allclose(each[0], each[1])
    for p in each:
        assert ((p[:, 1] > 0.5) == y.astype(bool)).mean() > 0.95


def test_a_rescorer_that_reads_outputs_needs_them(small_project):
    from sparse_det.rescore import rescore
    from sparse_det.structures import Detections

    net = RescoreNet(n_features(6, prob_shells=3), 6, prob_shells=PROB_SHELLS_VOX)
    with pytest.raises(ValueError, match="pass `outputs`"):
        rescore(Detections("r", {}), net, [], 20.0, 0.0, small_project.particles)


def test_the_network_alone_keeps_its_own_thresholds(rescored, tmp_path):
    """Picker.load(rescore=False) — infer --no-rescore, adapt, fitting a new rescorer — reads
    the network's vote masses at the thresholds and calibration tuned for them, kept in the
    checkpoint when the rescorer was fitted; a checkpoint without them says so."""
    from sparse_det.checkpoint import NETWORK_TUNED
    from sparse_det.inference import Picker

    base = Picker.load(DEFAULT_CHECKPOINT, "cpu", rescore=False)
    alone = Picker.load(rescored, "cpu", rescore=False)
    assert alone.ckpt.rescorer is None
    assert alone.thresholds == base.thresholds
    assert alone.ckpt.calibration == base.ckpt.calibration
    doc = torch.load(rescored, weights_only=True)
    del doc["extra"][NETWORK_TUNED]
    bare = tmp_path / "bare.pt"
    torch.save(doc, bare)
    assert Picker.load(bare, "cpu").ckpt.rescorer is not None
    with pytest.raises(CheckpointError, match="bare.pt: carries a rescorer but no thresholds"):
        Picker.load(bare, "cpu", rescore=False)


def test_the_network_alone_reads_at_its_own_test_time_setting(tmp_path):
    """The default's rescorer is tuned with the mirrors, its network alone one pass: without
    the rescorer the network reads one pass at its own thresholds, and with --tta flip at
    the set its network alone was tuned with for the mirrors — no warning either way —;
    the network-only checkpoint strip_rescorer writes says so in its config too."""
    import warnings

    from sparse_det.checkpoint import NETWORK_TUNED, read_checkpoint, strip_rescorer
    from sparse_det.inference import Picker

    doc = read_checkpoint(DEFAULT_CHECKPOINT)
    alone_set = doc["extra"][NETWORK_TUNED]
    assert doc["config"]["postprocess"]["tta"] == "flip" and alone_set.get("tta", "none") == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_pass = Picker.load(DEFAULT_CHECKPOINT, "cpu", rescore=False)
        mirrored = Picker.load(DEFAULT_CHECKPOINT, "cpu", rescore=False, tta="flip")
    assert one_pass.tta == "none" and one_pass.thresholds == alone_set["thresholds"]
    assert mirrored.tta == "flip"
    assert mirrored.thresholds == alone_set["tuned_for_tta"]["flip"]["thresholds"]
    stripped = tmp_path / "alone.pt"
    torch.save(strip_rescorer(doc, DEFAULT_CHECKPOINT), stripped)
    plain = Picker.load(stripped, "cpu")
    assert plain.ckpt.rescorer is None and plain.tta == "none"
    assert plain.thresholds == one_pass.thresholds


def test_a_soup_drops_the_rescorer(rescored, tmp_path):
    """Averaged weights are another network: the rescorer read the first member's scores."""
    from sparse_det.soup import main as soup_main

    out = tmp_path / "soup.pt"
    soup_main(["--checkpoint", str(rescored), str(rescored), "--out", str(out)])
    assert load_checkpoint(out).rescorer is None
    assert checkpoint_settings(out).thresholds_stale


def test_the_sparsifiers_dense_channels_are_the_ones_read_again(rescored, small_project,
                                                                 tmp_path):
    """The rescorer reuses the feature volumes the sparsifier computed (no second read and
    filtering); they are exactly what dense_channels computes, so the detections are equal
    to those from a sparse volume without them (a shard's). Mirroring drops them."""
    import dataclasses

    from sparse_det.inference import Picker, mirrored
    from sparse_det.rescore import PROFILE_CHANNELS, dense_channels, kept_channels

    picker = Picker.load(rescored, "cpu")
    run = small_project.runs()[1]
    sv = picker.sparse(small_project, run)
    assert sv.dense is not None and len(sv.dense) == PROFILE_CHANNELS
    assert mirrored(sv, (1, 2)).dense is None
    read, _, _ = dense_channels(small_project, run, picker.sparsify_config)
    for kept, again in zip(kept_channels(dataclasses.replace(sv)), read, strict=True):
        np.testing.assert_array_equal(kept, again)
    with_kept = picker.detect_run(small_project, run, sv=picker.sparse(small_project, run))
    without = picker.detect_run(small_project, run, sv=dataclasses.replace(sv, dense=None))
    for name in with_kept.per_class:
        np.testing.assert_array_equal(with_kept[name][1], without[name][1])
    assert Picker.load(rescored, "cpu", rescore=False).sparse(small_project, run).dense is None


def test_an_interrupted_fit_resumes_from_the_examples_it_kept(small_project, tmp_path,
                                                               monkeypatch):
    """Each run's examples are written as soon as they are extracted (OUT.examples/): a fit
    stopped on its second run extracts only that one when run again, and a refit reads
    both back and fits exactly the same rescorer; another recipe extracts again, and a run
    fitted without the runs before it reads its examples back."""
    import sparse_det.rescore_examples as rs

    real, calls = rs.run_examples, []

    def counted(picker, project, run, *args, **kw):
        calls.append(run)
        if run == stop_at:
            raise KeyboardInterrupt
        return real(picker, project, run, *args, **kw)

    monkeypatch.setattr(rs, "run_examples", counted)
    runs = small_project.runs()[:2]
    out = tmp_path / "r.pt"
    args = ["--checkpoint", str(DEFAULT_CHECKPOINT), "--project", str(small_project.path),
            "--runs", *runs, "--epochs", "2", "--members", "1", "--noise-copies", "0",
            "--out", str(out)]
    stop_at = runs[1]
    assert main(args) == 130  # Ctrl-C: one line, what is kept (test_cli), exit 130
    folder = tmp_path / "r.pt.examples"
    assert calls == runs and len(list(folder.glob("*.npz"))) == 1 and not out.exists()

    calls.clear()
    stop_at = None
    assert main(args) == 0
    assert calls == [runs[1]] and len(list(folder.glob("*.npz"))) == 2
    first = torch.load(out, weights_only=True)["extra"][RESCORER]["weights"]

    calls.clear()
    assert main([*args[:-1], str(tmp_path / "again.pt"), "--examples-dir", str(folder)]) == 0
    assert calls == []
    again = torch.load(tmp_path / "again.pt", weights_only=True)["extra"][RESCORER]["weights"]
    assert all(torch.equal(first[k], again[k]) for k in first)

    calls.clear()  # a file that cannot be read is extracted again, not a crash
    broken = sorted(folder.glob("*.npz"))[0]
    broken.write_bytes(b"not a zip")
    assert main([*args[:-1], str(tmp_path / "mended.pt"), "--examples-dir", str(folder)]) == 0
    assert len(calls) == 1 and np.load(broken)["copies"] == 1

    calls.clear()
    noisy = [*args[:-1], str(tmp_path / "noisy.pt"), "--examples-dir", str(folder),
             "--noise-copies", "1"]  # the last --noise-copies counts
    assert main(noisy) == 0
    assert calls == runs and len(list(folder.glob("*.npz"))) == 4

    calls.clear()  # a run's noisy copy is drawn by its name: fitted alone, it is read back
    alone = [*noisy, "--runs", runs[1], "--out", str(tmp_path / "alone.pt")]
    assert main(alone) == 0
    assert calls == [] and len(list(folder.glob("*.npz"))) == 4


def test_network_classes_keep_the_networks_scores_and_the_rest_the_rescorers(
        rescored, small_project, tmp_path):
    """A rescorer told to leave a class to the network (tune --rescore-network-classes)
    gives that class the network's own detections at their calibrated vote masses, and
    every other class exactly the rescorer's; the setting travels in the checkpoint, marks
    its thresholds stale, and a class the checkpoint lacks or a checkpoint without a
    rescorer is refused by name."""
    from sparse_det.calibration import apply_calibration
    from sparse_det.inference import Picker
    from sparse_det.tune_choice import write_network_classes

    out = tmp_path / "ribosome_alone.pt"
    write_network_classes(str(rescored), out, ["ribosome"])
    assert checkpoint_settings(out).thresholds_stale
    both, split = Picker.load(rescored, "cpu"), Picker.load(out, "cpu")
    assert split.ckpt.rescorer.network_classes == ("ribosome",)
    run1 = small_project.runs()[1]
    rescored_dets = both.detect_run(small_project, run1, calibrated=False)
    split_dets = split.detect_run(small_project, run1, calibrated=False)
    network = apply_calibration(
        both.detect_run(small_project, run1, calibrated=False, rescored=False),
        both.ckpt.rescorer.calibration)
    for name in both.particles.names:
        want = network[name] if name == "ribosome" else rescored_dets[name]
        np.testing.assert_array_equal(split_dets[name][0], want[0], err_msg=name)
        np.testing.assert_array_equal(split_dets[name][1], want[1], err_msg=name)
    assert len(split_dets["ribosome"][1]) != len(rescored_dets["ribosome"][1])
    with pytest.raises(CheckpointError, match=r"no class \['ribosomes'\]"):
        write_network_classes(str(rescored), tmp_path / "x.pt", ["ribosomes"])
    doc = torch.load(rescored, weights_only=True)
    del doc["extra"][RESCORER]
    plain = tmp_path / "plain.pt"
    torch.save(doc, plain)
    with pytest.raises(CheckpointError, match="plain.pt: has no candidate rescorer"):
        write_network_classes(str(plain), tmp_path / "y.pt", ["ribosome"])


def test_tune_writes_the_network_classes_it_tuned_with(rescored, small_project, tmp_path,
                                                       capsys):
    """`tune --rescore-network-classes` tunes the checkpoint with the class left to the
    network and writes that setting with its thresholds (no longer stale), leaving no
    scratch file behind; it warns that the rescorer was fitted on one of these runs."""
    from sparse_det.tune import main as tune_main

    out = tmp_path / "tuned" / "t.pt"
    out.parent.mkdir()
    assert tune_main(["--checkpoint", str(rescored), "--project", str(small_project.path),
                      "--out", str(out), "--fit-all-thresholds",
                      "--rescore-network-classes", "ribosome"]) == 0
    assert load_checkpoint(out).rescorer.network_classes == ("ribosome",)
    assert not checkpoint_settings(out).thresholds_stale
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.pt"]
    assert "was fitted on 1 of these runs" in capsys.readouterr().err


def test_a_rescorer_fitted_on_few_runs_and_tuned_on_them_is_flagged(rescored, small_project,
                                                                     tmp_path, caplog,
                                                                     capsys):
    """Fitted on 4 runs and tuned on them, a rescorer scored 0.812 there and 0.706 on new
    runs (below the shipped 0.725): `rescore` warns when it fits on few runs, and `tune`
    when it tunes on runs the rescorer was fitted on, naming them — not otherwise."""
    import logging

    import sparse_det.rescore_fit as rs
    from sparse_det.tune_choice import warn_rescorer_in_sample

    run0, run1 = small_project.runs()[:2]
    with caplog.at_level(logging.WARNING, logger=rs.__name__):
        assert main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--project",
                     str(small_project.path), "--runs", run1, "--epochs", "1", "--members",
                     "1", "--noise-copies", "0", "--out", str(tmp_path / "r.pt")]) == 0
    assert "a rescorer fitted on 1 run(s) follows their accidents" in caplog.text
    capsys.readouterr()
    warn_rescorer_in_sample([str(rescored)], [str(small_project.path)], None)
    err = capsys.readouterr().err
    assert f"was fitted on 1 of these runs ({small_project.path.name}/{run0})" in err
    warn_rescorer_in_sample([str(rescored), str(DEFAULT_CHECKPOINT)],
                            [str(small_project.path)], [run1])
    assert capsys.readouterr().err == ""
