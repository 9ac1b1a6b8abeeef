"""The one module that imports spconv. Everything else imports without it.

On a CPU-only torch, spconv's default algorithm asserts "Torch not compiled with CUDA enabled";
the native algorithm runs on the CPU, so the algorithm is chosen from the device. Submanifold
convs on the CPU run as gather + one product per block of rows (cpu_conv), forward and
backward; strided and inverse convs, and everything on CUDA, keep spconv's own path.
"""

from __future__ import annotations

import logging
import sys
import warnings

import torch

from sparse_det.model import cpu_conv

# spconv's import trips a torch.fx deprecation notice on every start; it is not ours to fix.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
# Its import also raises torch.cuda.amp deprecation notices. A standing filter for spconv's
# own modules, not catch_warnings(): the import may run in a loader thread, and
# catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv(\.|$)")


def _import_spconv():
    """spconv.pytorch, imported without its CUDA implicit-GEMM kernel table where torch sees
    no GPU: spconv.algo builds a Python descriptor for each of those ~650 kernels twice at
    import (~5 of its ~6 s on a 2-core CPU, every process: each command line, each Ray
    worker), and only its CUDA convs read them. The CPU's convs (native, and cpu_conv's) never
    do; with a GPU the table is built as spconv builds it."""
    import spconv.core as core

    saved = core.ALL_IMPGEMM_PARAMS
    if not torch.cuda.is_available() and "spconv.algo" not in sys.modules:
        core.ALL_IMPGEMM_PARAMS = []
    try:
        import spconv.pytorch as module
    finally:
        core.ALL_IMPGEMM_PARAMS = saved
    return module


try:
    spconv = _import_spconv()
    from spconv.core import ConvAlgo
    SPCONV_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only where spconv is absent
    spconv = None
    ConvAlgo = None
    SPCONV_ERROR = exc


# Off: every conv runs spconv's own path (how bench/host.py and bench/cpu_conv.py compare).
CPU_GATHER_GEMM = True
_NEIGHBOURS = "cpu_conv.neighbours"  # not a string spconv would use as an indice key


def _uses_gather_gemm(conv, x) -> bool:
    return (CPU_GATHER_GEMM and not x.features.is_cuda
            and not conv.conv1x1 and conv.groups == 1
            and all(d == 1 for d in conv.dilation)
            and len(set(conv.kernel_size)) == 1 and conv.kernel_size[0] % 2 == 1)


if spconv is not None:
    class SubMConv3d(spconv.SubMConv3d):
        """spconv's SubMConv3d, the same weights; see cpu_conv for its CPU path.
        `product_dtype`: that path's product type (set_product_dtype)."""

        product_dtype: torch.dtype | None = None

        def forward(self, x, add_input=None):
            if add_input is not None or not _uses_gather_gemm(self, x):
                return super().forward(x, add_input)
            # One table per level and kernel, kept in the tensor's indice dict, which every
            # tensor of the level shares (spconv copies the dict only where the level changes).
            key = (_NEIGHBOURS, self.indice_key, self.kernel_size[0])
            table = x.indice_dict.get(key) if self.indice_key is not None else None
            if table is None:
                table = cpu_conv.neighbour_table(x.indices, x.spatial_shape, x.batch_size,
                                                 self.kernel_size[0])
                if self.indice_key is not None:
                    x.indice_dict[key] = table
            return x.replace_feature(cpu_conv.subm_conv(x.features, table, self.weight,
                                                        self.bias, self.product_dtype))
else:  # pragma: no cover
    SubMConv3d = None


def set_product_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> int:
    """Every submanifold conv of `model` multiplies in `dtype` on the CPU path (None: in its
    features' type). Returns how many convs were set."""
    convs = [m for m in model.modules() if SubMConv3d is not None and isinstance(m, SubMConv3d)]
    for m in convs:
        m.product_dtype = dtype
    return len(convs)


def require_spconv():
    if spconv is None:
        raise ImportError(
            "spconv is needed to build the model: pip install spconv-cu120==2.3.6 "
            f"(import failed: {SPCONV_ERROR})")
    return spconv


def algo_for(device: torch.device | str):
    """Native on the CPU (the only one that runs there); spconv's default on CUDA."""
    require_spconv()
    return ConvAlgo.Native if torch.device(device).type == "cpu" else None


def sparse_tensor(feats: torch.Tensor, coords_bzyx: torch.Tensor, spatial_shape_zyx,
                  batch_size: int):
    sp = require_spconv()
    return sp.SparseConvTensor(feats.contiguous(), coords_bzyx.int().contiguous(),
                               list(spatial_shape_zyx), batch_size)


def subm(cin: int, cout: int, key: str, algo, k: int = 3):
    kw = {"algo": algo} if algo is not None else {}
    require_spconv()
    return SubMConv3d(cin, cout, k, padding=k // 2, bias=False, indice_key=key, **kw)


def down(cin: int, cout: int, key: str, algo):
    kw = {"algo": algo} if algo is not None else {}
    return require_spconv().SparseConv3d(cin, cout, 2, stride=2, bias=False, indice_key=key,
                                         **kw)


def up(cin: int, cout: int, key: str, algo):
    kw = {"algo": algo} if algo is not None else {}
    return require_spconv().SparseInverseConv3d(cin, cout, 2, bias=False, indice_key=key, **kw)
