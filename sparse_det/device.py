"""Which torch device to run on: the one rule every entry point and library call uses."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when torch sees a GPU, else the CPU; otherwise the named device, which
    must exist ('cuda' without a GPU is an error, not a silent fall-back)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:  # a name torch does not know ('gpu', 'cuda0')
        raise ValueError(f"device {name!r}: not a device name; use auto, cpu, cuda or "
                         "cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: the sparse convolutions (spconv) run on 'cpu' or "
                         "'cuda' only")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA device")
    return dev
