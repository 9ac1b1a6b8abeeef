"""From per-voxel network outputs to detections: voting, clustering (torch-cluster), NMS.

Everything here works in voxels of the sparse volume; sparse_det/inference.py converts the
centres to Å. Thresholds are chosen elsewhere (sparse_det/thresholds.py).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from sparse_det.vote_graph import class_grid_cells, radius_graph

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


def cluster_votes_by_class(votes_zyx, weights, classes, link_radii_vox
                           ) -> tuple[torch.Tensor, ...]:
    """Connected components of each class's radius graph of votes, every class in one pass
    of each graph operation (torch-cluster; plain torch where it has no kernel for the
    votes' device, sparse_det/vote_graph.py), on the votes' device: a GPU synchronises with
    the host a few times per tomogram instead of a few times per class.

    Votes pile up near centres, so they are first pooled into grid cells a quarter of their
    class's link radius wide (each class's own grid, as torch-cluster's grid_cluster would
    make it), and the graph links cell centroids: the same clusters from a few thousand
    points instead of tens of thousands. The centroids are measured in their class's link
    radius and the classes set apart by more than one, so one graph of radius 1 holds every
    class's edges and none between classes.

    votes_zyx [N,3], weights [N], classes [N] (0-based), link_radii_vox [K].
    Returns tensors on the votes' device: centres [M,3] (weighted means), masses [M] (summed
    weights), sizes [M] (votes), classes [M]."""
    votes = torch.as_tensor(votes_zyx).to(torch.float64)
    dev = votes.device
    w = torch.as_tensor(weights).to(dev, torch.float64)
    cls = torch.as_tensor(classes).to(dev, torch.long)
    radii = torch.as_tensor(link_radii_vox, dtype=torch.float64).to(dev)
    if len(votes) == 0:
        return (votes.new_zeros((0, 3)), w.new_zeros(0),
                cls.new_zeros(0), cls.new_zeros(0))
    cell = class_grid_cells(votes.float(), cls, (radii / CELLS_PER_LINK_RADIUS).float())
    _, cell = torch.unique(cell, return_inverse=True)
    n_cells = int(cell.max()) + 1
    _, cell_pos = _weighted_sums(cell, n_cells, w, votes)
    cell_cls = torch.zeros(n_cells, dtype=torch.long, device=dev).scatter_(0, cell, cls)
    unit = cell_pos / radii[cell_cls, None]
    gap = unit[:, 0].max() - unit[:, 0].min() + 2.0  # more than one radius between classes
    unit[:, 0] += cell_cls * gap
    edges = radius_graph(unit.float(), 1.0, MAX_NEIGHBOURS)
    comp = connected_components(edges, n_cells)[cell]
    n_comp = int(comp.max()) + 1
    mass, centres = _weighted_sums(comp, n_comp, w, votes)
    sizes = torch.bincount(comp, minlength=n_comp)
    comp_cls = torch.zeros(n_comp, dtype=torch.long, device=dev).scatter_(0, comp, cls)
    return centres, mass, sizes, comp_cls


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
    voxel, cls = torch.nonzero(probs[:, 1:] >= prob_floor, as_tuple=True)
    link = [cluster_radius_fraction * r for r in radii_vox]
    centres, mass, sizes, comp_cls = cluster_votes_by_class(
        votes_all[voxel], probs[voxel, cls + 1], cls, link)
    keep = sizes >= min_votes
    centres, mass, comp_cls = (t[keep].cpu().numpy() for t in (centres, mass, comp_cls))
    out = []
    for k, r in enumerate(radii_vox):
        c, s = centres[comp_cls == k], mass[comp_cls == k]
        kept = nms(c, s, nms_radius_fraction * r)
        out.append((c[kept], s[kept]))
    return out
