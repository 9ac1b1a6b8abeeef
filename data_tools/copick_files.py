"""The JSON documents of a copick filesystem project: its config (particles and the two
roots) and its picks files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_tools.particles import DataError, ParticleTable

RUNS_DIR = "ExperimentRuns"


def copick_config(name: str, particles: ParticleTable, static_root: Path,
                  overlay_root: Path) -> dict:
    """A filesystem copick config listing `particles`, with absolute local roots."""
    return {
        "config_type": "filesystem", "name": name, "description": "written by sparse-det",
        "version": "1.0.0",
        "pickable_objects": [
            {"name": p.name, "is_particle": True, "label": p.label, "radius": p.radius_A,
             "pdb_id": p.pdb_id or None, "color": list(p.color)}
            | ({"identifier": p.identifier} if p.identifier else {})
            | ({"emdb_id": p.emdb_id} if p.emdb_id else {}) for p in particles],
        "overlay_root": f"local://{Path(overlay_root).resolve()}",
        "static_root": f"local://{Path(static_root).resolve()}",
        "overlay_fs_args": {"auto_mkdir": True},
    }


def picks_json(run: str, particle: str, points_xyz_A: np.ndarray, user_id: str,
               session_id: str, scores: np.ndarray | None = None) -> dict:
    """A copick picks file's document: points in Å, identity orientations."""
    pts = np.asarray(points_xyz_A, dtype=np.float64).reshape(-1, 3)
    scores = np.ones(len(pts)) if scores is None else np.asarray(scores, dtype=np.float64)
    eye = np.eye(4).tolist()
    return {
        "pickable_object_name": particle, "user_id": user_id, "session_id": str(session_id),
        "run_name": run, "voxel_spacing": None, "unit": "angstrom", "trust_orientation": True,
        "points": [{"location": {"x": float(x), "y": float(y), "z": float(z)},
                    "transformation_": eye, "instance_id": 0, "score": float(s)}
                   for (x, y, z), s in zip(pts, scores, strict=True)],
    }


def read_picks_json(path: Path) -> tuple[str | None, np.ndarray]:
    """A picks file's particle name and points (Å), or an error naming the file."""
    try:
        doc = json.loads(path.read_text())
        pts = np.array([[p["location"]["x"], p["location"]["y"], p["location"]["z"]]
                        for p in (doc.get("points") or [])], dtype=np.float64).reshape(-1, 3)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: malformed picks JSON ({type(exc).__name__}: {exc})") from exc
    if not np.isfinite(pts).all():
        raise DataError(f"{path}: picks JSON has non-finite coordinates")
    unit = doc.get("unit", "angstrom")
    if unit not in ("angstrom", "Angstrom", "A"):
        raise DataError(f"{path}: picks unit {unit!r} is not angstrom")
    return doc.get("pickable_object_name"), pts


def roots_from_config(path: Path) -> tuple[Path, Path]:
    """A copick config's static and overlay roots as local folders (a missing static root
    is the overlay, as copick reads it), or an error naming the config."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable copick config ({exc})") from exc

    def root(key: str) -> Path:
        url = cfg.get(key) or cfg.get("overlay_root") or ""
        if not url.startswith("local://") and "://" in url:
            raise DataError(f"{path}: {key} {url!r} is not a local:// path; this picker reads "
                            "local files only: copy the project to this disk")
        p = Path(url.removeprefix("local://")).expanduser()
        if p.is_absolute():
            return p
        # copick (fsspec) reads a relative root from the working directory; this reader
        # from the config's folder, which moves with it: the first that exists wins.
        beside = path.parent / p
        return p.absolute() if not beside.exists() and p.exists() else beside

    if "overlay_root" not in cfg:
        raise DataError(f"{path}: copick config has no overlay_root")
    static, overlay = root("static_root"), root("overlay_root")
    if cfg.get("config_type") == "cryoet_data_portal" and not (overlay / RUNS_DIR).is_dir():
        # Its static tomograms live on the portal; only its overlay is on this disk.
        raise DataError(
            f"{path}: a copick config of the CryoET Data Portal (datasets "
            f"{cfg.get('dataset_ids')}) whose overlay {overlay} holds no {RUNS_DIR}/: the "
            f"tomograms are on the portal, and this picker reads local files only; download "
            f"the runs (the portal's website or its `cryoet_data_portal` client) into a "
            f"copick filesystem project and point --project at it")
    return static, overlay
