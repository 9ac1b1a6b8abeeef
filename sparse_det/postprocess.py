"""Voting, clustering (torch-cluster), scoring, NMS and F4-optimal per-class thresholds."""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from sparse_det.metric import BETA


def cluster_votes(votes_zyx: np.ndarray, weights: np.ndarray, link_radius_vox: float,
                  min_votes: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of the radius graph of votes (torch-cluster).

    Votes pile up near centres, so they are first pooled into grid cells a quarter of the link
    radius wide (torch-cluster's grid_cluster) and the graph links cell centroids: the same
    clusters from a few thousand points instead of tens of thousands.
    Returns (centres [M,3] weighted means, scores [M] summed weights, sizes [M] votes)."""
    from torch_cluster import grid_cluster, radius_graph

    n = len(votes_zyx)
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, int)
    votes = np.asarray(votes_zyx, np.float64)
    w = np.asarray(weights, np.float64)
    x = torch.from_numpy(np.ascontiguousarray(votes, dtype=np.float32))
    cell = grid_cluster(x, torch.full((3,), link_radius_vox / 4)).numpy()
    _, cell = np.unique(cell, return_inverse=True)
    n_cells = int(cell.max()) + 1
    cell_mass = np.bincount(cell, weights=w, minlength=n_cells)
    cell_pos = np.stack([np.bincount(cell, weights=w * votes[:, i], minlength=n_cells)
                         for i in range(3)], axis=1) / np.maximum(cell_mass, 1e-12)[:, None]
    edges = radius_graph(torch.from_numpy(cell_pos.astype(np.float32)),
                         r=float(link_radius_vox), loop=False, max_num_neighbors=64).numpy()
    graph = coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])),
                       shape=(n_cells, n_cells))
    n_comp, cell_comp = connected_components(graph, directed=False)
    comp = cell_comp[cell]
    mass = np.bincount(comp, weights=w, minlength=n_comp)
    sizes = np.bincount(comp, minlength=n_comp)
    centres = np.stack([np.bincount(comp, weights=w * votes[:, i], minlength=n_comp)
                        for i in range(3)], axis=1) / np.maximum(mass, 1e-12)[:, None]
    keep = sizes >= min_votes
    return centres[keep], mass[keep], sizes[keep]


def nms(centres: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Indices kept, best score first: each suppresses lower scores within `radius`."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    tree = cKDTree(centres)
    suppressed = np.zeros(len(centres), bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed[tree.query_ball_point(centres[i], radius)] = True
    return np.array(kept, dtype=int)


def detect(coords_zyx: np.ndarray, probs: np.ndarray, offsets: np.ndarray,
           radii_vox: list[float], *, prob_floor: float, cluster_radius_fraction: float,
           nms_radius_fraction: float, min_votes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Args:
        coords_zyx [N,3] voxels; probs [N, K+1] softmax; offsets [N,3] voxels;
        radii_vox [K] class radii in voxels (class k+1 ↔ radii_vox[k]).
    Returns per class k (0-based particle index) (centres_zyx_vox [M,3], scores [M]),
    unthresholded."""
    out = []
    votes_all = coords_zyx.astype(np.float32) + offsets
    for k, r in enumerate(radii_vox):
        p = probs[:, k + 1]
        sel = p >= prob_floor
        c, s, _ = cluster_votes(votes_all[sel], p[sel], cluster_radius_fraction * r, min_votes)
        keep = nms(c, s, nms_radius_fraction * r)
        out.append((c[keep], s[keep]))
    return out


def fbeta(tp: float, fp: float, fn: float, beta: float = BETA) -> float:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    d = beta**2 * p + r
    return (1 + beta**2) * p * r / d if d > 0 else 0.0


def pr_curve(per_run: list[tuple[np.ndarray, np.ndarray, np.ndarray]], hit_radius: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Counts at every distinct score threshold of one class over several runs (metric
    semantics: TP = distinct references hit; a candidate is kept when score >= threshold).

    Args: per_run: [(candidate centres [M,3], scores [M], reference centres [R,3])].
    Returns (thresholds descending, TP at each, candidates kept at each, references)."""
    cand_hits, scores, n_ref, offset = [], [], 0, 0
    for cand, sc, ref in per_run:
        if len(cand):
            hits = (cKDTree(ref).query_ball_point(cand, hit_radius) if len(ref)
                    else [[] for _ in cand])
            cand_hits += [[offset + j for j in h] for h in hits]
            scores.append(sc)
        offset += len(ref)
        n_ref += len(ref)
    if not cand_hits:
        return np.zeros(0), np.zeros(0, int), np.zeros(0, int), n_ref
    scores = np.concatenate(scores)
    order = np.argsort(-scores, kind="stable")
    seen: set[int] = set()
    tp = 0
    thr, tps, kept = [], [], []
    for rank, i in enumerate(order):
        new = [j for j in cand_hits[i] if j not in seen]
        seen.update(new)
        tp += len(new)
        if rank + 1 == len(order) or scores[order[rank + 1]] < scores[i]:  # last of a tie
            thr.append(float(scores[i]))
            tps.append(tp)
            kept.append(rank + 1)
    return np.array(thr), np.array(tps), np.array(kept), n_ref


def best_threshold(per_run: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   hit_radius: float) -> tuple[float, float]:
    """F-beta-optimal score threshold for one class over several runs (micro-averaged,
    metric semantics). Returns (threshold, F-beta at it); the highest threshold wins ties."""
    thr, tp, kept, n_ref = pr_curve(per_run, hit_radius)
    f = np.array([fbeta(t, k - t, n_ref - t) for t, k in zip(tp, kept, strict=True)])
    if not len(f) or f.max() <= 0:
        return float("inf"), 0.0
    i = int(np.argmax(f))
    return float(thr[i]), float(f[i])
