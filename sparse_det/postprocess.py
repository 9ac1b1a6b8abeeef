"""From per-voxel network outputs to detections: voting, clustering (torch-cluster), NMS.

Everything here works in voxels of the sparse volume; sparse_det/inference.py converts the
centres to Å. Thresholds are chosen elsewhere (sparse_det/thresholds.py).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

# Votes are pooled into grid cells this many times narrower than the link radius: fine enough
# that pooling never merges what the radius graph would keep apart.
CELLS_PER_LINK_RADIUS = 4
# A cell's centroid lies inside its cell, so every cell whose centroid can be within the link
# radius of another's lies in a cube of 2·(cells per radius + 1) + 1 cells a side. Capping the
# radius graph's neighbours there never drops an edge (a smaller cap, torch-cluster's default
# 32 or the 64 used before, can split a dense cluster in two: tests/test_postprocess.py).
MAX_NEIGHBOURS = (2 * (CELLS_PER_LINK_RADIUS + 1) + 1) ** 3


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
    cell = grid_cluster(x, torch.full((3,), link_radius_vox / CELLS_PER_LINK_RADIUS)).numpy()
    _, cell = np.unique(cell, return_inverse=True)
    n_cells = int(cell.max()) + 1
    cell_mass = np.bincount(cell, weights=w, minlength=n_cells)
    cell_pos = np.stack([np.bincount(cell, weights=w * votes[:, i], minlength=n_cells)
                         for i in range(3)], axis=1) / np.maximum(cell_mass, 1e-12)[:, None]
    edges = radius_graph(torch.from_numpy(cell_pos.astype(np.float32)),
                         r=float(link_radius_vox), loop=False,
                         max_num_neighbors=MAX_NEIGHBOURS).numpy()
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
