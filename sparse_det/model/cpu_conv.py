"""Submanifold 3-D convolution on the CPU as gather + one matrix product per block of rows.

spconv's native CPU path loops over the kernel's 27 offsets, gathering the rows that have a
neighbour there, multiplying them by that offset's [C, O] slice and scatter-adding the result:
on a 2-core host the gathers and scatters alone were 54 % of a forward pass, and the small
products run far below the BLAS's speed. Here each level builds one neighbour table, [N, 27]
row numbers with N (a zero row) where a neighbour is missing, and every block of rows is
gathered into [rows, 27 * C] and multiplied by the whole kernel at once, which keeps the block
in cache and gives the BLAS a product it is fast at. Same sums as spconv to float rounding
(tests/test_model.py), so checkpoints need nothing new. Its backward is the same kind of
product (see _SubmConv), so CPU training runs it too.
"""

from __future__ import annotations

import torch

# Rows gathered per product: [1024, 27 * C] floats stay in a core's cache for C <= 32, the
# widths that carry the most voxels; measured best of 512-16k on a 2-core host.
BLOCK_ROWS = 1024
# A dense index volume beyond this many cells (4 bytes each) is replaced by a sorted search.
DENSE_LOOKUP_MAX_CELLS = 1 << 26
# Voxels whose neighbours are looked up at once while a table is built.
TABLE_ROWS = 1 << 16


def _kernel_offsets_zyx(kernel: int) -> torch.Tensor:
    """[kernel^3, 3] offsets in the order of spconv's weight [O, kz, ky, kx, C] flattened."""
    r = torch.arange(kernel) - kernel // 2
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def neighbour_table(coords_bzyx: torch.Tensor, spatial_shape_zyx, batch_size: int,
                    kernel: int = 3) -> torch.Tensor:
    """[N, kernel^3] int32: the row of each voxel's neighbour at each kernel offset, N where
    that voxel is not in the set. Coordinates are b, z, y, x on a grid of spatial_shape_zyx."""
    coords = coords_bzyx.long()
    n = coords.shape[0]
    table = torch.empty((n, kernel ** 3), dtype=torch.int32, device=coords.device)
    if n == 0:
        return table
    if n >= 2**31 - 1:
        raise ValueError(f"{n} voxels: more rows than an int32 neighbour table numbers")
    pad = kernel // 2
    padded = [int(s) + 2 * pad for s in spatial_shape_zyx]
    # Padding every axis makes out-of-grid neighbours land in empty cells instead of wrapping
    # onto the next row of the linear index.
    lin = ((coords[:, 0] * padded[0] + coords[:, 1] + pad) * padded[1]
           + coords[:, 2] + pad) * padded[2] + coords[:, 3] + pad
    off = _kernel_offsets_zyx(kernel).to(coords.device)
    step = (off[:, 0] * padded[1] + off[:, 1]) * padded[2] + off[:, 2]
    cells = batch_size * padded[0] * padded[1] * padded[2]
    if cells <= DENSE_LOOKUP_MAX_CELLS:
        volume = torch.full((cells,), n, dtype=torch.int32, device=coords.device)
        volume[lin] = torch.arange(n, dtype=torch.int32, device=coords.device)

        def rows_of(query: torch.Tensor) -> torch.Tensor:
            return volume[query]
    else:
        keys, order = torch.sort(lin)
        order = order.to(torch.int32)
        missing = torch.tensor(n, dtype=torch.int32, device=coords.device)

        def rows_of(query: torch.Tensor) -> torch.Tensor:
            pos = torch.searchsorted(keys, query).clamp_(max=n - 1)
            return torch.where(keys[pos] == query, order[pos], missing)
    # In blocks of rows: the [N, K] int64 queries of a whole level at once took 2.5x the
    # table's own memory on top of it (0.42 GB at 0.9 M voxels), at a network pass's peak.
    for start in range(0, n, TABLE_ROWS):
        table[start:start + TABLE_ROWS] = rows_of(lin[start:start + TABLE_ROWS, None] + step)
    return table


def _gathered_blocks(feats: torch.Tensor, neighbours: torch.Tensor):
    """Yields (first row, [rows, K * C] block): each block of rows' neighbours' features side
    by side; row N of the gather is zeros (a missing neighbour)."""
    c = feats.shape[1]
    k = neighbours.shape[1]
    padded = torch.cat([feats, feats.new_zeros(1, c)])
    for start in range(0, neighbours.shape[0], BLOCK_ROWS):
        rows = neighbours[start:start + BLOCK_ROWS]
        yield start, padded.index_select(0, rows.reshape(-1)).view(-1, k * c)


def _gather_gemm(feats: torch.Tensor, neighbours: torch.Tensor,
                 kernel_flat: torch.Tensor) -> torch.Tensor:
    """[N, O]: each gathered block [rows, K * C] @ kernel_flat [K * C, O]."""
    out = feats.new_empty(neighbours.shape[0], kernel_flat.shape[1])
    for start, block in _gathered_blocks(feats, neighbours):
        torch.mm(block, kernel_flat, out=out[start:start + len(block)])
    return out


class _SubmConv(torch.autograd.Function):
    """Gather + GEMM forward; its backward is two more of the same kind, no scatter: a
    submanifold table is symmetric (j is i's neighbour at offset k exactly when i is j's at
    the opposite offset K-1-k), so the features' gradient is the output gradient convolved
    with the kernel flipped and transposed."""

    @staticmethod
    def forward(ctx, feats, weight, neighbours):
        o, c = weight.shape[0], weight.shape[-1]
        k = neighbours.shape[1]
        ctx.save_for_backward(feats, weight, neighbours)
        return _gather_gemm(feats, neighbours, weight.reshape(o, k * c).t())

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight, neighbours = ctx.saved_tensors
        o, c = weight.shape[0], weight.shape[-1]
        k = neighbours.shape[1]
        grad_out = grad_out.contiguous()
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            flipped = weight.reshape(o, k, c).flip(1).permute(1, 0, 2)  # [K, O, C]
            grad_feats = _gather_gemm(grad_out, neighbours, flipped.reshape(k * o, c))
        if ctx.needs_input_grad[1]:
            grad_flat = feats.new_zeros(k * c, o)
            for start, block in _gathered_blocks(feats, neighbours):
                grad_flat.addmm_(block.t(), grad_out[start:start + len(block)])
            grad_weight = grad_flat.t().reshape(weight.shape)
        return grad_feats, grad_weight, None


def subm_conv(feats: torch.Tensor, neighbours: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None = None, product_dtype: torch.dtype | None = None
              ) -> torch.Tensor:
    """[N, O]: out[i] = sum over offsets k of weight[:, k, :] @ feats[neighbours[i, k]],
    differentiable in feats and weight.

    feats [N, C]; neighbours [N, K] from neighbour_table (N = no neighbour); weight as spconv
    stores it, [O, kz, ky, kx, C] with kz * ky * kx = K. `product_dtype` (torch.bfloat16):
    gather and multiply in that type, the result back in feats' (the BLAS accumulates in
    fp32; a CPU with bf16 instructions multiplies 1.2-3x faster, measured on AVX512-BF16)."""
    c = feats.shape[1]
    k = neighbours.shape[1]
    if weight[0, ..., 0].numel() != k or weight.shape[-1] != c:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit {c} features and "
                         f"{k} neighbours")
    dtype = product_dtype or feats.dtype  # .to() of the same type returns the tensor itself
    out = _SubmConv.apply(feats.to(dtype).contiguous(), weight.to(dtype), neighbours)
    out = out.to(feats.dtype)
    return out if bias is None else out + bias
