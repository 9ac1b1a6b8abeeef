"""The plain-torch grid pooling (every class at once) and radius graph (used where
torch-cluster has no kernel for the device) against torch-cluster itself, class by class, and
the clusters and detections they lead to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_cluster import grid_cluster
from torch_cluster import radius_graph as tc_radius_graph

from sparse_det import vote_graph
from sparse_det.postprocess import CELLS_PER_LINK_RADIUS, cluster_votes_by_class, detect
from sparse_det.vote_graph import class_grid_cells, radius_graph_torch


def _blobs(seed: int, n_centres: int = 12, per: int = 300) -> torch.Tensor:
    """Votes piled around a few centres, with a thin background: what the network casts."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 80, (n_centres, 3))
    pts = centres[rng.integers(0, n_centres, n_centres * per)] + rng.normal(0, 1.5,
                                                                           (n_centres * per, 3))
    pts = np.vstack([pts, rng.uniform(-5, 85, (200, 3))])
    return torch.from_numpy(pts.astype(np.float32))


def _edge_set(edges: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edges.T.tolist()))


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labellings group the points alike (labels themselves may differ)."""
    pairs = torch.unique(torch.stack([a, b], 1), dim=0)
    return len(pairs) == len(torch.unique(a)) == len(torch.unique(b))


def _classes_of_blobs(seed: int, n_cls: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    pos = _blobs(seed)
    cls = torch.from_numpy(np.random.default_rng(seed + 10).integers(0, n_cls, len(pos)))
    return pos, cls


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_grid_cells_equal_torch_cluster_class_by_class(seed):
    pos, cls = _classes_of_blobs(seed)
    size = torch.tensor([0.5, 1.0, 2.75, 0.8])
    cells = class_grid_cells(pos, cls, size)
    for k in range(len(size)):
        mine = cls == k
        want = grid_cluster(pos[mine], size[k].expand(3))
        assert _same_partition(cells[mine], want), f"class {k}"
        assert len(torch.unique(want)) > 20
        # no cell holds points of two classes
        assert not torch.isin(cells[mine], cells[~mine]).any(), f"class {k} shares a cell"


def _reference_clusters(votes, w, cls, link):
    """The per-class decoding as it was: torch-cluster's grid_cluster and radius_graph on
    each class alone, scipy's connected components. Sorted (class, mass, centre) rows."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = []
    for k, r in enumerate(link):
        v, wk = votes[cls == k].double(), w[cls == k].double()
        _, cell = torch.unique(grid_cluster(v.float(), torch.full((3,), r / CELLS_PER_LINK_RADIUS)),
                               return_inverse=True)
        n = int(cell.max()) + 1
        cmass = torch.zeros(n, dtype=torch.float64).index_add_(0, cell, wk)
        cpos = torch.zeros(n, 3, dtype=torch.float64).index_add_(0, cell, wk[:, None] * v)
        cpos /= cmass[:, None]
        e = tc_radius_graph(cpos.float(), r=r, loop=False, max_num_neighbors=n).numpy()
        _, lab = connected_components(coo_matrix((np.ones(e.shape[1]), e), shape=(n, n)))
        comp = torch.from_numpy(lab)[cell]
        for c in torch.unique(comp):
            m = comp == c
            rows.append((k, float(wk[m].sum()), *(wk[m, None] * v[m]).sum(0) / wk[m].sum()))
    return np.array(sorted(rows))


@pytest.mark.parametrize("torch_ops", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_clusters_of_all_classes_at_once_equal_class_by_class(seed, torch_ops, monkeypatch):
    """One pass over every class (votes measured in their class's link radius, classes set
    apart) gives each class the clusters torch-cluster gives it alone."""
    if torch_ops:
        monkeypatch.setattr(vote_graph, "torch_cluster_has_kernels", lambda device: False)
    votes, cls = _classes_of_blobs(seed)
    w = torch.from_numpy(np.random.default_rng(seed).uniform(0.3, 1.0, len(votes)))
    link = [1.5, 3.0, 6.0, 2.2]
    centres, mass, sizes, comp_cls = cluster_votes_by_class(votes, w, cls, link)
    got = np.array(sorted(zip(comp_cls.tolist(), mass.tolist(), *centres.T.tolist(),
                              strict=True)))
    want = _reference_clusters(votes, w, cls, link)
    assert len(want) > 40 and len(set(want[:, 0])) == 4
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert int(sizes.sum()) == len(votes)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("r", [1.0, 3.0, 6.5])
def test_radius_graph_equals_torch_cluster(seed, r):
    pos = _blobs(seed, n_centres=6, per=150)
    want = _edge_set(tc_radius_graph(pos, r=r, loop=False, max_num_neighbors=len(pos)))
    got = radius_graph_torch(pos, r)
    assert got.dtype == torch.long
    assert _edge_set(got) == want
    assert len(want) > len(pos)  # the blobs are dense: a real graph, not a few stray edges


def test_radius_graph_small_and_degenerate_inputs():
    assert radius_graph_torch(torch.zeros((0, 3)), 1.0).shape == (2, 0)
    assert radius_graph_torch(torch.zeros((1, 3)), 1.0).shape == (2, 0)
    same = torch.zeros((3, 3))
    assert _edge_set(radius_graph_torch(same, 1.0)) == {(a, b) for a in range(3)
                                                        for b in range(3) if a != b}
    # strictly closer than r, as torch-cluster: a pair exactly r apart is not linked
    pair = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    assert radius_graph_torch(pair, 2.0).shape == (2, 0)
    assert _edge_set(radius_graph_torch(pair, 2.01)) == {(0, 1), (1, 0)}


def test_detections_with_the_torch_ops_equal_torch_cluster(monkeypatch):
    """The whole decoding (pooling, graph, components, NMS) with the torch fallback forced on
    the CPU gives the same detections as with torch-cluster's kernels."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(10, 70, (15, 3))
    coords = np.round(centres[rng.integers(0, 15, 6000)] + rng.normal(0, 3, (6000, 3)))
    offsets = rng.normal(0, 1, (6000, 3))
    probs = rng.dirichlet(np.ones(3) * 0.4, 6000).astype(np.float32)
    kw = dict(prob_floor=0.3, cluster_radius_fraction=0.5, nms_radius_fraction=0.5,
              min_votes=2)
    want = detect(coords.astype(np.int32), probs, offsets.astype(np.float32), [3.0, 6.0], **kw)
    monkeypatch.setattr(vote_graph, "torch_cluster_has_kernels", lambda device: False)
    got = detect(coords.astype(np.int32), probs, offsets.astype(np.float32), [3.0, 6.0], **kw)
    assert sum(len(c) for c, _ in want) >= 10
    for (cw, sw), (cg, sg) in zip(want, got, strict=True):
        np.testing.assert_allclose(cg, cw, atol=1e-9)
        np.testing.assert_allclose(sg, sw, rtol=1e-12)


def test_dispatch_uses_torch_cluster_on_the_cpu():
    assert vote_graph.torch_cluster_has_kernels(torch.device("cpu"))
