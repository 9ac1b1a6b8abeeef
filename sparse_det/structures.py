"""The data types that cross module boundaries, one place for all of them:

    SparseVolume   one run's kept voxels and their features (sparsify → shards → model)
    SparseBatch    several sparse volumes concatenated for the network (PointGroup-style)
    Detections     one run's detections per particle class, centres in Å (postprocess →
                   thresholds → writers)

Imports neither torch nor pandas at module level: the command lines that only parse
arguments or report bad input stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from data_tools.particles import DataError

if TYPE_CHECKING:
    import pandas as pd
    import torch

# One detection row: the submission CSV's columns plus the score (x, y, z in Å).
DETECTION_COLUMNS = ["experiment", "particle_type", "x", "y", "z", "score"]


@dataclass
class SparseVolume:
    """One run's kept voxels at the working resolution."""

    coords_zyx: np.ndarray  # int32 [N,3] voxel indices, C-contiguous
    feats: np.ndarray  # float32 [N,C], channels named by feature_names
    shape_zyx: tuple[int, int, int]
    voxel_size_A: float
    run: str
    tomogram_type: str = "denoised"
    feature_names: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # the sparsify config that made it
    origin_A: float = 0.0  # Å position of voxel 0's centre (see coords.xyz_A_to_zyx_vox)
    input: dict = field(default_factory=dict)  # which tomogram, how resampled, polarity
    # The first dense feature volumes it was selected from, where sparsify was asked to keep
    # them (the candidate rescorer reads them; sparse_det/rescore.py). Never in a shard;
    # dropped by every change of frame (mirrored, swap_yx).
    dense: list | None = field(default=None, repr=False, compare=False)
    # (blank mask or None, every feature volume) in the frame they were computed in, where
    # sparsify was asked to keep them: data_tools.sparsify.reselect keeps the run at another
    # share without filtering it again. Never in a shard; dropped by every change of frame.
    selected_from: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.coords_zyx = np.ascontiguousarray(self.coords_zyx, dtype=np.int32).reshape(-1, 3)
        self.feats = np.ascontiguousarray(self.feats, dtype=np.float32)
        if self.feats.ndim != 2 or len(self.feats) != len(self.coords_zyx):
            raise DataError(f"run {self.run!r}: feats {self.feats.shape} do not match "
                            f"coords {self.coords_zyx.shape}")
        self.shape_zyx = tuple(int(s) for s in self.shape_zyx)

    def __len__(self) -> int:
        return len(self.coords_zyx)

    @property
    def tilted_about_x(self) -> bool:
        """Its missing wedge lies about x (data_tools/wedge.py): the network, which learnt
        tomograms tilted about y, reads it with y and x swapped (swap_yx)."""
        return self.input.get("tilt_axis") == "x"


# Index order that swaps y and x of a (z, y, x) vector; its own inverse.
SWAP_YX = [0, 2, 1]


def swap_yx(sv: SparseVolume) -> SparseVolume:
    """The sparse volume with its y and x axes swapped, voxels in the same order; features
    are scalars and do not change."""
    shape = sv.shape_zyx
    return replace(sv, coords_zyx=sv.coords_zyx[:, SWAP_YX], dense=None, selected_from=None,
                   shape_zyx=(shape[0], shape[2], shape[1]),
                   input=sv.input | {"tilt_axis": "y" if sv.tilted_about_x else "x"})


@dataclass
class SparseBatch:
    coords_bzyx: torch.Tensor  # int32 [N,4]: batch index, z, y, x (voxels), C-contiguous
    feats: torch.Tensor  # float32 [N,C]
    spatial_shape_zyx: tuple[int, int, int]
    batch_size: int

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> SparseBatch:
        """On `device`, features in `dtype` (default: unchanged); indices stay int32."""
        return SparseBatch(self.coords_bzyx.to(device), self.feats.to(device, dtype),
                           self.spatial_shape_zyx, self.batch_size)

    @classmethod
    def from_numpy(cls, coords_zyx_list: list[np.ndarray], feats_list: list[np.ndarray],
                   spatial_shape_zyx: tuple[int, int, int]) -> SparseBatch:
        """Concatenates per-volume coords [Ni,3] and feats [Ni,C]; forces C-contiguous int32
        indices (spconv on the CPU silently computes garbage on F-ordered index arrays)."""
        import torch

        coords = [np.concatenate([np.full((len(c), 1), b, np.int32),
                                  np.asarray(c, np.int32)], axis=1)
                  for b, c in enumerate(coords_zyx_list)]
        c = np.ascontiguousarray(np.concatenate(coords), dtype=np.int32)
        f = np.ascontiguousarray(np.concatenate(feats_list), dtype=np.float32)
        if len(c) and (c[:, 1:].min() < 0 or np.any(c[:, 1:].max(0) >= spatial_shape_zyx)):
            raise ValueError(f"coords outside spatial shape {spatial_shape_zyx}")
        return cls(torch.from_numpy(c), torch.from_numpy(f), tuple(spatial_shape_zyx),
                   len(coords_zyx_list))


def _empty_class() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 3)), np.zeros(0)


@dataclass
class Detections:
    """One run's detections: per particle class, centres x,y,z in Å [M,3] and scores [M],
    best first. Unthresholded as the detector makes them; `threshold` keeps what passes."""

    run: str
    per_class: dict[str, tuple[np.ndarray, np.ndarray]]
    # The tomogram's confidence: its mean top-class probability over the voxels predicted
    # particle (inference.tomogram_confidence); 1.0 where unknown.
    confidence: float = 1.0
    # Per class: the mean top-class probability over the voxels whose top class it is
    # (inference.class_confidence); a class missing here counts as 1.0.
    class_confidence: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(centres_xyz_A [M,3], scores [M]) of one class; empty for a class never seen."""
        return self.per_class.get(name) or _empty_class()

    def __len__(self) -> int:
        return sum(len(s) for _, s in self.per_class.values())

    def threshold(self, thresholds: dict[str, float], default: float) -> Detections:
        """The detections scoring at least their class's threshold (`default` for a class
        without one)."""
        kept = {}
        for name, (xyz, scores) in self.per_class.items():
            keep = scores >= thresholds.get(name, default)
            kept[name] = (xyz[keep], scores[keep])
        return Detections(self.run, kept, self.confidence, self.class_confidence)

    def with_confidence_power(self, power_from: float, power_to: float,
                              by: str = "tomogram") -> Detections:
        """Uncalibrated scores divided by c ** power_from → the same divided by
        c ** power_to (PostprocessConfig.confidence_power); c the tomogram's confidence, or
        with `by` "class" each class's own."""
        def c(name: str) -> float:
            return self.class_confidence.get(name, 1.0) if by == "class" else self.confidence

        return Detections(self.run, {k: (xyz, s * c(k) ** (power_from - power_to))
                                     for k, (xyz, s) in self.per_class.items()},
                          self.confidence, self.class_confidence)

    def rows(self) -> list[tuple]:
        """(experiment, particle_type, x, y, z, score) per detection: DETECTION_COLUMNS."""
        return [(self.run, name, *map(float, c), float(s))
                for name, (xyz, scores) in self.per_class.items()
                for c, s in zip(xyz, scores, strict=True)]


def detections_table(dets: list[Detections]) -> pd.DataFrame:
    """The rows of several runs as one table (DETECTION_COLUMNS, Å), in the given order."""
    import pandas as pd

    return pd.DataFrame([r for d in dets for r in d.rows()], columns=DETECTION_COLUMNS)
