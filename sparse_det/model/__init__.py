from sparse_det.model.unet import (
    SparseUNet,
    build_model,
    load_deepened,
    remap_classes,
    widen_input,
)

__all__ = ["SparseUNet", "build_model", "load_deepened", "remap_classes", "widen_input"]
