"""MRC volumes (the MRC2014 format IMOD, AreTomo, Warp and RELION write), read and written
with numpy alone.

A file is a 1024-byte header, an extended header of NSYMBT bytes, then the voxels with x
fastest. The voxel size is the cell length over the sampling (CELLA / MX); the byte order
is the machine stamp's (older files without one are read in the order that makes their
dimensions sensible).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_path
from data_tools.particles import DataError

HEADER_BYTES = 1024
# MRC2014 modes the field writes tomograms in; 4-bit (101) and complex modes are not volumes
# a picker reads.
MODE_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
_DTYPE_MODES = {np.dtype(v): k for k, v in MODE_DTYPES.items()}
# IMOD stamps its files (word 39) and flags its bytes as signed (word 40, bit 0); its mode-0
# files without that flag, the older ones and many trimvol outputs, hold unsigned bytes.
IMOD_STAMP = 1146047817
# A cell equal to the grid (1 Å per pixel) is what IMOD and other writers leave when no
# pixel size was ever set; no tomogram has such pixels.
UNSET_PIXEL_A = 1.0
_AXIS_LETTERS = {1: "x", 2: "y", 3: "z"}


@dataclass(frozen=True)
class MrcVolume:
    data_zyx: np.ndarray  # a read-only memory map of the file's voxels, axes z, y, x
    voxel_size_A: float | None  # None where the header's cell is 0 (some writers leave it)
    path: Path
    offset: int = HEADER_BYTES  # where the voxels start
    sections_are_z: bool = True  # stored as z sections of y rows of x columns (MAPC 1 2 3)

    def read_z(self, start: int, stop: int) -> np.ndarray:
        """Sections start..stop-1 as float32 (z, y, x), read from the file rather than the
        memory map: a mapped page stays resident while the map lives, so a volume larger
        than memory is read a slab at a time this way."""
        if not self.sections_are_z:
            return np.asarray(self.data_zyx[start:stop], dtype=np.float32)
        n_y, n_x = self.data_zyx.shape[1:]
        dtype = self.data_zyx.dtype
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * n_y * n_x * dtype.itemsize)
            flat = np.fromfile(f, dtype=dtype, count=(stop - start) * n_y * n_x)
        return flat.reshape(stop - start, n_y, n_x).astype(np.float32)


def _header(raw: bytes, order: str) -> dict:
    ints = np.frombuffer(raw, dtype=f"{order}i4", count=56)
    floats = np.frombuffer(raw, dtype=f"{order}f4", count=56)
    return {"n_xyz": tuple(int(v) for v in ints[0:3]), "mode": int(ints[3]),
            "m_xyz": tuple(int(v) for v in ints[7:10]),
            "cell_xyz_A": tuple(float(v) for v in floats[10:13]),
            "map_crs": tuple(int(v) for v in ints[16:19]), "nsymbt": int(ints[23]),
            "imod_unsigned_bytes": bool(ints[38] == IMOD_STAMP and not ints[39] & 1)}


def _byte_order(raw: bytes, path: Path) -> str:
    stamp = raw[212:214]
    if raw[208:212] == b"MAP " and stamp in (b"\x44\x44", b"\x44\x41"):
        return "<"
    if raw[208:212] == b"MAP " and stamp == b"\x11\x11":
        return ">"
    for order in "<>":  # no stamp: the order whose dimensions and mode make sense
        h = _header(raw, order)
        if all(0 < n < 100_000 for n in h["n_xyz"]) and h["mode"] in MODE_DTYPES:
            return order
    raise DataError(f"{path}: not an MRC volume (no machine stamp, and neither byte order "
                    "gives sensible dimensions)")


def read_mrc(path: str | Path) -> MrcVolume:
    """The volume of an MRC file as z, y, x, memory-mapped; errors name the file and the
    problem (not MRC, an unsupported mode, truncated, anisotropic voxels)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if len(raw) < HEADER_BYTES:
        raise DataError(f"{path}: {len(raw)} bytes, shorter than an MRC header ({HEADER_BYTES})")
    order = _byte_order(raw, path)
    h = _header(raw, order)
    if h["mode"] not in MODE_DTYPES:
        raise DataError(f"{path}: MRC mode {h['mode']} is not a real-valued volume mode this "
                        f"reader takes ({sorted(MODE_DTYPES)})")
    n_x, n_y, n_z = h["n_xyz"]
    if min(h["n_xyz"]) <= 0:
        raise DataError(f"{path}: MRC dimensions {h['n_xyz']} are not positive")
    dtype = np.dtype(np.uint8 if h["mode"] == 0 and h["imod_unsigned_bytes"]
                     else MODE_DTYPES[h["mode"]]).newbyteorder(order)
    offset = HEADER_BYTES + max(h["nsymbt"], 0)
    need = offset + n_x * n_y * n_z * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise DataError(f"{path}: truncated: {size} bytes, the header's {n_x}x{n_y}x{n_z} "
                        f"mode-{h['mode']} volume needs {need}")
    # The file stores sections (slowest), rows, columns (fastest); MAPC/MAPR/MAPS say which
    # of x, y, z each is. Tomograms are (1, 2, 3); CCP4 maps may permute them.
    crs = h["map_crs"] if sorted(h["map_crs"]) == [1, 2, 3] else (1, 2, 3)
    stored = np.memmap(path, dtype=dtype, mode="r", offset=offset,
                       shape=(h["n_xyz"][2], h["n_xyz"][1], h["n_xyz"][0]))
    letters = [_AXIS_LETTERS[crs[2]], _AXIS_LETTERS[crs[1]], _AXIS_LETTERS[crs[0]]]
    data_zyx = stored.transpose([letters.index(a) for a in "zyx"])
    return MrcVolume(data_zyx=data_zyx, voxel_size_A=_voxel_size(h, path), path=path,
                     offset=offset, sections_are_z=tuple(crs) == (1, 2, 3))


def _voxel_size(h: dict, path: Path) -> float | None:
    cell, m = h["cell_xyz_A"], h["m_xyz"]
    if not all(c > 0 for c in cell) or not all(v > 0 for v in m):
        return None
    sizes = [c / v for c, v in zip(cell, m, strict=True)]
    if max(sizes) > min(sizes) * 1.01:
        raise DataError(f"{path}: anisotropic voxels {', '.join(f'{s:.3f}' for s in sizes)} Å "
                        "(x, y, z); resample to isotropic voxels first")
    return float(np.mean(sizes))


def pixel_size_unset(size_A: float) -> bool:
    """Whether a stated pixel size is the placeholder of one never set (UNSET_PIXEL_A)."""
    return abs(size_A - UNSET_PIXEL_A) < 1e-4


def write_mrc(path: str | Path, data_zyx: np.ndarray, voxel_size_A: float) -> None:
    """An MRC2014 file (little-endian, x fastest), written to a temporary name and renamed."""
    vol = np.ascontiguousarray(data_zyx)
    if vol.dtype not in _DTYPE_MODES:
        raise DataError(f"{path}: cannot write dtype {vol.dtype} to MRC "
                        f"({', '.join(str(d) for d in _DTYPE_MODES)})")
    n_z, n_y, n_x = vol.shape
    ints = np.zeros(256, dtype="<i4")
    ints[0:3] = n_x, n_y, n_z
    ints[3] = _DTYPE_MODES[vol.dtype]
    ints[7:10] = n_x, n_y, n_z
    ints[16:19] = 1, 2, 3
    ints[27] = 20140  # EXTTYP 0, NVERSION: MRC2014
    floats = ints.view("<f4")
    floats[10:13] = n_x * voxel_size_A, n_y * voxel_size_A, n_z * voxel_size_A
    floats[13:16] = 90.0
    floats[19:22] = vol.min(), vol.max(), vol.mean(dtype=np.float64)
    floats[54] = vol.std(dtype=np.float64)
    header = bytearray(ints.tobytes())
    header[208:212] = b"MAP "
    header[212:216] = b"\x44\x44\x00\x00"
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(bytes(header))
        f.write(vol.astype(vol.dtype.newbyteorder("<"), copy=False).tobytes())
