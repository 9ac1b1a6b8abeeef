"""Procedural particle models: a new random assembly for every particle, kept to what a class
is rather than how one drawing looks.

Why: a detector trained on the hand-built models (data_tools/shapes.py) learns those
drawings — on another drawing of the same classes (shapes_alt.py) it loses 0.06 F4, on lumps
of the right size and mass 0.5 — and training on one more hand-built family does not carry
to a third. Here every particle is drawn afresh from what the class's structure fixes: its
point-group symmetry (octahedral ferritin, icosahedral capsid, D2 beta-galactosidase and
beta-amylase, C2 thyroglobulin, asymmetric two-subunit ribosome), its size (radius of
gyration), its rough mass, whether it is hollow and how elongated it is. Everything else —
how many domains an asymmetric unit has, their shapes, orientations and layout — is random,
so the network cannot lean on any one drawing. The two hand-built families stay out of it
and are the measure of whether it generalises (bench/effects.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.spatial.transform import Rotation

from data_tools.shapes import EDGE_A, Component, Ellipsoid, _centered, render
from data_tools.shapes_alt import _first_family_mass

REACH = 1.02  # domains stay inside this share of the class radius (render bound: 1.05)


@dataclass(frozen=True)
class ClassPlan:
    """What a class's structure fixes; each particle draws the rest."""

    groups: tuple[str, ...]  # point groups (scipy's names), one drawn per particle
    gyration_share: tuple[float, float]  # radius of gyration / class radius
    hollow: bool = False
    domains: tuple[int, int] = (1, 4)  # per asymmetric unit
    stretch: tuple[float, float] = (0.85, 1.2)  # along x (commutes with C2 and D2 turns)
    density: tuple[float, float] = (0.8, 1.25)  # per domain, before the mass is set
    clusters: int = 1  # subunits an asymmetric assembly is built of (the ribosome's two)
    # Largest elongation (square root of the largest over the smallest variance of the mass)
    # the compact variant allows: about what the complex's real structure and both
    # hand-built families show (bench: hand-built 1.2-1.3 ribosome, 1.9-2.3 beta-
    # galactosidase, 3.1-3.7 thyroglobulin); unclamped draws reach 3-6 at the 90th
    # percentile, up to 8. 1.0 suits the O and I groups, whose mass is isotropic anyway.
    max_elongation: float = 1.0


PLANS = {
    "apo-ferritin": ClassPlan(("O",), (0.78, 0.9), hollow=True, domains=(1, 3),
                              stretch=(1.0, 1.0)),
    "virus-like-particle": ClassPlan(("I",), (0.82, 0.93), hollow=True, domains=(1, 4),
                                     stretch=(1.0, 1.0)),
    "ribosome": ClassPlan(("C1",), (0.52, 0.68), domains=(6, 14), stretch=(0.9, 1.15),
                          density=(1.1, 1.45), clusters=2, max_elongation=1.6),
    "beta-galactosidase": ClassPlan(("D2",), (0.52, 0.66), domains=(2, 5),
                                    stretch=(0.9, 1.3), max_elongation=2.4),
    "thyroglobulin": ClassPlan(("C2",), (0.44, 0.58), domains=(4, 8), stretch=(1.2, 1.8),
                               max_elongation=3.5),
    "beta-amylase": ClassPlan(("D2",), (0.45, 0.58), domains=(1, 3), stretch=(0.9, 1.2),
                              max_elongation=2.4),
}


@cache
def _group(name: str) -> np.ndarray:
    return Rotation.create_group(name).as_matrix()


def _second_moments(comps: list[Ellipsoid]) -> np.ndarray:
    """Mass-weighted second moments (Å², about the origin) of solid ellipsoids (overlaps
    counted twice, as in the mass)."""
    m_sum, out = 0.0, np.zeros((3, 3))
    for c in comps:
        m = c.density * np.prod(c.semi_axes_A)
        q = np.eye(3) if c.axes is None else np.asarray(c.axes)
        ctr = np.asarray(c.center_A)
        out += m * (np.outer(ctr, ctr) + q @ np.diag(np.square(c.semi_axes_A) / 5) @ q.T)
        m_sum += m
    return out / m_sum


def _gyration(comps: list[Ellipsoid]) -> float:
    """Mass-weighted radius of gyration about the origin: the second moments' trace."""
    return float(np.sqrt(np.trace(_second_moments(comps))))


def _transformed(comps: list[Ellipsoid], a: np.ndarray) -> list[Ellipsoid]:
    """The ellipsoids under the linear map `a` (still ellipsoids: axes from an SVD)."""
    out = []
    for c in comps:
        q = np.eye(3) if c.axes is None else np.asarray(c.axes)
        u, s, _ = np.linalg.svd(a @ q @ np.diag(c.semi_axes_A))
        out.append(Ellipsoid(tuple(a @ np.asarray(c.center_A)), tuple(s), c.density,
                             tuple(map(tuple, u))))
    return out


def _asymmetric_unit(plan: ClassPlan, n_copies: int, r: float,
                     rng: np.random.Generator) -> list[Ellipsoid]:
    """The domains (Å) of one asymmetric unit of a group of `n_copies` turns."""
    k = int(rng.integers(plan.domains[0], plan.domains[1] + 1))
    if plan.hollow:
        # Domains tile a shell: each covers about its share of the surface.
        shell = 0.85 * r
        base = rng.normal(size=3)
        base /= np.linalg.norm(base)
        patch = shell * np.sqrt(4 / (n_copies * k)) * rng.uniform(0.75, 1.1)
        comps = []
        for _ in range(k):
            d = base + rng.normal(0, patch / shell, 3)
            d /= np.linalg.norm(d)
            semi = (patch * rng.uniform(0.8, 1.2), patch * rng.uniform(0.8, 1.2),
                    r * rng.uniform(0.07, 0.16))  # the last axis points outward
            axes = _outward_frame(d, rng)
            comps.append(Ellipsoid(tuple(d * shell * rng.uniform(0.95, 1.05)), semi,
                                   float(rng.uniform(*plan.density)), axes))
        return comps
    if plan.clusters > 1:  # subunits of unequal size side by side (large one first)
        sizes = np.sort(rng.dirichlet(np.full(plan.clusters, 3.0)))[::-1]
        centres = rng.normal(size=(plan.clusters, 3)) * 0.25 * r
        owners = rng.choice(plan.clusters, size=k, p=sizes)
    else:
        # A subunit off the symmetry axes, so that the copies make one compact assembly.
        centres = rng.normal(size=(1, 3)) * (0.3 * r if n_copies > 1 else 0.0)
        owners = np.zeros(k, dtype=int)
    comps = []
    for o in owners:
        centre = centres[o] + rng.normal(0, rng.uniform(0.08, 0.2) * r, 3)
        semi = tuple(rng.uniform(0.14, 0.32, 3) * r)
        comps.append(Ellipsoid(tuple(centre), semi, float(rng.uniform(*plan.density)),
                               tuple(map(tuple, Rotation.random(random_state=rng)
                                         .as_matrix()))))
    return comps


def _outward_frame(d: np.ndarray, rng: np.random.Generator) -> tuple:
    """A rotation whose third column is `d`, turned at random about it."""
    t = np.cross(d, rng.normal(size=3))
    t /= np.linalg.norm(t)
    return tuple(map(tuple, np.stack([t, np.cross(d, t), d], axis=1)))


def particle_components_procedural(name: str, radius_A: float, rng: np.random.Generator,
                                   compact: bool = False) -> list[Component]:
    """A fresh random model of class `name` at `radius_A`: the class's symmetry, radius of
    gyration, hollowness, elongation and (roughly) the first family's mass; mass centroid at
    the origin, every domain inside the class radius. `compact` shortens the long axes of a
    model more elongated than its class's `max_elongation` (the same random draws: a
    compact model is the plain one, squeezed)."""
    if name not in PLANS:
        raise KeyError(f"no procedural plan for particle {name!r}")
    plan, r = PLANS[name], radius_A
    group = _group(str(rng.choice(plan.groups)))
    unit = _asymmetric_unit(plan, len(group), r, rng)
    comps = [Ellipsoid(tuple(g @ np.asarray(c.center_A)), c.semi_axes_A, c.density,
                       tuple(map(tuple, g @ np.asarray(c.axes))))
             for g in group for c in unit]
    comps = _centered(_transformed(comps, np.diag([rng.uniform(*plan.stretch), 1.0, 1.0])))
    if compact:
        comps = _transformed(comps, _squeeze(comps, plan.max_elongation))
    if plan.hollow:
        cargo = rng.uniform(0.0, 0.4)
        if name == "virus-like-particle" and cargo > 0.15:
            comps.append(Ellipsoid((0.0, 0.0, 0.0), (0.5 * r,) * 3, cargo))
    # Size: scale every length to the drawn radius of gyration, unless a domain would leave
    # the class radius (then as large as fits).
    target = rng.uniform(*plan.gyration_share) * r
    reach = max(np.linalg.norm(c.center_A) + max(c.semi_axes_A) for c in comps)
    k = min(target / _gyration(comps), REACH * r / reach)
    comps = _transformed(comps, np.eye(3) * k)
    # Overlaps are capped (procedural_cap), which moves an asymmetric model's centroid and
    # takes mass: both are measured on the model as rendered, then set.
    centroid_A, mass = _rendered_moments(comps, r)
    scale = _first_family_mass(name, r) * rng.uniform(0.75, 1.3) / max(mass, 1e-9)
    return [Ellipsoid(tuple(np.asarray(c.center_A) - centroid_A), c.semi_axes_A,
                      c.density * scale, c.axes) for c in comps]


def elongation(comps: list[Ellipsoid]) -> float:
    """Square root of the largest over the smallest variance of the mass (centred model)."""
    var = np.linalg.eigvalsh(_second_moments(comps))
    return float(np.sqrt(var[-1] / max(var[0], 1e-12)))


def _squeeze(comps: list[Ellipsoid], max_elongation: float) -> np.ndarray:
    """The linear map that shortens each principal axis of the mass longer than
    `max_elongation` × the shortest one to that length. Scaling along the principal axes
    keeps the model's point group: its turns permute those axes' eigenspaces."""
    var, vecs = np.linalg.eigh(_second_moments(comps))
    sd = np.sqrt(np.maximum(var, 1e-12))
    factor = np.minimum(1.0, max_elongation * sd[0] / sd)
    return vecs @ np.diag(factor) @ vecs.T


def _rendered_moments(comps: list[Ellipsoid], radius_A: float) -> tuple[np.ndarray, float]:
    """Centroid (Å, object frame) and mass (density × Å³) of the capped model, rendered on
    a grid of a twelfth of the radius (scaled densities scale both: the cap is relative)."""
    vox_A = radius_A / 12
    n = 2 * int(np.ceil((radius_A * 1.05 + 2 * EDGE_A) / vox_A)) + 5
    vol = np.zeros((n, n, n), np.float64)
    centre = np.full(3, (n - 1) / 2)
    render(vol, centre, comps, Rotation.identity(), radius_A * 1.05, vox_A,
           procedural_cap(comps))
    w = vol.reshape(-1)
    idx = np.indices(vol.shape).reshape(3, -1).T - centre
    # With the identity rotation the grid's axes are the object frame's, in the order the
    # components' centres use.
    return (idx * w[:, None]).sum(0) / w.sum() * vox_A, float(w.sum() * vox_A**3)


def procedural_cap(comps: list[Component]) -> float:
    """The density a procedural model's overlapping domains may add up to: a little above
    its densest domain (random layouts overlap; protein does not pack denser there)."""
    return 1.1 * max(c.density for c in comps if isinstance(c, Ellipsoid))
