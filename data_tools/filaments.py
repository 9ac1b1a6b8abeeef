"""Cytoskeletal filaments as hard negatives: microtubules and actin filaments (single or in
bundles), long tubes of protein that lie along the ice slab and cross the field.

Real cellular tomograms hold them and particles are not them: a microtubule seen end-on is
a 250 Å ring, about a virus-like particle's size; its wall and an actin filament are protein
exactly as dense as the particles, so neither density nor size at one scale sets them apart
— only their length does. Drawn from the hard negatives' stream (data_tools/hard_negatives.py,
after carbon and contamination), so a seed drawn with them holds exactly the particles,
physics and noise it holds without: the pair measures the filaments alone.

Each filament is a path of straight pieces (PIECE_A long) that turns a little at each joint
(a persistence walk); a piece is rendered as an open tube around its axis, and pieces are
joined by the maximum, so joints and crossings are never denser than protein.
"""

from __future__ import annotations

import numpy as np

from data_tools.shapes import EDGE_A, _sigmoid

PIECE_A = 400.0
# kind: (outer radius Å, inner radius Å, length Å range, bend per piece (deg, std))
KINDS = {"microtubule": (125.0, 80.0, (2000.0, 8000.0), 2.0),
         "actin": (35.0, 0.0, (1000.0, 5000.0), 6.0)}
MICROTUBULE_SHARE = 0.4
BUNDLE_SPACING_A = 110.0  # between neighbouring actin filaments of a bundle
DENSITY = (0.8, 1.1)  # protein's, as the particles' (0.9-1.25)
ELEVATION_STD_RAD = 0.12  # filaments lie along the slab, a few degrees out of it


def draw_filaments(n: int, rng: np.random.Generator) -> list[dict]:
    """`n` filaments as plain numbers (they go to simulation.json); geometry relative to the
    field and the slab, so it does not depend on the tomogram's shape."""
    out = []
    for _ in range(n):
        kind = "microtubule" if rng.uniform() < MICROTUBULE_SHARE else "actin"
        out.append({"kind": kind,
                    "bundle": 1 if kind == "microtubule" else int(rng.integers(1, 6)),
                    "start_yx_share": [float(rng.uniform()), float(rng.uniform())],
                    "z_share": float(rng.uniform(0.15, 0.85)),  # of the slab's thickness
                    "azimuth_rad": float(rng.uniform(0, 2 * np.pi)),
                    "elevation_rad": float(np.clip(rng.normal(0, ELEVATION_STD_RAD), -0.4, 0.4)),
                    "length_A": float(rng.uniform(*KINDS[kind][2])),
                    "density": float(rng.uniform(*DENSITY)),
                    "seed": int(rng.integers(2**31))})
    return out


def _direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector (z, y, x)."""
    return np.array([np.sin(elevation), np.cos(elevation) * np.sin(azimuth),
                     np.cos(elevation) * np.cos(azimuth)])


def filament_path_A(spec: dict, slab_z: tuple[float, float], shape_zyx,
                    voxel_size_A: float) -> np.ndarray:
    """The joints of one filament's axis, [pieces + 1, 3] (z, y, x Å from voxel 0's
    centre): a walk whose direction turns by the kind's bend at each joint."""
    rng = np.random.default_rng(spec["seed"])
    _, Y, X = shape_zyx
    z = slab_z[0] + spec["z_share"] * (slab_z[1] - slab_z[0])
    start = np.array([z, spec["start_yx_share"][0] * (Y - 1),
                      spec["start_yx_share"][1] * (X - 1)]) * voxel_size_A
    azimuth, elevation = spec["azimuth_rad"], spec["elevation_rad"]
    bend = np.radians(KINDS[spec["kind"]][3])
    n = max(1, int(np.ceil(spec["length_A"] / PIECE_A)))
    # The start is the filament's middle: it crosses the field around the drawn point.
    points = [start - 0.5 * n * PIECE_A * _direction(azimuth, elevation)]
    for _ in range(n):
        points.append(points[-1] + PIECE_A * _direction(azimuth, elevation))
        azimuth += rng.normal(0, bend)
        # Pulled back towards the slab's plane: a filament is held by the ice around it.
        elevation = float(np.clip(0.8 * elevation + rng.normal(0, bend), -0.4, 0.4))
    points = np.array(points)
    # ...and never leaves it: the axis stays a tube's radius inside the ice.
    r_out = KINDS[spec["kind"]][0]
    z_lo, z_hi = slab_z[0] * voxel_size_A + r_out, slab_z[1] * voxel_size_A - r_out
    points[:, 0] = np.clip(points[:, 0], z_lo, max(z_lo, z_hi))
    return points


def _bundle_offsets_A(path: np.ndarray, count: int) -> list[np.ndarray]:
    """Offsets of a bundle's filaments from its axis: side by side in the slab's plane,
    perpendicular to the bundle's overall direction."""
    if count == 1:
        return [np.zeros(3)]
    along = path[-1] - path[0]
    side = np.cross(along / (np.linalg.norm(along) or 1.0), [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side) or 1.0
    return [(i - (count - 1) / 2) * BUNDLE_SPACING_A * side for i in range(count)]


def render_tube_piece(density: np.ndarray, a_A: np.ndarray, b_A: np.ndarray,
                      r_out_A: float, r_in_A: float, value: float, voxel_size_A: float) -> None:
    """An open tube (no end caps) around the segment a→b, into `density` by the maximum."""
    h = r_out_A + 2 * EDGE_A
    lo = np.maximum(np.floor((np.minimum(a_A, b_A) - h) / voxel_size_A).astype(int), 0)
    hi = np.minimum(np.ceil((np.maximum(a_A, b_A) + h) / voxel_size_A).astype(int) + 1,
                    density.shape)
    if np.any(hi <= lo):
        return
    axis = b_A - a_A
    length = float(np.linalg.norm(axis))
    u = axis / length
    grids = [np.arange(lo[i], hi[i], dtype=np.float32) * voxel_size_A - a_A[i]
             for i in range(3)]
    t = (u[0] * grids[0][:, None, None] + u[1] * grids[1][None, :, None]
         + u[2] * grids[2][None, None, :])
    sq = (grids[0][:, None, None] ** 2 + grids[1][None, :, None] ** 2
          + grids[2][None, None, :] ** 2)
    r = np.sqrt(np.maximum(sq - t * t, 0.0))
    soft = EDGE_A / 4
    tube = _sigmoid((r_out_A - r) / soft)
    if r_in_A > 0:
        tube -= _sigmoid((r_in_A - r) / soft)
    # Half an edge beyond each end: consecutive pieces overlap instead of leaving a seam.
    tube *= _sigmoid((t + EDGE_A) / soft) * _sigmoid((length + EDGE_A - t) / soft)
    region = density[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    np.maximum(region, (value * tube).astype(density.dtype), out=region)


def render_filament(density: np.ndarray, slab_z: tuple[float, float], spec: dict,
                    voxel_size_A: float) -> None:
    """One filament (or bundle) into `density` by the maximum: where it crosses another
    filament it is protein, not twice protein."""
    r_out, r_in = KINDS[spec["kind"]][:2]
    path = filament_path_A(spec, slab_z, density.shape, voxel_size_A)
    for offset in _bundle_offsets_A(path, spec["bundle"]):
        for a, b in zip(path[:-1] + offset, path[1:] + offset, strict=True):
            render_tube_piece(density, a, b, r_out, r_in, spec["density"], voxel_size_A)
