"""From per-voxel network outputs to detections: voting, clustering (torch-cluster), NMS.

Everything here works in voxels of the sparse volume; sparse_det/inference.py converts the
centres to Å. Thresholds are chosen elsewhere (sparse_det/thresholds.py).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from sparse_det.vote_graph import grid_cells, radius_graph

# Votes are pooled into grid cells this many times narrower than the link radius: fine enough
# that pooling never merges what the radius graph would keep apart.
CELLS_PER_LINK_RADIUS = 4
# A cell's centroid lies inside its cell, so every cell whose centroid can be within the link
# radius of another's lies in a cube of 2·(cells per radius + 1) + 1 cells a side. Capping the
# radius graph's neighbours there never drops an edge (a smaller cap, torch-cluster's default
# 32 or the 64 used before, can split a dense cluster in two: tests/test_postprocess.py).
MAX_NEIGHBOURS = (2 * (CELLS_PER_LINK_RADIUS + 1) + 1) ** 3


def connected_components(edges: torch.Tensor, n: int) -> torch.Tensor:
    """Component label per node (0..C-1, numbered by each component's smallest node, as
    scipy numbers them) of the undirected graph of `edges` [2,E], on the edges' device:
    minimum-label propagation with pointer jumping."""
    label = torch.arange(n, device=edges.device)
    if edges.numel():
        src, dst = edges[0], edges[1]
        while True:
            nxt = label.scatter_reduce(0, dst, label[src], reduce="amin")
            nxt = nxt.scatter_reduce(0, src, label[dst], reduce="amin")
            nxt = nxt[nxt]  # jump to the label's own label: halves the distance each round
            if torch.equal(nxt, label):
                break
            label = nxt
    return torch.unique(label, return_inverse=True)[1]


def _weighted_sums(index: torch.Tensor, n: int, w: torch.Tensor, x: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of w, w-weighted mean of x) per group; float64 so the order does not matter."""
    mass = torch.zeros(n, dtype=torch.float64, device=w.device).index_add_(0, index, w)
    pos = torch.zeros(n, 3, dtype=torch.float64, device=w.device).index_add_(
        0, index, w[:, None] * x)
    return mass, pos / mass.clamp_min(1e-12)[:, None]


def cluster_votes(votes_zyx, weights, link_radius_vox: float, min_votes: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of the radius graph of votes (torch-cluster), on the device the
    votes are on (numpy arrays: the CPU); plain torch where torch-cluster has no kernel for
    that device (sparse_det/vote_graph.py).

    Votes pile up near centres, so they are first pooled into grid cells a quarter of the link
    radius wide (torch-cluster's grid_cluster) and the graph links cell centroids: the same
    clusters from a few thousand points instead of tens of thousands.
    Returns (centres [M,3] weighted means, scores [M] summed weights, sizes [M] votes),
    as numpy arrays."""
    votes = torch.as_tensor(votes_zyx).to(torch.float64)
    w = torch.as_tensor(weights).to(votes.device, torch.float64)
    if len(votes) == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0, int)
    cell = grid_cells(votes.float(), torch.full((3,), link_radius_vox / CELLS_PER_LINK_RADIUS,
                                                device=votes.device))
    _, cell = torch.unique(cell, return_inverse=True)
    n_cells = int(cell.max()) + 1
    _, cell_pos = _weighted_sums(cell, n_cells, w, votes)
    edges = radius_graph(cell_pos.float(), float(link_radius_vox), MAX_NEIGHBOURS)
    comp = connected_components(edges, n_cells)[cell]
    n_comp = int(comp.max()) + 1
    mass, centres = _weighted_sums(comp, n_comp, w, votes)
    sizes = torch.bincount(comp, minlength=n_comp)
    keep = sizes >= min_votes
    return (centres[keep].cpu().numpy(), mass[keep].cpu().numpy(),
            sizes[keep].cpu().numpy())


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


def detect(coords_zyx, probs, offsets, radii_vox: list[float], *, prob_floor: float,
           cluster_radius_fraction: float, nms_radius_fraction: float, min_votes: int
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Args (numpy arrays, or tensors on the device that votes and clusters them):
        coords_zyx [N,3] voxels; probs [N, K+1] softmax; offsets [N,3] voxels;
        radii_vox [K] class radii in voxels (class k+1 ↔ radii_vox[k]).
    Returns per class k (0-based particle index) (centres_zyx_vox [M,3], scores [M]) as
    numpy arrays, unthresholded. Only the clusters leave the device: NMS runs on the CPU
    over a few hundred of them."""
    probs = torch.as_tensor(probs)
    coords = torch.as_tensor(coords_zyx).to(probs.device)
    votes_all = coords.float() + torch.as_tensor(offsets).to(probs.device).float()
    out = []
    for k, r in enumerate(radii_vox):
        p = probs[:, k + 1]
        sel = p >= prob_floor
        c, s, _ = cluster_votes(votes_all[sel], p[sel], cluster_radius_fraction * r, min_votes)
        keep = nms(c, s, nms_radius_fraction * r)
        out.append((c[keep], s[keep]))
    return out
