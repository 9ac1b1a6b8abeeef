"""The one module that imports spconv. Everything else imports without it.

On a CPU-only torch, spconv's default algorithm asserts "Torch not compiled with CUDA enabled";
the native algorithm runs on the CPU, so the algorithm is chosen from the device.
"""

from __future__ import annotations

import logging
import warnings

import torch

# spconv's import trips a torch.fx deprecation notice on every start; it is not ours to fix.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
# Its import also raises torch.cuda.amp deprecation notices. A standing filter for spconv's
# own modules, not catch_warnings(): the import may run in a loader thread, and
# catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv(\.|$)")
try:
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo
    SPCONV_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised only where spconv is absent
    spconv = None
    ConvAlgo = None
    SPCONV_ERROR = exc


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
    return require_spconv().SubMConv3d(cin, cout, k, padding=k // 2, bias=False,
                                       indice_key=key, **kw)


def down(cin: int, cout: int, key: str, algo):
    kw = {"algo": algo} if algo is not None else {}
    return require_spconv().SparseConv3d(cin, cout, 2, stride=2, bias=False, indice_key=key,
                                         **kw)


def up(cin: int, cout: int, key: str, algo):
    kw = {"algo": algo} if algo is not None else {}
    return require_spconv().SparseInverseConv3d(cin, cout, 2, bias=False, indice_key=key, **kw)
