"""IMOD's binary models (`.mod`, as 3dmod saves them): the particles people mark there as
points, in pixels of the image they were marked on.

The layout is IMOD's binspec (Version 1, Revision 2): every number big-endian; an 8-byte id
(`IMOD`, `V1.2`); a 232-byte model header; then `OBJT` (an object, 176 bytes), `CONT` (a
contour: 16 bytes, then its points as x, y, z floats) and `MESH` (20 bytes, vertices, index
list) structures, and optional chunks `ID, size, data` that may be skipped by their size;
`IEOF` ends the file.

Coordinates. A point is stored in index coordinates of the last subset of the image file
the model was displayed on, unbinned (3dmod multiplies binned positions back when it saves):
x and y from 0 at the first pixel's edge, so its centre is at 0.5, and z from 0 at the
first section's centre. To reach the full file (binspec, *MINX*): exchange y and z where
the model was saved on a Y/Z-flipped image (model flag bit 16), then add
(otrans − ctrans) / cscale, the subset's start, where bit 14 says otrans holds the image
origin. Here the result is given with 0 at the centre of the first pixel on every axis
(copick's convention, and the STAR writer's): x − 0.5, y − 0.5, z. Tilt angles (MINX
crot) are not applied, as IMOD's own programs do not apply them to model points. Current
3dmod sets model flag bit 10 (Z runs from −0.5, the first section's bottom), which is that
convention; a model without it is read the same way (at most half a section off).

`write_imod_model` writes picks the same way back — one scattered-point object per
particle, drawn as spheres of its radius, each point's score stored as its value (general
storage as 3dmod writes it: a COST item of type 10, flags 4, per point, and the object's
range in an OBST item of type 11, flags 21), so 3dmod can show the scores (Edit > Object >
Type, Values) — for viewing and correcting them in 3dmod.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_path
from data_tools.mrc import pixel_size_unset
from data_tools.particles import DataError

MODEL_HEADER = struct.Struct(">128s4i I 4i 6f 5i f 2i 3f")  # 232 bytes
OBJECT_HEADER = struct.Struct(">64s16I i I 2i 3f i 8B 2i")  # 176 bytes
MESH_HEADER = struct.Struct(">3i 2h")  # vsize, lsize, flags, time, surf
FLIP_YZ = 1 << 16  # model flags: saved while the image was shown with Y and Z exchanged
OTRANS_ORIGIN = 1 << 14  # model flags: MINX otrans holds the image origin
SCATTERED = 1 << 9  # object flags: contours hold scattered points
UNIT_EXPONENT_A = 10  # header `units` are powers of ten of metres: -10 is Å, -9 nm
Z_FROM_MINUS_HALF = 1 << 10  # model flags: z from -0.5, the first section's centre at 0
# general storage: a point's value (int index, float value), and an object's value range
# (float min in the index, float max, no index), as 3dmod writes them
STORE_VALUE, STORE_VALUE_FLAGS, STORE_MINMAX, STORE_MINMAX_FLAGS = 10, 4, 11, 21
UNITS_NM = -9


@dataclass(frozen=True)
class ImodObject:
    """One object: `number` counts from 1, as 3dmod shows it; `points_px` (N, 3) x, y, z
    in pixels of the full image file, 0 at the centre of the first pixel."""

    number: int
    name: str
    scattered: bool
    points_px: np.ndarray


@dataclass(frozen=True)
class ImodModel:
    """`pixel_size_A`: the pixel size the model states for its image (MINX's cscale where
    the image header had one, else the header's pixsize and units), None where it states
    none."""

    path: Path
    objects: list[ImodObject]
    pixel_size_A: float | None


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.at, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise DataError(f"{self.where}: the model ends inside a structure at byte "
                            f"{self.at} (truncated, or not an IMOD model)")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def unpack(self, fmt: struct.Struct | str) -> tuple:
        s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def floats(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * n), dtype=">f4").astype(np.float64)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def read_imod_model(path: str | Path) -> ImodModel:
    """The model's objects with their points in full-file pixels (module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    r = _Reader(data, str(path))
    if data[:4] != b"IMOD":
        hint = " (an ASCII model: save it from 3dmod as binary)" if data[:4].lower() == b"imod" \
            else ""
        raise DataError(f"{path}: not an IMOD binary model (it starts {data[:8]!r}){hint}")
    r.take(8)
    header = r.unpack(MODEL_HEADER)
    flags, pixsize, units = header[5], header[21], header[22]
    objects, minx = _structures(r, path)
    shift_px, stated_A = _full_file_frame(flags, minx)
    if stated_A is None and units != 0 and pixsize > 0:
        stated_A = float(pixsize) * 10.0 ** (units + UNIT_EXPONENT_A)
    if stated_A is not None and pixel_size_unset(stated_A):
        stated_A = None
    out = []
    for number, (name, obj_flags, contours) in enumerate(objects, start=1):
        pts = np.concatenate(contours) if contours else np.zeros((0, 3))
        if flags & FLIP_YZ:
            pts = pts[:, [0, 2, 1]]
        pts = pts + shift_px - np.array([0.5, 0.5, 0.0])  # 0 at the first pixel's centre
        out.append(ImodObject(number, name, bool(obj_flags & SCATTERED), pts))
    return ImodModel(path, out, stated_A)


def _structures(r: _Reader, path: Path) -> tuple[list[tuple[str, int, list[np.ndarray]]],
                                                  np.ndarray | None]:
    """Every structure after the header up to IEOF: the objects (name, flags, contours'
    points as stored) and the MINX chunk (None where there is none)."""
    objects: list[tuple[str, int, list[np.ndarray]]] = []
    minx = None
    while True:
        chunk = r.take(4)
        if chunk == b"IEOF":
            break
        if chunk == b"OBJT":
            obj = r.unpack(OBJECT_HEADER)
            objects.append((_text(obj[0]), obj[18], []))
        elif chunk == b"CONT":
            if not objects:
                raise DataError(f"{path}: a contour before any object (byte {r.at - 4})")
            psize = r.unpack(">i3i")[0]
            if psize < 0:
                raise DataError(f"{path}: a contour of {psize} points (byte {r.at - 20})")
            objects[-1][2].append(r.floats(3 * psize).reshape(-1, 3))
        elif chunk == b"MESH":
            vsize, lsize = r.unpack(MESH_HEADER)[:2]
            r.take(12 * max(vsize, 0) + 4 * max(lsize, 0))
        elif chunk == b"MINX":
            size = r.unpack(">i")[0]
            if size < 72:
                raise DataError(f"{path}: a MINX chunk of {size} bytes (72 expected)")
            minx = np.array(r.unpack(">18f")).reshape(6, 3)
            r.take(size - 72)
        elif chunk.isalnum() and chunk.upper() == chunk:  # an optional chunk: ID, size, data
            size = r.unpack(">i")[0]
            if size < 0:
                raise DataError(f"{path}: chunk {chunk.decode()} of {size} bytes")
            r.take(size)
        else:
            raise DataError(f"{path}: unknown structure {chunk!r} at byte {r.at - 4} (not "
                            "an IMOD binary model, or a damaged one)")
    return objects, minx


def _full_file_frame(flags: int, minx: np.ndarray | None) -> tuple[np.ndarray, float | None]:
    """From a MINX chunk (oscale, otrans, orot, cscale, ctrans, crot): the shift from the
    displayed subset to the full file, in pixels, and the image's pixel size where its
    header had one (a header without one gives a cell of one pixel: cscale 1)."""
    if minx is None:
        return np.zeros(3), None
    otrans, cscale, ctrans = minx[1], minx[3], minx[4]
    if not np.all(cscale > 0):
        return np.zeros(3), None
    shift = (otrans - ctrans) / cscale if flags & OTRANS_ORIGIN else np.zeros(3)
    stated = None if np.allclose(cscale, 1.0) else float(cscale[0])
    return shift, stated


@dataclass(frozen=True)
class PointSet:
    """What `write_imod_model` writes as one object: `points_px` (N, 3) x, y, z in pixels,
    0 at the centre of the first pixel; drawn as spheres of `radius_px` in `rgb` (0–1);
    `values` (N,): each point's value (a score), or None."""

    name: str
    points_px: np.ndarray
    radius_px: float
    rgb: tuple[float, float, float]
    values: np.ndarray | None = None


def write_imod_model(path: str | Path, objects: list[PointSet], *, shape_xyz: tuple[int, ...],
                     pixel_size_A: float) -> Path:
    """A binary model 3dmod opens on the image of `shape_xyz` pixels of `pixel_size_A`:
    one scattered-point object per entry (an empty one where it has no points). Written to
    a temporary name and renamed."""
    path = Path(path)
    out = [b"IMOD", b"V1.2", MODEL_HEADER.pack(
        path.name.encode()[:127], *map(int, shape_xyz), len(objects), Z_FROM_MINUS_HALF,
        1, 1, 0, 255, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0, 0, 0, 3, 128,
        pixel_size_A / 10, UNITS_NM, 0, 0.0, 0.0, 0.0)]
    for obj in objects:
        pts = np.asarray(obj.points_px, dtype=np.float64).reshape(-1, 3)
        out.append(b"OBJT" + OBJECT_HEADER.pack(
            obj.name.encode()[:63], *[0] * 16, 1 if len(pts) else 0, SCATTERED, 0, 1,
            *map(float, obj.rgb), max(1, round(obj.radius_px)), 0, 3, 1, 1, 0, 0, 0, 0, 0, 0))
        if len(pts):
            stored = (pts + np.array([0.5, 0.5, 0.0])).astype(">f4")
            out.append(b"CONT" + struct.pack(">i3i", len(pts), 0, 0, 0) + stored.tobytes())
            if obj.values is not None:
                out += _point_values(np.asarray(obj.values, dtype=np.float64).reshape(-1))
    out.append(b"IEOF")
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(out))
    return path


def _point_values(values: np.ndarray) -> list[bytes]:
    """A contour's COST chunk (a value per point) and its object's OBST (their range)."""
    items = np.zeros(len(values), dtype=[("type", ">i2"), ("flags", ">i2"), ("index", ">i4"),
                                         ("value", ">f4")])
    items["type"], items["flags"] = STORE_VALUE, STORE_VALUE_FLAGS
    items["index"], items["value"] = np.arange(len(values)), values
    minmax = struct.pack(">2h2f", STORE_MINMAX, STORE_MINMAX_FLAGS, values.min(), values.max())
    return [b"COST" + struct.pack(">i", items.nbytes) + items.tobytes(),
            b"OBST" + struct.pack(">i", len(minmax)) + minmax]
