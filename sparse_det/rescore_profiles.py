"""What the rescorer reads around each candidate (sparse_det/rescore.py): the dense feature
channels' means (and the first two's spreads) over every shell out to R_MAX_VOX voxels,
and the network's per-voxel probabilities in a few shells; gathers in torch, chunked, on
the device the channels are on."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch

R_MAX_VOX = 15  # at the 20 Å working grid: twice the largest radius (150 Å), its context
SPREAD_CHANNELS = 2  # shell standard deviations of the first two

# The network's own per-voxel outputs around a candidate: its kept voxels within each shell
# (voxels, [lo, hi)), each class's mean probability there and how many of the shell's
# voxels were kept. What the vote masses summarise away: whether a cluster's voxels agree.
PROB_SHELLS_VOX = ((0.0, 2.0), (2.0, 4.0), (4.0, 7.0))

INTERLEAVE_FROM = 0.8  # candidates x shell voxels, as a share of the volume's voxels

# Candidates per gather of the profiles and shells. On the CPU 64 (x 15k voxels x 8 bytes
# = 8 MB a buffer; 256 cost 0.2 GB more at the peak and was slower); on a device 256,
# as timed on the H200, where each chunk is a handful of kernel launches.
GATHER_CHUNK_CPU, GATHER_CHUNK_DEVICE = 64, 256


def shell_offsets(r_max: int = R_MAX_VOX) -> tuple[np.ndarray, np.ndarray]:
    """(offsets_zyx [S,3], shell index [S]) of every voxel within r_max + 0.5 of a centre;
    shell = rounded distance."""
    r = np.arange(-r_max, r_max + 1)
    off = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    dist = np.sqrt((off ** 2).sum(1))
    inside = dist <= r_max + 0.5
    return off[inside], np.rint(dist[inside]).astype(np.int64)


def _flat(zyx: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Flat indices of in-volume voxels zyx [..., 3] of a volume of `shape`."""
    return (zyx[..., 0] * shape[1] + zyx[..., 1]) * shape[2] + zyx[..., 2]


def _neighbour_index(centres: torch.Tensor, off: torch.Tensor, shape: tuple[int, ...]
                     ) -> torch.Tensor:
    """[m, S] flat indices of voxels centres [m,3] + offsets [S,3] (zyx), each axis clamped
    to the volume: beyond an edge, the edge voxel. Axis by axis: 5x cheaper on a CPU than
    clamping the [m, S, 3] positions."""
    flat = None
    for a in range(3):
        x = (centres[:, a, None] + off[:, a]).clamp_(0, shape[a] - 1)
        flat = x if flat is None else flat * shape[a] + x
    return flat


def _shells_sorted(r_max: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """(offsets_zyx [S,3] ordered by shell, bounds [r_max + 2]): shell r's offsets are
    rows bounds[r]:bounds[r + 1], so its sum over a gather is one slice's."""
    off, shell = shell_offsets(r_max)
    order = np.argsort(shell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(shell, minlength=r_max + 1))])
    return torch.from_numpy(off[order]).to(device), bounds.tolist()


def _interleaved(vols: list[torch.Tensor], clip: float) -> torch.Tensor:
    """[voxels, C]: the channels side by side, clipped at ±clip, so that one gather reads
    every channel of a voxel: 2.6x faster on a CPU than a gather per channel, for the price
    of writing the volume once (radial_profiles decides when that pays)."""
    out = torch.empty((vols[0].numel(), len(vols)), dtype=vols[0].dtype,
                      device=vols[0].device)
    for i, v in enumerate(vols):
        torch.clamp(v.reshape(-1), -clip, clip, out=out[:, i])
    return out


def radial_profiles(channels: list, centres_zyx_vox: np.ndarray, r_max: int = R_MAX_VOX,
                    spreads: int = SPREAD_CHANNELS, clip: float = np.inf) -> np.ndarray:
    """[M, (C + spreads) * (r_max + 1)]: each channel's mean over every shell around each
    centre (rounded to a voxel), then the first `spreads` channels' standard deviations,
    of the voxel values clipped at ±`clip`. Voxels beyond the volume's edge repeat the edge
    voxel. `channels`: numpy arrays or tensors on one device, where the gathers run (a
    GPU's stay there); they are read, never changed (the sparsifier may select from them
    again: sparsify.reselect)."""
    vols = [torch.as_tensor(c) for c in channels]
    dev, shape = vols[0].device, tuple(vols[0].shape)
    off, bounds = _shells_sorted(r_max, dev)
    # Interleaving writes the volume once (~0.08 s for a full tomogram on 2 cores) and
    # halves every gather after it: it pays where the candidates' balls hold more voxels
    # than ~0.8 of the volume (~500 candidates on a full tomogram; measured crossing).
    values = (_interleaved(vols, clip) if len(centres_zyx_vox) * len(off)
              > INTERLEAVE_FROM * vols[0].numel() else None)
    # A centre beyond the volume reads as if at its edge.
    centres = torch.from_numpy(np.clip(np.rint(np.asarray(centres_zyx_vox, np.float64))
                                       .reshape(-1, 3).astype(np.int64), 0,
                                       np.array(shape) - 1)).to(dev)
    # Most centres are r_max from every edge: their indices are the centre's plus a fixed
    # step per offset, one addition instead of a clamp per axis.
    near_edge = ((centres < r_max)
                 | (centres >= torch.tensor(shape, device=dev) - r_max)).any(1)
    centre_flat, off_flat = _flat(centres, shape), _flat(off, shape)
    n_ch = len(vols)
    out = torch.zeros((len(centres), n_ch + spreads, r_max + 1), dtype=torch.float64,
                      device=dev)
    counts = torch.tensor(np.diff(bounds), dtype=torch.float64, device=dev)
    shells = list(pairwise(bounds))
    chunk = GATHER_CHUNK_CPU if dev.type == "cpu" else GATHER_CHUNK_DEVICE
    for s in range(0, len(centres), chunk):
        m = min(chunk, len(centres) - s)
        flat = centre_flat[s:s + m, None] + off_flat
        edge = near_edge[s:s + m].nonzero()[:, 0]
        if len(edge):
            flat[edge] = _neighbour_index(centres[s:s + m][edge], off, shape)
        flat = flat.reshape(-1)
        v = (values.index_select(0, flat) if values is not None else
             torch.stack([fv.reshape(-1).index_select(0, flat) for fv in vols], 1)
             .clamp_(-clip, clip))
        # In float64 (the spread is E[v²] - E[v]², which cancels); each shell's sum is one
        # slice's, a sixteenth of the work of a product with a shell-membership matrix.
        v = v.view(m, -1, n_ch).double()
        sq = v[..., :spreads] * v[..., :spreads]
        mean = torch.stack([v[:, a:b].sum(1) for a, b in shells], 2) / counts
        mean_sq = torch.stack([sq[:, a:b].sum(1) for a, b in shells], 2) / counts
        out[s:s + m, :n_ch] = mean
        out[s:s + m, n_ch:] = (mean_sq - mean[:, :spreads] ** 2).clamp(min=0).sqrt()
    return out.reshape(len(centres), -1).float().cpu().numpy()


def probability_shells(coords_zyx, probs, centres_zyx_vox: np.ndarray,
                       shells: tuple = PROB_SHELLS_VOX) -> np.ndarray:
    """[M, len(shells) * (C + 1)] for per-voxel probabilities `probs` [N, C] at kept voxels
    `coords_zyx`: per shell around each centre, the kept voxels' mean probability of each
    column (0 where none is kept) and their count over the shell's volume. `probs` numpy or
    a tensor, on the device where the gathers run."""
    probs = torch.as_tensor(probs)
    dev = probs.device
    probs = probs.double()
    coords = torch.as_tensor(np.asarray(coords_zyx, np.int64).reshape(-1, 3), device=dev)
    centres = torch.as_tensor(np.asarray(centres_zyx_vox, np.float64).reshape(-1, 3),
                              device=dev)
    n_cols, n_sh = probs.shape[1], len(shells)
    lo = torch.tensor([a for a, _ in shells], dtype=torch.float64, device=dev)
    hi = torch.tensor([b for _, b in shells], dtype=torch.float64, device=dev)
    out = torch.zeros((len(centres), n_sh, n_cols + 1), dtype=torch.float64, device=dev)
    if len(centres) and len(coords):
        # Which kept voxel sits where: an index volume over the kept voxels' box, read at
        # every voxel of the cube that holds the largest shell around a centre.
        shape = tuple((coords.max(0).values + 1).tolist())
        where = torch.full((int(np.prod(shape)),), -1, dtype=torch.int32, device=dev)
        where[_flat(coords, shape)] = torch.arange(len(coords), dtype=torch.int32,
                                                   device=dev)
        r = int(np.ceil(shells[-1][1] + 0.5 * np.sqrt(3)))
        off, _ = shell_offsets(r)
        off_t = torch.from_numpy(off).to(dev)
        top = torch.tensor(shape, device=dev)
        shell_volume = 4.0 / 3.0 * np.pi * (hi ** 3 - lo ** 3)
        chunk = GATHER_CHUNK_CPU if dev.type == "cpu" else GATHER_CHUNK_DEVICE
        for s in range(0, len(centres), chunk):
            c = centres[s:s + chunk]
            pos = torch.round(c).long()[:, None, :] + off_t  # [m, S, 3]
            inside = ((pos >= 0) & (pos < top)).all(-1)
            j = torch.where(inside, where[_flat(pos, shape).where(inside, 0)], -1)
            # Only the kept voxels' pairs from here on: a few percent of the cube's.
            i_pair, s_pair = (j >= 0).nonzero(as_tuple=True)
            j_pair = j[i_pair, s_pair].long()
            d = (pos[i_pair, s_pair].double() - c[i_pair]).square().sum(-1).sqrt()
            shell = torch.full_like(i_pair, -1)
            for k in range(n_sh):
                shell[(d >= lo[k]) & (d < hi[k])] = k
            used = shell >= 0
            cell = i_pair[used] * n_sh + shell[used]
            m = len(c)
            count = torch.zeros(m * n_sh, dtype=torch.float64, device=dev).index_add_(
                0, cell, torch.ones(len(cell), dtype=torch.float64, device=dev))
            total = torch.zeros((m * n_sh, n_cols), dtype=torch.float64,
                                device=dev).index_add_(0, cell, probs[j_pair[used]])
            out[s:s + m, :, :n_cols] = (total / count.clamp(min=1)[:, None]).view(m, n_sh, -1)
            out[s:s + m, :, n_cols] = count.view(m, n_sh) / shell_volume
    return out.reshape(len(centres), -1).float().cpu().numpy()
