"""Voting, clustering, NMS (postprocess) and threshold search (thresholds) with known answers."""

import numpy as np
import pytest
import torch

from sparse_det.postprocess import cluster_votes_by_class, detect, nms
from sparse_det.targets import make_targets
from sparse_det.thresholds import best_threshold, pr_curve


def cluster_votes(votes_zyx, weights, link_radius_vox: float):
    """The clusters of one class's votes: (centres [M,3], masses [M], sizes [M]), numpy."""
    votes = torch.as_tensor(votes_zyx)
    centres, mass, sizes, _ = cluster_votes_by_class(
        votes, weights, torch.zeros(len(votes), dtype=torch.long), [link_radius_vox])
    return centres.numpy(), mass.numpy(), sizes.numpy()


def test_perfect_classes_and_offsets_reproduce_centres_exactly():
    rng = np.random.default_rng(0)
    radii_vox = [3.0, 7.5]
    centers = np.array([[10.25, 20.5, 30.75], [30.0, 40.125, 12.5], [12.0, 60.0, 60.0]])
    classes = np.array([1, 2, 2])
    # Kept voxels: a random half of each particle's sphere, plus random background.
    grid = np.argwhere(np.ones((48, 80, 80), bool)).astype(np.int32)
    keep = rng.random(len(grid)) < 0.05
    coords = np.ascontiguousarray(grid[keep])
    labels, offsets = make_targets(coords, centers, classes,
                                   np.array([radii_vox[k - 1] for k in classes]))
    probs = np.zeros((len(coords), 3), np.float32)
    probs[np.arange(len(coords)), labels] = 1.0
    dets = detect(coords, probs, offsets, radii_vox, prob_floor=0.5,
                  cluster_radius_fraction=0.3, nms_radius_fraction=0.5, min_votes=1)
    assert len(dets[0][0]) == 1 and len(dets[1][0]) == 2, f"detections {dets}"
    np.testing.assert_allclose(dets[0][0], centers[:1], atol=1e-4,
                               err_msg="class-1 centre not reproduced")
    got = dets[1][0][np.argsort(dets[1][0][:, 0])]
    np.testing.assert_allclose(got, centers[1:][np.argsort(centers[1:, 0])], atol=1e-4,
                               err_msg="class-2 centres not reproduced")
    n_votes = [(labels == k).sum() for k in (1, 2)]
    assert dets[0][1][0] == pytest.approx(n_votes[0]), "score is the votes' probability mass"


def test_cluster_votes_separates_and_weights():
    votes = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 10], [0, 0, 11.0]])
    c, s, n = cluster_votes(votes, np.array([1.0, 3.0, 1.0, 1.0]), link_radius_vox=2.0)
    order = np.argsort(c[:, 2])
    np.testing.assert_allclose(c[order, 2], [0.75, 10.5], err_msg="weighted means")
    np.testing.assert_allclose(s[order], [4.0, 2.0], err_msg="masses")
    assert n.tolist() == [2, 2]


def test_nms_keeps_best_and_far():
    c = np.array([[0, 0, 0], [0, 0, 2.0], [0, 0, 10.0]])
    kept = nms(c, np.array([1.0, 5.0, 0.5]), radius=3.0)
    assert kept.tolist() == [1, 2], kept


def test_best_threshold_hand_case():
    ref = np.array([[0, 0, 0], [100, 0, 0], [200, 0, 0.0]])
    cand = np.array([[1, 0, 0], [101, 0, 0], [500, 0, 0], [201, 0, 0.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.2])
    thr, f = best_threshold([(cand, scores, ref)], hit_radius=10.0)
    # All four: TP 3, FP 1 → P .75, R 1 → F4 = 17·.75/(16·.75+1) = 0.9808 beats 2/3 recall.
    assert thr == pytest.approx(0.2) and f == pytest.approx(17 * 0.75 / 13), (thr, f)
    thr, f = best_threshold([(cand[:2], scores[:2], ref), (np.zeros((0, 3)), np.zeros(0), ref)],
                            hit_radius=10.0)
    assert f == pytest.approx(17 * 1 * (1 / 3) / (16 + 1 / 3)), "micro over two runs"


def test_pr_curve_hand_computed():
    refs = np.array([[0.0, 0, 0], [100.0, 0, 0], [200.0, 0, 0]])
    cand = np.array([[1.0, 0, 0], [50.0, 0, 0], [2.0, 0, 0], [101.0, 0, 0]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])  # hit A, miss, A again (no new TP), hit B
    thr, tp, kept, n_ref = pr_curve([(cand, scores, refs)], hit_radius=10.0)
    np.testing.assert_array_equal(thr, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_array_equal(tp, [1, 1, 1, 2])
    np.testing.assert_array_equal(kept, [1, 2, 3, 4])
    assert n_ref == 3
    # Tied scores count as one threshold.
    thr, tp, kept, _ = pr_curve([(cand, np.array([0.5, 0.5, 0.4, 0.4]), refs)], 10.0)
    np.testing.assert_array_equal(thr, [0.5, 0.4])
    np.testing.assert_array_equal(kept, [2, 4])
    np.testing.assert_array_equal(tp, [1, 2])


def test_dense_votes_are_never_split_by_a_neighbour_cap():
    """Two dense half-balls of votes (one vote per grid cell) touch at a single pair X–Y,
    0.99 link radii apart; each of X and Y has 100+ neighbours on its own side. A radius
    graph capped at 64 neighbours (the old setting) drops X–Y both ways and splits the
    cluster in two; the geometric cap keeps every edge: one cluster, as with no cap."""
    r = 4.0
    g = (np.argwhere(np.ones((9, 9, 5))) - [4, 4, 4]).astype(float)  # unit cells, z <= 0
    behind = g[(np.linalg.norm(g, axis=1) <= r) & (g[:, 2] < 0)]
    x, y = np.zeros(3), np.array([0.0, 0.0, 0.99 * r])
    votes = np.concatenate([behind, y - behind, [x], [y]])
    assert len(behind) > 64
    centres, mass, sizes = cluster_votes(votes, np.ones(len(votes)), link_radius_vox=r)
    assert len(centres) == 1 and sizes.tolist() == [len(votes)], sizes
    assert mass[0] == pytest.approx(len(votes))


def test_first_hit_labels_follow_the_metric():
    from sparse_det.calibration import first_hit_labels

    ref = np.array([[0.0, 0, 0], [100.0, 0, 0]])
    cand = np.array([[1.0, 0, 0], [2.0, 0, 0], [50.0, 0, 0], [101.0, 0, 0]])
    labels = first_hit_labels(cand, np.array([0.5, 0.9, 0.8, 0.1]), ref, 10.0)
    # The 0.9 candidate finds A first, so the 0.5 one is a duplicate (a FP by the metric).
    assert labels.tolist() == [0, 1, 0, 1], labels


def test_calibration_maps_masses_to_probabilities_without_changing_picks():
    from data_tools.particles import ParticleTable
    from sparse_det.calibrated_tuning import calibrate_and_tune
    from sparse_det.calibration import apply_calibration, fit_calibration
    from sparse_det.structures import Detections
    from sparse_det.thresholds import tune_thresholds

    particles = ParticleTable.competition()
    rng = np.random.default_rng(0)
    dets, truths = [], []
    for run in range(3):
        ref = rng.uniform(0, 5000, (30, 3))
        far = rng.uniform(20000, 30000, (40, 3))  # false positives, nowhere near a particle
        cand = np.concatenate([ref + rng.normal(0, 5, ref.shape), far])
        # Found particles score high (vote mass ~ 50-500), false ones low (~ 1-60).
        mass = np.concatenate([rng.uniform(50, 500, 30), rng.uniform(1, 60, 40)])
        dets.append(Detections(f"r{run}", {"ribosome": (cand, mass)}))
        truths.append({"ribosome": ref})
    cal = fit_calibration(dets, truths, particles)
    a, _ = cal["ribosome"]
    assert a > 0, cal
    p = apply_calibration(dets[0], cal)["ribosome"][1]
    assert np.all((p > 0) & (p < 1)), p
    assert np.all(np.diff(p[np.argsort(dets[0]["ribosome"][1])]) >= 0), "not monotone"
    assert p[:30].mean() > 0.8 and p[30:].mean() < 0.3, (p[:30].mean(), p[30:].mean())
    raw = tune_thresholds(dets, truths, particles, 1.0)
    tuned, _ = calibrate_and_tune(dets, truths, particles)
    assert tuned.per_class["ribosome"] == raw.per_class["ribosome"], "calibration changed picks"
    assert 0 < tuned.thresholds["ribosome"] < 1, tuned.thresholds
    # A checkpoint without a calibration keeps its vote masses.
    np.testing.assert_array_equal(apply_calibration(dets[0], {})["ribosome"][1],
                                  dets[0]["ribosome"][1])
    # A class never found maps every score below 0.05.
    only_false = [Detections("r", {"ribosome": (dets[0]["ribosome"][0][30:],
                                                dets[0]["ribosome"][1][30:])})]
    cal0 = fit_calibration(only_false, [truths[0]], particles)
    assert apply_calibration(only_false[0], cal0)["ribosome"][1].max() < 0.05, cal0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_scipy(seed):
    """The torch components (which run on the votes' device) against scipy's, on random
    sparse graphs with chains long enough to need many propagation rounds."""
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    from sparse_det.postprocess import connected_components

    rng = np.random.default_rng(seed)
    n = 400
    perm = rng.permutation(n)
    chain = np.stack([perm[:150], perm[1:151]])  # one long path through shuffled nodes
    extra = rng.integers(0, n, (2, 120))
    edges = np.concatenate([chain, extra], axis=1)
    _, want = scipy_components(coo_matrix((np.ones(edges.shape[1]), tuple(edges)),
                                          shape=(n, n)), directed=False)
    got = connected_components(torch.from_numpy(edges), n).numpy()
    np.testing.assert_array_equal(got, want)
    assert connected_components(torch.zeros((2, 0), dtype=torch.long), 3).tolist() == [0, 1, 2]


def test_best_threshold_sits_midway_in_the_gap():
    """Two true particles at 0.9 and 0.8, a false one at 0.3: the best selection keeps the
    two; the threshold is halfway between 0.8 and 0.3, where the same two pass with the
    widest margin either side."""
    ref = np.array([[0, 0, 0], [100, 0, 0.0]])
    cand = np.array([[1, 0, 0], [101, 0, 0], [500, 0, 0.0]])
    thr, f = best_threshold([(cand, np.array([0.9, 0.8, 0.3]), ref)], hit_radius=10.0)
    assert thr == pytest.approx(0.55) and f == pytest.approx(1.0), (thr, f)


def test_per_run_scores_and_paired_difference_hand_case():
    """One apo-ferritin per run at the origin, a candidate 10 Å away (hit radius 30 Å):
    kept at threshold 0.5 in run A (score 0.9), dropped in run B (0.3). Classes with no
    reference and no candidate count F4 0, as in weighted_score: run A is 1/7 (apo's weight
    of 7), run B 0. A truth that leaves the other classes out does not annotate them: run A
    then scores 1 (F4 1 over apo-ferritin alone)."""
    from data_tools.particles import ParticleTable
    from sparse_det.structures import Detections
    from sparse_det.thresholds import paired_difference, per_run_scores

    particles = ParticleTable.competition()
    ref = {p.name: np.zeros((0, 3)) for p in particles} | {"apo-ferritin": np.zeros((1, 3))}
    far_fp = np.array([[500.0, 0, 0]])

    def det(run, score):
        return Detections(run, {"apo-ferritin": (np.vstack([[10.0, 0, 0], far_fp]),
                                                 np.array([score, 0.2]))})

    thr = {p.name: 0.5 for p in particles}
    scores = per_run_scores([det("A", 0.9), det("B", 0.3)], [ref, ref], particles, thr)
    assert scores == pytest.approx([1 / 7, 0.0]), scores
    apo_only = {"apo-ferritin": ref["apo-ferritin"]}
    assert per_run_scores([det("A", 0.9), det("B", 0.3)], [apo_only, apo_only], particles,
                          thr) == pytest.approx([1.0, 0.0])
    nothing_scored = per_run_scores([det("A", 0.9)], [{"beta-amylase": ref["apo-ferritin"]}],
                                    particles, thr)
    assert np.isnan(nothing_scored[0])
    assert paired_difference([0.5, np.nan, 0.7], [0.4, 0.1, 0.5]) == pytest.approx(
        (0.15, 0.05))  # the run without a score is left out of the pairs
    mean, se = paired_difference(scores, [0.0, 0.0])
    assert (mean, se) == pytest.approx((1 / 14, 1 / 14)), (mean, se)
    with pytest.raises(ValueError, match="unpaired"):
        paired_difference([0.1], [0.1, 0.2])
