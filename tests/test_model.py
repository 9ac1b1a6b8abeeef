"""The spconv model on the CPU: forward/backward, index order, and a layer against dense conv."""

import numpy as np
import pytest
import torch

from sparse_det.model import build_model, load_deepened, widen_input
from sparse_det.model import spconv_compat as sc
from sparse_det.structures import SparseBatch


def random_sparse(n=3000, shape=(24, 40, 40), c=5, seed=0):
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(np.prod(shape)), n, replace=False)
    coords = np.stack(np.unravel_index(flat, shape), 1).astype(np.int32)
    return coords, rng.normal(size=(n, c)).astype(np.float32)


def test_forward_backward_cpu():
    torch.manual_seed(0)
    coords, feats = random_sparse()
    model = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16), blocks_per_level=1,
                        device="cpu")
    out = model(SparseBatch.from_numpy([coords, coords[:100]], [feats, feats[:100]],
                                       (24, 40, 40)))
    assert out["cls_logits"].shape == (3100, 7) and out["offsets"].shape == (3100, 3), out
    (out["cls_logits"].logsumexp(1).mean() + out["offsets"].abs().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "missing grads"
    assert sum(float(g.abs().sum()) for g in grads) > 0, "all gradients are zero"


@pytest.mark.parametrize("gather_gemm", [True, False], ids=["gather-gemm", "spconv"])
def test_a_grid_thinner_than_the_levels_reach(gather_gemm, monkeypatch):
    """Three stride-2 levels floor a 5-cell axis to none at the coarsest (the neighbour
    table read past its volume): the model widens such an axis, and the same voxels on a
    grid declared larger give the same outputs, so the cells added change nothing."""
    monkeypatch.setattr(sc, "CPU_GATHER_GEMM", gather_gemm)
    torch.manual_seed(0)
    coords, feats = random_sparse(n=300, shape=(5, 16, 16), c=5)
    model = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16, 16),
                        blocks_per_level=1, device="cpu").eval()
    with torch.no_grad():
        tiny = model(SparseBatch.from_numpy([coords], [feats], (5, 16, 16)))
        large = model(SparseBatch.from_numpy([coords], [feats], (16, 16, 16)))
    for key in ("cls_logits", "offsets"):
        torch.testing.assert_close(tiny[key], large[key], msg=key)


def test_fortran_ordered_indices_give_the_same_result():
    """spconv on the CPU computes garbage on non-C-contiguous indices: the batch must fix it."""
    torch.manual_seed(0)
    grid = np.zeros((20, 30, 30), bool)
    grid[np.random.default_rng(1).random(grid.shape) < 0.1] = True
    coords_f = np.argwhere(grid)  # F-ordered, as np.argwhere returns
    feats = np.random.default_rng(2).normal(size=(len(coords_f), 5)).astype(np.float32)
    coords_c = np.ascontiguousarray(coords_f)
    model = build_model(in_channels=5, num_classes=6, channels=(8, 16), blocks_per_level=1,
                        device="cpu").eval()
    with torch.no_grad():
        a = model(SparseBatch.from_numpy([coords_f.astype(np.int32, order="F")], [feats],
                                         grid.shape))["cls_logits"]
        b = model(SparseBatch.from_numpy([coords_c], [feats], grid.shape))["cls_logits"]
    torch.testing.assert_close(a, b, msg="F-ordered indices changed the output")


@pytest.mark.parametrize("gather_gemm", [True, False], ids=["gather-gemm", "spconv"])
def test_submanifold_conv_matches_dense_conv(gather_gemm, monkeypatch):
    """Inference on the CPU runs cpu_conv's path, training spconv's: both against dense."""
    monkeypatch.setattr(sc, "CPU_GATHER_GEMM", gather_gemm)
    torch.manual_seed(0)
    shape = (10, 12, 14)
    coords, feats = random_sparse(n=400, shape=shape, c=4)
    conv = sc.subm(4, 6, "t", sc.algo_for("cpu"))
    dense_in = torch.zeros(1, 4, *shape)
    dense_in[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = torch.from_numpy(feats).T
    # spconv stores weights as [out, kz, ky, kx, in]; Conv3d wants [out, in, kz, ky, kx].
    w = conv.weight.detach().permute(0, 4, 1, 2, 3)
    dense_out = torch.nn.functional.conv3d(dense_in, w, padding=1)
    b = SparseBatch.from_numpy([coords], [feats], shape)
    with torch.no_grad():
        out = conv(sc.sparse_tensor(b.feats, b.coords_bzyx, shape, 1))
    idx = out.indices.long()
    expected = dense_out[0, :, idx[:, 1], idx[:, 2], idx[:, 3]].T
    torch.testing.assert_close(out.features, expected, atol=1e-4, rtol=1e-4,
                               msg="submanifold conv differs from dense conv at active sites")


def test_neighbour_table_finds_neighbours_without_wrapping_rows(monkeypatch):
    from sparse_det.model import cpu_conv

    shape = (3, 4, 5)
    # b, z, y, x: two face neighbours, a voxel at the row's end and one at the next row's
    # start (adjacent in a linear index, not in space), and the same place in batch 1.
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2], [0, 0, 0, 4], [0, 0, 1, 0],
                           [1, 1, 1, 1]])
    # Dense volume, then sorted search; every row at once, then in blocks of 2 rows.
    for cells, rows in [(cpu_conv.DENSE_LOOKUP_MAX_CELLS, 1 << 16), (0, 1 << 16),
                        (cpu_conv.DENSE_LOOKUP_MAX_CELLS, 2), (0, 2)]:
        monkeypatch.setattr(cpu_conv, "DENSE_LOOKUP_MAX_CELLS", cells)
        monkeypatch.setattr(cpu_conv, "TABLE_ROWS", rows)
        table = cpu_conv.neighbour_table(coords, shape, 2)
        assert table.dtype == torch.int32
        centre, plus_x, minus_x = 13, 14, 12  # offsets (0,0,0), (0,0,+1), (0,0,-1)
        assert table[:, centre].tolist() == [0, 1, 2, 3, 4]
        assert table[0, plus_x] == 1 and table[1, minus_x] == 0
        assert table[2, plus_x] == 5 and table[3, minus_x] == 5, "wrapped onto the next row"
        assert (table[4] == 5).sum() == 26, "batch 1 saw batch 0's voxel"
        # Itself, plus: voxels 1 and 3 (diagonal); 0; none; 0.
        assert (table[:4] < 5).sum(1).tolist() == [3, 2, 1, 2]
        empty = cpu_conv.neighbour_table(coords[:0], shape, 2)
        assert empty.shape == (0, 27)


@pytest.mark.parametrize("dense_cells", [None, 0], ids=["dense-lookup", "sorted-search"])
def test_gather_gemm_inference_matches_spconv(dense_cells, monkeypatch):
    """The whole model, two tomograms in a batch, trained-looking BatchNorm: the CPU inference
    path gives spconv's numbers."""
    from sparse_det.model import cpu_conv

    if dense_cells is not None:
        monkeypatch.setattr(cpu_conv, "DENSE_LOOKUP_MAX_CELLS", dense_cells)
    monkeypatch.setattr(cpu_conv, "BLOCK_ROWS", 700)  # blocks that do not divide N
    torch.manual_seed(0)
    coords, feats = random_sparse(n=3000)
    model = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16),
                        blocks_per_level=1, device="cpu").eval()
    _randomise_bn(model, 3)
    b = SparseBatch.from_numpy([coords, coords[:900]], [feats, -feats[:900]], (24, 40, 40))
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(sc, "CPU_GATHER_GEMM", flag)
        with torch.no_grad():
            outs[flag] = model(b)
    for key in ("cls_logits", "offsets"):
        torch.testing.assert_close(outs[True][key], outs[False][key], atol=1e-5, rtol=1e-5)
    assert outs[True]["cls_logits"].std() > 0.1, "a constant output would match trivially"


def test_gather_gemm_training_gradients_match_spconv(monkeypatch):
    """A training step (BatchNorm on batch statistics) gives spconv's loss and gradients."""
    torch.manual_seed(0)
    coords, feats = random_sparse(n=3000)
    model = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16),
                        blocks_per_level=1, device="cpu").train()
    b = SparseBatch.from_numpy([coords, coords[:900]], [feats, -feats[:900]], (24, 40, 40))
    grads, losses = {}, {}
    for flag in (False, True):
        monkeypatch.setattr(sc, "CPU_GATHER_GEMM", flag)
        model.zero_grad()
        out = model(b)
        loss = out["cls_logits"].logsumexp(1).mean() + out["offsets"].pow(2).mean()
        loss.backward()
        losses[flag] = loss.item()
        grads[flag] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    scale = max(g.abs().max().item() for g in grads[False].values())
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=1e-4 * scale, rtol=1e-3,
                                   msg=f"{name}: gradients differ")
    assert grads[True]["stem.weight"].abs().max() > 1e-3 * scale, "no gradient reached the stem"


def test_coords_outside_shape_are_rejected():
    with pytest.raises(ValueError, match="outside spatial shape"):
        SparseBatch.from_numpy([np.array([[0, 0, 50]], np.int32)], [np.zeros((1, 5))],
                               (4, 4, 4))


@pytest.mark.gpu
def test_cuda_forward_matches_cpu():
    torch.manual_seed(0)
    coords, feats = random_sparse()
    cpu = build_model(in_channels=5, num_classes=6, channels=(8, 16), blocks_per_level=1,
                      device="cpu").eval()
    gpu = build_model(in_channels=5, num_classes=6, channels=(8, 16), blocks_per_level=1,
                      device="cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    b = SparseBatch.from_numpy([coords], [feats], (24, 40, 40))
    with torch.no_grad():
        a, g = cpu(b)["cls_logits"], gpu(b.to("cuda"))["cls_logits"].cpu()
    torch.testing.assert_close(a, g, atol=1e-3, rtol=1e-3, msg="CUDA and CPU disagree")



def _randomise_bn(model, seed):
    """Non-trivial BatchNorm statistics and affine parameters, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def test_deepened_model_computes_what_the_shallow_one_did_then_learns():
    torch.manual_seed(0)
    coords, feats = random_sparse()
    batch = SparseBatch.from_numpy([coords], [feats], (24, 40, 40))
    shallow = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16),
                          blocks_per_level=1, device="cpu")
    _randomise_bn(shallow, 1)
    deep = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16), blocks_per_level=2,
                       device="cpu")
    _randomise_bn(deep, 2)  # what the deepening must overwrite
    assert load_deepened(deep, shallow.state_dict()) == [0, 1, 2]
    for mode in ("eval", "train"):
        getattr(shallow, mode)()
        getattr(deep, mode)()
        with torch.no_grad():
            a, b = shallow(batch), deep(batch)
        for k in ("cls_logits", "offsets"):
            torch.testing.assert_close(a[k], b[k], msg=f"{mode}: {k} changed")
    # The new blocks are not stuck at the identity: their gradients are non-zero.
    deep.train()
    out = deep(batch)
    (out["cls_logits"].logsumexp(1).mean() + out["offsets"].abs().mean()).backward()
    assert float(deep.enc[0][1].bn2.weight.grad.abs().sum()) > 0
    # A state that differs elsewhere is refused.
    other = build_model(in_channels=5, num_classes=6, channels=(8, 16, 32), blocks_per_level=1,
                        device="cpu")
    with pytest.raises(ValueError, match="shape"):
        load_deepened(deep, other.state_dict())


def test_widened_input_computes_what_the_narrow_model_did_then_learns():
    torch.manual_seed(0)
    coords, feats = random_sparse()
    extra = np.random.default_rng(5).standard_normal((len(feats), 5)).astype(np.float32)
    narrow = build_model(in_channels=5, num_classes=6, channels=(8, 16, 16),
                         blocks_per_level=1, device="cpu")
    _randomise_bn(narrow, 1)
    wide = build_model(in_channels=10, num_classes=6, channels=(8, 16, 16),
                       blocks_per_level=1, device="cpu")
    wide.load_state_dict(widen_input(narrow.state_dict(), 10))
    shape = (24, 40, 40)
    for mode in ("eval", "train"):
        getattr(narrow, mode)()
        getattr(wide, mode)()
        with torch.no_grad():
            a = narrow(SparseBatch.from_numpy([coords], [feats], shape))
            b = wide(SparseBatch.from_numpy([coords], [np.hstack([feats, extra])], shape))
        for k in ("cls_logits", "offsets"):
            torch.testing.assert_close(a[k], b[k], msg=f"{mode}: {k} changed")
    wide.train()
    out = wide(SparseBatch.from_numpy([coords], [np.hstack([feats, extra])], shape))
    out["cls_logits"].logsumexp(1).mean().backward()
    assert float(wide.stem.weight.grad[..., 5:].abs().sum()) > 0  # the new channels learn
    with pytest.raises(ValueError, match="more than"):
        widen_input(wide.state_dict(), 5)


def test_without_a_gpu_spconv_imports_without_its_cuda_kernel_table():
    """spconv_compat skips spconv.algo's CUDA implicit-GEMM descriptors where torch sees no
    GPU (seconds of Python per process); spconv's own parameter list is left as it was, and
    every conv of the model (submanifold, strided, inverse) runs forward and backward on the
    CPU without them (test_forward_backward_cpu, the picks tests)."""
    import subprocess
    import sys

    code = ("import torch\n"
            "import sparse_det.model.spconv_compat as sc\n"
            "import spconv.algo, spconv.core\n"
            "print(torch.cuda.is_available(), len(spconv.algo.CONV.all_desps), "
            "len(spconv.core.ALL_IMPGEMM_PARAMS) > 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    cuda, table, params = res.stdout.split()
    assert params == "True"  # spconv's own list untouched
    assert int(table) == 0 if cuda == "False" else int(table) > 0
