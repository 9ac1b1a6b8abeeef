"""The two graph operations of vote clustering: grid pooling, in plain torch for every class
at once, and the radius graph, from torch-cluster where its build has kernels for the votes'
device, in plain torch otherwise.

torch-cluster from PyPI is a source build; on a GPU machine without a CUDA toolkit at install
time (or with `FORCE_ONLY_CPU=1`) it has CPU kernels only and fails on CUDA tensors. The torch
version gives the same edges (tests/test_vote_graph.py), so the decoding never leaves the
device for want of a kernel.
"""

from __future__ import annotations

import itertools

import torch


def torch_cluster_has_kernels(device: torch.device) -> bool:
    """Whether torch-cluster is installed and runs on `device` (CPU always; CUDA when built
    so). Without it the torch versions serve every device (a machine that cannot build it)."""
    try:
        import torch_cluster
    except ImportError:
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and getattr(torch_cluster, "cuda_version", -1) != -1


def class_grid_cells(pos: torch.Tensor, classes: torch.Tensor, size: torch.Tensor
                     ) -> torch.Tensor:
    """Cell index per point [N] on its class's own grid: cubic cells of size[class] anchored
    at the class's lowest coordinates, in the float32 arithmetic of torch-cluster's
    grid_cluster, so each class gets the cells grid_cluster would give it alone
    (tests/test_vote_graph.py); no two classes share an index. Every class in one pass of
    plain torch ops on the points' device (grid_cluster takes one size per call).
    pos [N,3] float32, classes [N] long (0..K-1), size [K] float32."""
    n_cls = len(size)
    lowest = torch.full((n_cls, 3), torch.inf, device=pos.device).scatter_reduce(
        0, classes[:, None].expand(-1, 3), pos, reduce="amin")
    cell_zyx = ((pos - lowest[classes]) / size[classes, None]).long()
    dims = cell_zyx.max(0).values + 1
    return ((classes * dims[0] + cell_zyx[:, 0]) * dims[1] + cell_zyx[:, 1]) * dims[2] \
        + cell_zyx[:, 2]


def radius_graph_torch(pos: torch.Tensor, r: float) -> torch.Tensor:
    """Edges [2,E] (both directions, no loops) between points closer than r (strictly, as
    torch-cluster), found through a hash grid of cell r: only the 27 neighbouring cells are
    compared, so memory grows with the candidate pairs, not with the square of the points.
    All 27 neighbour cells are looked up at once: one host synchronisation, not 27."""
    n = len(pos)
    dev = pos.device
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    key = torch.floor(pos / r).long()
    key = key - key.min(0).values + 1  # a margin of one cell keeps every neighbour key >= 0
    dims = key.max(0).values + 2
    lin = (key[:, 0] * dims[1] + key[:, 1]) * dims[2] + key[:, 2]
    sorted_lin, order = torch.sort(lin)
    step = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), device=dev)
    offsets = (step[:, 0] * dims[1] + step[:, 1]) * dims[2] + step[:, 2]
    nb = (lin[:, None] + offsets[None, :]).reshape(-1)  # [n·27]
    lo = torch.searchsorted(sorted_lin, nb, right=False)
    count = torch.searchsorted(sorted_lin, nb, right=True) - lo
    total = int(count.sum())
    if total == 0:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    i = torch.repeat_interleave(torch.arange(n, device=dev).repeat_interleave(len(offsets)),
                                count, output_size=total)
    first = torch.cumsum(count, 0) - count
    rank = torch.arange(total, device=dev) - torch.repeat_interleave(first, count,
                                                                    output_size=total)
    j = order[torch.repeat_interleave(lo, count, output_size=total) + rank]
    d = pos[i] - pos[j]
    keep = ((d * d).sum(1) < r * r) & (i != j)
    return torch.stack([j[keep], i[keep]])


def radius_graph(pos: torch.Tensor, r: float, max_num_neighbors: int) -> torch.Tensor:
    """max_num_neighbors: torch-cluster's cap (the caller sizes it never to bind; the torch
    version has none)."""
    if torch_cluster_has_kernels(pos.device):
        from torch_cluster import radius_graph as tc_radius_graph

        return tc_radius_graph(pos, r=r, loop=False, max_num_neighbors=max_num_neighbors)
    return radius_graph_torch(pos, r)
