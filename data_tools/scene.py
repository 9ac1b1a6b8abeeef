"""The specimen a simulated run images: the competition's complexes (or another shape
family's models of them), distractors and gold placed without overlap in an ice slab,
membranes across it, hard negatives apart; density in z, y, x voxels, protein positive.
data_tools.simulate images it."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from data_tools.hard_negatives import render_hard_negatives
from data_tools.particles import EXTRA_PARTICLES, ParticleTable
from data_tools.shapes import (
    Component,
    distractor_components,
    gold_components,
    particle_components,
    random_rotation,
    render,
    render_membrane,
)
from data_tools.shapes_alt import particle_components_alt, particle_components_blob
from data_tools.shapes_procedural import particle_components_procedural, procedural_cap
from data_tools.sim_ranges import MEAN_COUNTS, SHAPE_STREAMS

# The competition's tomogram, and the simulator's voxel (the data portal's 10.012 Å).
FULL_SHAPE_ZYX = (184, 630, 630)
VOXEL_SIZE_A = 10.012

# The other shape families model the competition's classes only: these keep their own.
EXTRA_NAMES = frozenset(p.name for p in EXTRA_PARTICLES)

# Each family's model, and the density cap its renders need (None: overlaps add up).
SHAPE_FAMILIES = {"alt_shape": (particle_components_alt, None),
                  "blob_shape": (particle_components_blob, None),
                  "procedural_shape": (particle_components_procedural, procedural_cap),
                  "compact_procedural_shape": (partial(particle_components_procedural,
                                                       compact=True), procedural_cap)}

# An adsorbed particle's centre lies this many of its radii inside the slab's surface: it
# touches the interface (the slab margin every particle keeps is 0.8 radii).
ADSORBED_DEPTH_RADII = (0.8, 1.0)


def scaled_density(comps: list[Component], factor: float) -> list[Component]:
    """`comps` with every density times `factor` (a lighter or heavier particle)."""
    return [replace(c, density=c.density * factor) for c in comps]


def place_objects(radii_A: np.ndarray, shape_zyx, slab_zyx: tuple[float, float],
                  voxel_size_A: float, rng: np.random.Generator,
                  tries: int = 60, surface: np.ndarray | None = None,
                  surface_rng: np.random.Generator | None = None) -> np.ndarray:
    """Random centres (z,y,x voxels, sub-voxel) without overlap, inside the ice slab.

    Objects are placed largest first; one that finds no room after `tries` draws gets NaN.
    `surface` [n] (-1 / +1: adsorbed at the slab's lower / upper surface, 0: anywhere) puts
    an object's centre ADSORBED_DEPTH_RADII of its radius inside that surface, the depth
    drawn from `surface_rng`; `rng` draws as it would without, so y, x keep their stream.
    """
    order = np.argsort(-radii_A)
    centers = np.full((len(radii_A), 3), np.nan)
    placed_c, placed_r = np.zeros((0, 3)), np.zeros(0)
    z0, z1 = slab_zyx
    for i in order:
        r_vox = radii_A[i] / voxel_size_A
        zlo, zhi = z0 + r_vox * 0.8, z1 - r_vox * 0.8
        if zhi <= zlo:
            zlo = zhi = (z0 + z1) / 2
        side = 0 if surface is None else int(surface[i])
        for _ in range(tries):
            c = np.array([rng.uniform(zlo, zhi), rng.uniform(2, shape_zyx[1] - 3),
                          rng.uniform(2, shape_zyx[2] - 3)])
            if side:
                depth = r_vox * surface_rng.uniform(*ADSORBED_DEPTH_RADII)
                c[0] = min(max(z0 + depth if side < 0 else z1 - depth, z0), z1)
            if len(placed_c):
                d = np.linalg.norm(placed_c - c, axis=1) * voxel_size_A
                if np.any(d < 0.95 * (placed_r + radii_A[i])):
                    continue
            centers[i] = c
            placed_c = np.vstack([placed_c, c])
            placed_r = np.append(placed_r, radii_A[i])
            break
    return centers


def _adsorbed(p: dict, n_protein: int, n_objects: int) -> dict:
    """place_objects' `surface` and `surface_rng` for a run with `interface_share`: each of
    the first `n_protein` objects (particles, distractors; not gold) adsorbed with that
    probability, at either surface alike."""
    if not p.get("interface_share"):
        return {}
    g = np.random.default_rng(p["interface_seed"])
    on = g.random(n_protein) < p["interface_share"]
    side = np.where(g.random(n_protein) < 0.5, -1, 1)
    surface = np.zeros(n_objects, np.int8)
    surface[:n_protein] = np.where(on, side, 0)
    return {"surface": surface, "surface_rng": g}


def render_scene(shape_zyx, particles: ParticleTable, p: dict, rng: np.random.Generator,
                 voxel_size_A: float = VOXEL_SIZE_A
                 ) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Density (protein positive, ice slab), the picks' centres (z,y,x voxels) and the hard
    negatives' density (None without): apart, because the noise is set from the specimen
    without them (a carbon edge does not change the dose)."""
    Z, Y, X = shape_zyx
    density = np.zeros(shape_zyx, dtype=np.float32)
    thick = p["ice_fraction"] * Z
    z0 = rng.uniform(0, Z - thick)
    slab = (z0, z0 + thick)
    area = (Y * X) / (FULL_SHAPE_ZYX[1] * FULL_SHAPE_ZYX[2])

    # Labelled particles, distractors and gold share one non-overlapping placement.
    objs = []  # (name or None, components, bound radius Å, density cap or None)
    shares = {f: p.get(f"{f}_share", 0.0) for f in SHAPE_STREAMS}
    draws = {f: np.random.default_rng(p[f"{f}_seed"]) for f, s in shares.items() if s > 0}
    mass_scale = p.get("class_mass_scale", {})
    for pt in particles:
        n = rng.poisson(MEAN_COUNTS.get(pt.name, 20.0) * area * p["crowding"])
        for _ in range(n):
            comps, cap = particle_components(pt.name, pt.radius_A, rng), None
            # The first family's draw above stays: every later draw is the seed's.
            for family, g in draws.items():
                if g.random() < shares[family] and pt.name not in EXTRA_NAMES:
                    model, cap_of = SHAPE_FAMILIES[family]
                    comps = model(pt.name, pt.radius_A, g)
                    cap = cap_of(comps) if cap_of else None
            k = mass_scale.get(pt.name, 1.0)
            if k != 1.0:
                comps, cap = scaled_density(comps, k), (cap * k if cap else None)
            objs.append((pt.name, comps, pt.radius_A * 1.05, cap))
    n_distr = rng.poisson(len(objs) * p["distractors_per_particle"])
    objs += [(None, *distractor_components(rng), None) for _ in range(n_distr)]
    adsorbed = _adsorbed(p, len(objs), len(objs) + p["gold"])
    objs += [(None, *gold_components(rng), None) for _ in range(p["gold"])]
    radii = np.array([o[2] for o in objs])
    centers = place_objects(radii, shape_zyx, slab, voxel_size_A, rng, **adsorbed)

    picks = {pt.name: [] for pt in particles}
    for (name, comps, bound, cap), c in zip(objs, centers, strict=True):
        if np.isnan(c[0]):
            continue  # no room: never rendered, never labelled
        render(density, c, comps, random_rotation(rng), bound, voxel_size_A, cap)
        if name is not None:
            picks[name].append(c)
    for _ in range(p["membranes"]):
        # Vesicles may overlap particles (as membranes do); centres anywhere around the slab.
        c = np.array([rng.uniform(*slab), rng.uniform(0, Y), rng.uniform(0, X)])
        render_membrane(density, c, rng.uniform(250.0, 1500.0), voxel_size_A,
                        rng.uniform(0.6, 1.2))
    extra = None
    if p.get("hard_negatives"):
        extra = np.zeros_like(density)
        render_hard_negatives(extra, slab, p["hard_negatives"], voxel_size_A, density)
    # Ice: protein is denser than ice, ice denser than the vacuum around the slab.
    zs = np.arange(Z)
    ice = 0.5 * (np.tanh(zs - slab[0]) - np.tanh(zs - slab[1])) * 2.2
    density += ice[:, None, None].astype(np.float32)
    return density, picks, extra
