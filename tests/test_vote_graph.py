"""The plain-torch grid pooling and radius graph (used where torch-cluster has no kernel for the
device) against torch-cluster itself, and the detections they lead to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_cluster import grid_cluster
from torch_cluster import radius_graph as tc_radius_graph

from sparse_det import vote_graph
from sparse_det.postprocess import detect
from sparse_det.vote_graph import grid_cells_torch, radius_graph_torch


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


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [0.5, 1.0, 2.75])
def test_grid_cells_equal_torch_cluster(seed, size):
    pos = _blobs(seed)
    s = torch.full((3,), size)
    assert torch.equal(grid_cells_torch(pos, s), grid_cluster(pos, s))


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
