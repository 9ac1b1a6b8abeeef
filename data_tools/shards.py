"""Sparse volumes and their on-disk shards: one zarr group per run, written atomically.

    <out>/<run>.zarr/coords_zyx   int32 [N,3]  voxel indices at the working resolution (z,y,x)
    <out>/<run>.zarr/feats        float32 [N,C] named channels (attrs feature_names)
    attrs: run, voxel_size_A, origin_A, shape_zyx, tomogram_type, feature_names,
           sparsify_config, input (which tomogram, how it was resampled, polarity),
           format (SHARD_FORMAT), complete (written last)
"""

from __future__ import annotations

import json
from pathlib import Path

from data_tools.atomic import TMP_MARK, atomic_path
from data_tools.particles import DataError
from data_tools.run_names import validate_run_name
from sparse_det.structures import SparseVolume

SHARD_SUFFIX = ".zarr"
COMPLETE_ATTR = "complete"
# Bumped when sparsifying changes what it keeps for the same config, so older shards are
# remade rather than read: 2 = auto polarity from the z projection (1 read it from a 3-D
# blur's skewness and inverted some runs).
SHARD_FORMAT = 2


def shard_path(out_dir: str | Path, run: str) -> Path:
    return Path(out_dir) / f"{validate_run_name(run)}{SHARD_SUFFIX}"


def list_shards(out_dir: str | Path) -> list[str]:
    d = Path(out_dir)
    return sorted(p.name[: -len(SHARD_SUFFIX)] for p in d.glob(f"*{SHARD_SUFFIX}")
                  if TMP_MARK not in p.name) if d.is_dir() else []


def write_shard(sv: SparseVolume, out_dir: str | Path) -> Path:
    import zarr

    if len(sv) == 0:
        raise DataError(f"run {sv.run!r}: empty sparse set, refusing to write a shard")
    path = shard_path(out_dir, sv.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        g = zarr.open_group(str(tmp), mode="w")
        g.create_array("coords_zyx", data=sv.coords_zyx, chunks=(min(len(sv), 1 << 18), 3))
        g.create_array("feats", data=sv.feats,
                       chunks=(min(len(sv), 1 << 18), sv.feats.shape[1]))
        g.attrs.update({
            "run": sv.run, "voxel_size_A": float(sv.voxel_size_A),
            "shape_zyx": list(sv.shape_zyx), "tomogram_type": sv.tomogram_type,
            "feature_names": list(sv.feature_names), "sparsify_config": sv.config,
            "origin_A": float(sv.origin_A), "input": sv.input, "format": SHARD_FORMAT,
            COMPLETE_ATTR: True,  # written last: a shard without it is not finished
        })
    return path


def read_shard_attrs(path: str | Path) -> dict:
    import zarr

    path = Path(path)
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as exc:  # zarr raises several types for a missing or damaged group
        raise DataError(f"{path}: not a readable shard ({exc})") from exc
    if not attrs.get(COMPLETE_ATTR):
        raise DataError(f"{path}: shard is incomplete (no '{COMPLETE_ATTR}' attribute)")
    return attrs


def read_shard(path: str | Path) -> SparseVolume:
    import zarr

    path = Path(path)
    attrs = read_shard_attrs(path)
    try:
        g = zarr.open_group(str(path), mode="r")
        coords, feats = g["coords_zyx"][...], g["feats"][...]
    except Exception as exc:
        raise DataError(f"{path}: cannot read shard arrays ({exc})") from exc
    return SparseVolume(coords, feats, tuple(attrs["shape_zyx"]), attrs["voxel_size_A"],
                        attrs["run"], attrs.get("tomogram_type", "denoised"),
                        list(attrs["feature_names"]), attrs.get("sparsify_config", {}),
                        float(attrs.get("origin_A", 0.0)), dict(attrs.get("input", {})))


def shard_matches(path: str | Path, config: dict) -> bool:
    """True when a complete shard of the current format exists that was made with exactly
    this config."""
    try:
        attrs = read_shard_attrs(path)
    except DataError:
        return False
    same_config = json.dumps(attrs.get("sparsify_config"), sort_keys=True) == json.dumps(
        config, sort_keys=True)
    return same_config and attrs.get("format", 1) == SHARD_FORMAT
