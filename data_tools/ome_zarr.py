"""OME-Zarr documents: a multiscale group's levels (their paths, Å per voxel, shapes and
origins, in any unit the axes carry, zarr v2 or v3), an array's chunks from its metadata,
and writing a tomogram as an OME-Zarr 0.4 pyramid. Nothing here knows the copick layout
(data_tools/copick_io.py)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from data_tools.particles import DataError
from data_tools.zarr_levels import bin2

log = logging.getLogger(__name__)

# Å per unit of the OME-Zarr axis units a tomogram may carry; no unit means copick's Å.
_UNIT_A = {None: 1.0, "angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4}
# Spellings met outside the OME-Zarr spec (which takes UDUNITS-2 names), read as the above.
_UNIT_ALIASES = {"å": "angstrom", "a": "angstrom", "nm": "nanometer", "µm": "micrometer",
                 "μm": "micrometer", "um": "micrometer", "micron": "micrometer"}


def _zarr_metadata(path: Path, v2_name: str) -> tuple[Path, dict] | None:
    """A node's metadata document: zarr v3's `zarr.json` (group attributes under
    "attributes"), else zarr v2's `v2_name` (`.zattrs` of a group, `.zarray` of an array).
    None when the node has neither."""
    for name in ("zarr.json", v2_name):
        f = path / name
        if f.is_file():
            try:
                return f, json.loads(f.read_text())
            except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
                raise DataError(f"{f}: unreadable zarr metadata ({type(exc).__name__}: "
                                f"{exc})") from exc
    return None


def group_attributes(path: Path) -> tuple[Path, dict]:
    """(the file, its attributes) of a zarr group: zarr v2's `.zattrs`, or the "attributes"
    of zarr v3's `zarr.json`; an error naming the group when it has neither."""
    meta = _zarr_metadata(path, ".zattrs")
    if meta is None:
        raise DataError(f"{path}: not an OME-Zarr multiscale (no .zattrs or zarr.json group "
                        f"metadata)")
    f, doc = meta
    attrs = (doc.get("attributes") if f.name == "zarr.json" and isinstance(doc, dict)
             else doc)
    return f, attrs if isinstance(attrs, dict) else {}


def _multiscales(path: Path) -> list:
    """The OME-Zarr `multiscales` of a group: 0.4 in zarr v2 (`.zattrs`), 0.5 in zarr v3
    (`zarr.json`, under attributes.ome) or 0.4-style attributes in a v3 group."""
    f, attrs = group_attributes(path)
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    found = attrs.get("multiscales") or ome.get("multiscales")
    if (not isinstance(found, list) or not found or not isinstance(found[0], dict)
            or "datasets" not in found[0]):
        raise DataError(f"{path}: not an OME-Zarr multiscale (no readable multiscales in "
                        f"{f.name})")
    return found


def _array_shape(path: Path) -> tuple[int, ...] | None:
    meta = _zarr_metadata(path, ".zarray")
    if meta is None or not isinstance(meta[1], dict) or (
            meta[0].name == "zarr.json" and meta[1].get("node_type") != "array"):
        return None
    return tuple(meta[1]["shape"]) if "shape" in meta[1] else None


def array_chunks(path: Path) -> tuple[int, ...]:
    """The (z, y, x) shape of the chunks zarr decodes when it reads the array at `path`,
    from its metadata (zarr v2 `chunks`; v3 the chunk grid's, or a shard's inner chunks,
    which are read one by one); () where the metadata does not say."""
    meta = _zarr_metadata(path, ".zarray")
    doc = meta[1] if meta and isinstance(meta[1], dict) else {}
    chunks = doc.get("chunks")
    if chunks is None:  # zarr v3
        chunks = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
        for codec in doc.get("codecs") or []:
            if isinstance(codec, dict) and codec.get("name") == "sharding_indexed":
                chunks = (codec.get("configuration") or {}).get("chunk_shape", chunks)
    try:
        return tuple(int(c) for c in chunks[-3:]) if len(chunks) >= 3 else ()
    except (TypeError, ValueError):
        return ()


def _stored_grid(doc: dict) -> tuple[tuple[int, ...], tuple[int, ...], str, str] | None:
    """(shape, the shape of one stored object, the key separator, the key prefix) of an
    array's metadata: zarr v2's chunks, or zarr v3's chunk grid (a whole shard, where the
    array is sharded: one file holds its inner chunks); None where it does not say."""
    shape, chunks = doc.get("shape"), doc.get("chunks")
    sep, prefix = doc.get("dimension_separator") or ".", ""
    if chunks is None:  # zarr v3
        chunks = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
        encoding = doc.get("chunk_key_encoding") or {}
        v2_keys = encoding.get("name") == "v2"
        sep = (encoding.get("configuration") or {}).get("separator", "." if v2_keys else "/")
        prefix = "" if v2_keys else "c"
    try:
        shape, chunks = tuple(int(n) for n in shape), tuple(int(c) for c in chunks)
    except (TypeError, ValueError):
        return None
    if len(shape) != len(chunks) or not shape or min(chunks) < 1:
        return None
    return shape, chunks, sep, prefix


def missing_chunks(path: Path) -> tuple[int, int] | None:
    """(stored objects absent from the array at `path`, stored objects its shape needs):
    the chunk files (shards, where sharded) under its folder whose keys name a place in its
    chunk grid, against the grid's size. zarr reads an absent one as the fill value, as
    writers that skip chunks equal to it intend, and as an interrupted copy leaves it
    unsaid. None where the metadata does not say the grid."""
    meta = _zarr_metadata(path, ".zarray")
    grid = _stored_grid(meta[1]) if meta and isinstance(meta[1], dict) else None
    if grid is None:
        return None
    shape, chunks, sep, prefix = grid
    n_grid = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    found = set()
    for f in path.rglob("*"):
        parts = f.relative_to(path).as_posix().split("/")
        if prefix:
            if parts[0] != prefix:
                continue
            parts = parts[1:]
        key = "/".join(parts).split(sep) if sep != "/" else parts
        if (f.is_file() and len(key) == len(shape) and all(k.isdigit() for k in key)
                and all(int(k) < n for k, n in zip(key, n_grid, strict=True))):
            found.add(tuple(key))
    expected = math.prod(n_grid)
    return expected - len(found), expected


def _axes_to_A(path: Path, multiscale: dict) -> float:
    """Å per unit of the spatial axes (one unit for z, y, x; OME-Zarr allows per-axis)."""
    axes = multiscale.get("axes") or []
    units = {a.get("unit") if isinstance(a, dict) else None for a in axes[-3:]}
    units = {_UNIT_ALIASES.get(u.lower(), u.lower()) if isinstance(u, str) else u
             for u in units}
    if len(units) > 1 or not units <= set(_UNIT_A):
        raise DataError(f"{path}: axis units {sorted(map(str, units))} are not one of "
                        f"{[u for u in _UNIT_A if u]}")
    return _UNIT_A[units.pop() if units else None]


_WARNED_SKIPS: set[Path] = set()  # tomograms whose skipped levels were logged once


def multiscale_levels(path: Path) -> list[tuple[str, float, tuple[int, ...], float]]:
    """(array path, Å per voxel, (z, y, x) shape, Å origin of voxel 0's centre) of each
    level of the OME-Zarr multiscale at `path` that can be read as isotropic; level 0 must
    be, later levels that are not are skipped with a warning."""
    multiscale = _multiscales(path)[0]
    datasets, to_A = multiscale["datasets"], _axes_to_A(path, multiscale)
    # OME-Zarr lets the multiscale carry a scale and translation applied to every level
    # after its own: position = g_scale × (scale × index + translation) + g_shift.
    g_scale, g_shift = _scale_and_shift(path, "every level",
                                        multiscale.get("coordinateTransformations") or [])
    levels, skipped = [], []
    for ds in datasets:
        transforms = ds.get("coordinateTransformations", [])
        if not any(t.get("type") == "scale" for t in transforms):
            raise DataError(f"{path}: dataset {ds.get('path')!r} has no scale transformation")
        try:
            shape = _array_shape(path / ds["path"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path / str(ds.get('path'))}: unreadable array metadata "
                            f"({exc})") from exc
        if shape is None:
            raise DataError(f"{path / ds['path']}: level {ds['path']!r} is listed in the "
                            f"multiscales but its array metadata (.zarray or zarr.json) is "
                            f"missing: an incomplete copy (an interrupted download) leaves "
                            f"levels out; fetch the tomogram again")
        try:
            scale, shift = _scale_and_shift(path, ds["path"], transforms)
        except DataError as exc:
            if not levels:  # level 0 is the tomogram: it must be read right or not at all
                raise
            # ome-zarr-py's default pyramid bins y and x only; the levels before it serve.
            skipped.append(str(exc).removeprefix(f"{path}: "))
            continue
        levels.append((ds["path"], scale * g_scale * to_A, shape[-3:],
                       (shift * g_scale + g_shift) * to_A))
    if skipped and path not in _WARNED_SKIPS:
        _WARNED_SKIPS.add(path)
        log.warning("%s: levels skipped: %s", path, "; ".join(skipped))
    listed = {str(ds["path"]) for ds in datasets}
    unlisted = sorted(p.name for p in path.iterdir()
                      if p.is_dir() and p.name not in listed and _array_shape(p) is not None)
    if unlisted:
        raise DataError(f"{path}: arrays {unlisted} are on disk but not listed in its "
                        f"multiscales (listed: {sorted(listed)})")
    return levels


_WARNED_UNSET: set[Path] = set()  # tomograms whose unset scale was logged once
_WARNED_MISSING: set[Path] = set()  # arrays whose absent chunks were logged once


def levels_in_folder(path: Path, folder_A: float
                     ) -> list[tuple[str, float, tuple[int, ...], float]]:
    """The tomogram's levels (multiscale_levels), in its VoxelSpacing folder's voxel spacing
    `folder_A` where the multiscale gives none (scale 1, no unit: what writers leave when no
    voxel size was given), with a warning once; 1 Å voxels would read 10-20x too fine."""
    levels = multiscale_levels(path)
    if (folder_A > 1.5 and levels and math.isclose(levels[0][1], 1.0)
            and not unit_given(path)):
        if path not in _WARNED_UNSET:
            _WARNED_UNSET.add(path)
            log.warning("%s: level 0's scale is 1 with no unit (no voxel size given): read at "
                        "its folder's %g Å", path, folder_A)
        levels = [(where, size * folder_A, shape, origin * folder_A)
                  for where, size, shape, origin in levels]
    return levels


def warn_missing_chunks(where: Path, arr) -> None:
    """A warning, once per array, where chunk files of a level about to be read are absent:
    zarr fills them with the fill value without a word, and an interrupted download then
    reads as blocks of one value, whose particles nobody finds."""
    if where in _WARNED_MISSING:
        return
    counted = missing_chunks(where)
    if not counted or not counted[0]:
        return
    _WARNED_MISSING.add(where)
    log.warning("%s: %d of %d chunk files are not on disk and read as the fill value (%s): "
                "an incomplete copy (an interrupted download) loses whatever they held; "
                "fetch the tomogram again unless its writer skipped chunks of that value "
                "on purpose", where, counted[0], counted[1], arr.fill_value)


def unit_given(path: Path) -> bool:
    """Whether the multiscale's spatial axes carry a unit (without one, a level 0 scale of 1
    is what writers leave when no voxel size was given: ome-zarr-py's default)."""
    axes = _multiscales(path)[0].get("axes") or []
    return any(isinstance(a, dict) and a.get("unit") for a in axes[-3:])


def _scale_and_shift(path: Path, level: str, transforms: list) -> tuple[float, float]:
    """The isotropic scale (1 when none) and translation (0 when none) of a list of
    OME-Zarr coordinate transformations, in the axes' units."""
    try:
        scale = [t["scale"] for t in transforms if t.get("type") == "scale"]
        shift = [t["translation"] for t in transforms if t.get("type") == "translation"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: level {level!r} has a malformed coordinate transformation "
                        f"({type(exc).__name__}: {exc})") from exc
    v = _isotropic(path, level, "scale", scale[0], 1e-2) if scale else 1.0
    return v, (_isotropic(path, level, "translation", shift[0], 1e-3 * v) if shift else 0.0)


def _isotropic(path: Path, level: str, what: str, values, tol: float) -> float:
    """The one value of an x,y,z-alike transformation; per-axis values are refused rather
    than read wrong (voxels and positions here are isotropic: one voxel size, one origin)."""
    v = [float(x) for x in values][-3:]
    if max(v) - min(v) > tol * (max(abs(x) for x in v) if what == "scale" else 1.0):
        raise DataError(f"{path}: level {level!r} has per-axis {what} {v} (z, y, x); only "
                        f"isotropic {what}s are supported")
    return v[-1]


def write_ome_zarr(path: Path, data_zyx: np.ndarray, voxel_size_A: float,
                   n_levels: int = 3, dtype=np.float32, origin_A: float = 0.0,
                   extra_attrs: dict | None = None,
                   chunks_zyx: tuple[int, int, int] = (64, 128, 128)) -> None:
    """OME-Zarr 0.4 multiscale in zarr v2 format: arrays 0..n-1 (fewer where an axis runs
    out), each 2x binned by mean, stored as `dtype` (integers rounded and clipped to their
    range) in chunks of at most `chunks_zyx`, every chunk written; level 0's voxel 0 is
    centred at origin_A.
    `extra_attrs`: more top-level keys for `.zattrs` (OME-Zarr readers ignore keys they do
    not know)."""
    import numcodecs
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    level = np.asarray(data_zyx, dtype=np.float32)
    datasets = []
    for i in range(n_levels):
        if not min(level.shape):
            break  # binned past the data: a level of no sections is no level
        chunks = tuple(min(s, c) for s, c in zip(level.shape, chunks_zyx, strict=True))
        # Every chunk on disk, those of one value too: an absent chunk reads as a sign of an
        # incomplete copy (missing_chunks), and this writer's own must never look like one.
        g.create_array(name=str(i), data=_as_dtype(level, dtype), chunks=chunks,
                       compressors=numcodecs.Blosc(cname="zstd", clevel=1),
                       config={"write_empty_chunks": True})
        s, t = voxel_size_A * 2**i, origin_A + voxel_size_A * (2**i - 1) / 2  # binning's shift
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [s, s, s]}, {"type": "translation",
                                                    "translation": [t, t, t]}]})
        level = bin2(level)
    g.attrs.update({**(extra_attrs or {}), "multiscales": [{
        "version": "0.4", "name": "/",
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
        "datasets": datasets,
    }]})


def _as_dtype(vol: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(vol), info.min, info.max).astype(dtype)
    return vol.astype(dtype)
