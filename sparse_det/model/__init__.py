from sparse_det.model.unet import SparseUNet, build_model

__all__ = ["SparseUNet", "build_model"]
