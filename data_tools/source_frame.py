"""Where an imported tomogram came from, so picks can go back to the user's own file.

`import_mrc` may bin a volume and rotate it (IMOD's thin-in-y output, as `trimvol -rx`
does) before filing it as a run; picks come out in Å in that imported frame. Subtomogram
averaging (RELION, Warp, Dynamo) then reads the *original* file, so the import records in
the tomogram's `.zattrs` (key IMPORT_KEY) what it did, and `to_source_px` undoes it: the
Å position → the imported voxel → the binned voxel before rotation → the centre of the
source pixels that bin covers.

Coordinates in the source file are pixels along its map's x, y, z (its columns, rows and
sections unless the header permutes them), 0 at the centre of the first pixel (copick's
convention, also the STAR writer's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_tools.particles import DataError

IMPORT_KEY = "sparse_det_import"


@dataclass(frozen=True)
class SourceFrame:
    """One imported file: its path, shape (z, y, x as stored), pixel size (Å), and what
    the import did — `bin` N×N×N mean binning (a trailing remainder dropped), then
    `rotated_about_x` −90° (the new z is the old y reversed)."""

    file: str
    shape_zyx: tuple[int, int, int]
    pixel_size_A: float
    bin: int = 1
    rotated_about_x: bool = False

    def as_attrs(self) -> dict:
        return {**asdict(self), "shape_zyx": list(self.shape_zyx)}

    @classmethod
    def from_attrs(cls, attrs: dict, where: Path | str) -> SourceFrame:
        try:
            frame = cls(file=str(attrs["file"]),
                        shape_zyx=tuple(int(n) for n in attrs["shape_zyx"]),
                        pixel_size_A=float(attrs["pixel_size_A"]), bin=int(attrs["bin"]),
                        rotated_about_x=bool(attrs["rotated_about_x"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: {IMPORT_KEY!r} in .zattrs is malformed "
                            f"({type(exc).__name__}: {exc})") from exc
        if len(frame.shape_zyx) != 3 or frame.bin < 1 or not frame.pixel_size_A > 0:
            raise DataError(f"{where}: {IMPORT_KEY!r} in .zattrs is malformed ({attrs})")
        return frame

    @property
    def binned_shape_zyx(self) -> tuple[int, int, int]:
        return tuple(n // self.bin for n in self.shape_zyx)

    def to_source_px(self, points_xyz_A: np.ndarray, voxel_size_A: float,
                     origin_A: float = 0.0) -> np.ndarray:
        """(N, 3) x, y, z in Å of the imported tomogram (voxel size and origin of its
        finest level) → (N, 3) x, y, z in pixels of the source file."""
        u_xyz = (np.asarray(points_xyz_A, dtype=float).reshape(-1, 3) - origin_A) / voxel_size_A
        if self.rotated_about_x:
            n_y_binned = self.binned_shape_zyx[1]
            # imported (x, y, z) holds binned (x, n_y - 1 - z, y): rotated_about_x undone
            u_xyz = np.stack([u_xyz[:, 0], n_y_binned - 1 - u_xyz[:, 2], u_xyz[:, 1]], axis=1)
        # a binned voxel's centre is the middle of the `bin` source pixels it averages
        return u_xyz * self.bin + (self.bin - 1) / 2

    def from_source_px(self, points_px: np.ndarray, voxel_size_A: float,
                       origin_A: float = 0.0) -> np.ndarray:
        """to_source_px undone: (N, 3) x, y, z in pixels of the source file → (N, 3) x, y, z
        in Å of the imported tomogram."""
        u_xyz = (np.asarray(points_px, dtype=float).reshape(-1, 3) - (self.bin - 1) / 2) / self.bin
        if self.rotated_about_x:
            n_y_binned = self.binned_shape_zyx[1]
            u_xyz = np.stack([u_xyz[:, 0], u_xyz[:, 2], n_y_binned - 1 - u_xyz[:, 1]], axis=1)
        return u_xyz * voxel_size_A + origin_A


def read_source_frame(zarr_path: Path | str) -> SourceFrame | None:
    """The import record of an OME-Zarr tomogram (zarr v2 or v3), None for one not made by
    `import_mrc`."""
    from data_tools.ome_zarr import group_attributes

    attrs_file, attrs = group_attributes(Path(zarr_path))
    if IMPORT_KEY not in attrs:
        return None
    return SourceFrame.from_attrs(attrs[IMPORT_KEY], attrs_file)
