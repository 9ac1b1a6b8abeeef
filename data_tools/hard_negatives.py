"""Large dense objects that real tomograms hold and particles are not: the edge of the
carbon support film, ice contamination on the surfaces of the slab, and cytoskeletal
filaments in it (data_tools/filaments.py).

Carbon and contamination are far denser or far larger than any particle, so they test
what a top-fraction sparsifier does when a few objects own most of the tomogram's strongest
voxels; filaments are as dense as protein, and only their length sets them apart. They are
drawn from their own random stream (simulate.py passes `[*seed, HARD_NEGATIVE_STREAM]`), so
a run drawn with them holds exactly the particles, noise and physics of the same seed
drawn without: the two are a paired comparison.

Densities are in the simulator's units: protein about 1 above ice, ice 2.2 above vacuum.
Amorphous carbon (about 2 g/cm³ against ice's 0.93 and protein's 1.35) is 3.5-5.5 above
vacuum; contamination is ice (crystalline ice scatters more: up to 3).
"""

from __future__ import annotations

import numpy as np

from data_tools.filaments import draw_filaments, render_filament
from data_tools.shapes import EDGE_A, Ellipsoid, _sigmoid, random_rotation, render

HARD_NEGATIVE_STREAM = 11
CARBON_THICKNESS_A = (100.0, 250.0)
CARBON_DENSITY = (3.5, 5.5)
CARBON_AREA_SHARE = (0.1, 0.6)  # of the field of view covered by the film
CONTAMINATION_RADIUS_A = (150.0, 600.0)
CONTAMINATION_DENSITY = (1.8, 3.0)
EDGE_SOFTNESS_A = 8.0
# Where the other objects' density reaches this (protein is about 1), a filament is absent:
# it passes around a ribosome, not through it (added density would hide the particle).
OCCUPIED_DENSITY = 0.3


def draw_hard_negatives(counts: dict[str, tuple[int, int]], rng: np.random.Generator
                        ) -> dict:
    """The hard negatives of one run, as plain numbers (they go to simulation.json).
    `counts`: {"carbon_edges": (lo, hi), "contamination": (lo, hi), "filaments": (lo, hi)}
    (filaments optional), each count drawn uniformly from lo..hi. Geometry is relative to
    the field and the ice slab, so it does not depend on the tomogram's shape. Filaments
    are drawn last, so runs drawn before they existed keep their carbon and
    contamination."""
    n_carbon = int(rng.integers(counts["carbon_edges"][0], counts["carbon_edges"][1] + 1))
    n_contam = int(rng.integers(counts["contamination"][0], counts["contamination"][1] + 1))
    carbon = [{"angle_rad": float(rng.uniform(0, 2 * np.pi)),
               "area_share": float(rng.uniform(*CARBON_AREA_SHARE)),
               "surface": int(rng.integers(2)),  # 0: the slab's low-z face, 1: its high-z
               "thickness_A": float(rng.uniform(*CARBON_THICKNESS_A)),
               "density": float(rng.uniform(*CARBON_DENSITY))} for _ in range(n_carbon)]
    contamination = [{"yx_share": [float(rng.uniform()), float(rng.uniform())],
                      "surface": int(rng.integers(2)),
                      "radius_A": float(rng.uniform(*CONTAMINATION_RADIUS_A)),
                      "lobes": int(rng.integers(1, 4)),
                      "density": float(rng.uniform(*CONTAMINATION_DENSITY)),
                      "seed": int(rng.integers(2**31))} for _ in range(n_contam)]
    drawn = {"carbon": carbon, "contamination": contamination}
    lo, hi = counts.get("filaments", (0, 0))
    if hi > 0:
        drawn["filaments"] = draw_filaments(int(rng.integers(lo, hi + 1)), rng)
    return drawn


def render_carbon(density: np.ndarray, slab_z: tuple[float, float], spec: dict,
                  voxel_size_A: float) -> None:
    """A film `thickness_A` thick lying on one face of the ice slab (outside it), covering
    the share `area_share` of the field up to a straight edge across it."""
    Z, Y, X = density.shape
    normal = np.array([np.sin(spec["angle_rad"]), np.cos(spec["angle_rad"])])
    yy = (np.arange(Y, dtype=np.float32) - (Y - 1) / 2)[:, None]
    xx = (np.arange(X, dtype=np.float32) - (X - 1) / 2)[None, :]
    along = (normal[0] * yy + normal[1] * xx) * voxel_size_A  # Å along the edge's normal
    edge_A = float(np.quantile(along, 1.0 - spec["area_share"]))
    cover = _sigmoid((along - edge_A) / (EDGE_SOFTNESS_A / 4)).astype(np.float32)
    t_vox = spec["thickness_A"] / voxel_size_A
    z0, z1 = (slab_z[0] - t_vox, slab_z[0]) if spec["surface"] == 0 else (slab_z[1],
                                                                          slab_z[1] + t_vox)
    zs = np.arange(Z, dtype=np.float32)
    soft = EDGE_SOFTNESS_A / 4 / voxel_size_A
    sheet = (_sigmoid((zs - z0) / soft) - _sigmoid((zs - z1) / soft)).astype(np.float32)
    nz = np.nonzero(sheet > 1e-4)[0]
    if len(nz) == 0:
        return  # the film lies outside the volume
    lo, hi = nz[0], nz[-1] + 1
    density[lo:hi] += np.float32(spec["density"]) * sheet[lo:hi, None, None] * cover[None]


def render_contamination(density: np.ndarray, slab_z: tuple[float, float], spec: dict,
                         voxel_size_A: float) -> None:
    """A lumpy ice blob of 1-3 overlapping ellipsoids sitting on one face of the slab,
    mostly outside it."""
    _, Y, X = density.shape
    rng = np.random.default_rng(spec["seed"])
    r = spec["radius_A"]
    lobes = [Ellipsoid(tuple(rng.normal(0, 0.35 * r, 3) if i else (0.0, 0.0, 0.0)),
                       tuple(rng.uniform(0.55, 1.0, 3) * r), 1.0)
             for i in range(spec["lobes"])]
    face = slab_z[0] if spec["surface"] == 0 else slab_z[1]
    outward = -1.0 if spec["surface"] == 0 else 1.0
    centre = np.array([face + outward * 0.4 * r / voxel_size_A,
                       spec["yx_share"][0] * (Y - 1), spec["yx_share"][1] * (X - 1)])
    # Rendered in its own box: overlapping lobes are one piece of ice, not denser where they
    # overlap, so the box is clipped at 1 before it is added.
    h = int(np.ceil((1.7 * r + 2 * EDGE_A) / voxel_size_A)) + 1
    lo = np.maximum(np.floor(centre).astype(int) - h, 0)
    hi = np.minimum(np.floor(centre).astype(int) + h + 1, density.shape)
    if np.any(hi <= lo):
        return
    box = np.zeros(tuple(hi - lo), np.float32)
    render(box, centre - lo, lobes, random_rotation(rng), 1.7 * r, voxel_size_A)
    np.clip(box, 0.0, 1.0, out=box)
    density[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += np.float32(spec["density"]) * box


def render_hard_negatives(density: np.ndarray, slab_z: tuple[float, float], drawn: dict,
                          voxel_size_A: float, occupied: np.ndarray | None = None) -> None:
    """Into `density` (empty). `occupied`: the specimen's other objects (particles,
    distractors, vesicles), which filaments pass around, not through."""
    # Filaments first, by the maximum into the still empty volume; the others add.
    for spec in drawn.get("filaments", []):
        render_filament(density, slab_z, spec, voxel_size_A)
    if drawn.get("filaments") and occupied is not None:
        for z in range(len(density)):  # a slice at a time: no second full-size volume
            density[z] *= np.clip(1.0 - occupied[z] / OCCUPIED_DENSITY, 0.0, 1.0)
    for spec in drawn.get("carbon", []):
        render_carbon(density, slab_z, spec, voxel_size_A)
    for spec in drawn.get("contamination", []):
        render_contamination(density, slab_z, spec, voxel_size_A)
