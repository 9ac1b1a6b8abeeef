"""3-D density models of the particles, distractors and membranes, rendered into a volume.

Every object is a sum of soft solid ellipsoids and soft spherical shells in its own frame (Å),
rotated and placed at a sub-voxel centre. Shapes are built so that their mass centroid is the
origin: the ground-truth pick is the centre of the particle's density.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

EDGE_A = 4.0  # softness of every edge (Å)


@dataclass(frozen=True)
class Ellipsoid:
    center_A: tuple[float, float, float]  # local x,y,z order is irrelevant: rotation is random
    semi_axes_A: tuple[float, float, float]
    density: float = 1.0
    # The ellipsoid's axes as the columns of a rotation matrix in the object frame; None
    # keeps them on the frame's axes (the hand-built families need nothing else).
    axes: tuple[tuple[float, float, float], ...] | None = None


@dataclass(frozen=True)
class Shell:
    radius_A: float  # mid-wall radius
    thickness_A: float
    density: float = 1.0


Component = Ellipsoid | Shell


def _centered(comps: list[Ellipsoid]) -> list[Ellipsoid]:
    """Shifts solid components so that their mass centroid is the origin."""
    mass = np.array([c.density * np.prod(c.semi_axes_A) for c in comps])
    centroid = (mass[:, None] * np.array([c.center_A for c in comps])).sum(0) / mass.sum()
    return [Ellipsoid(tuple(np.array(c.center_A) - centroid), c.semi_axes_A, c.density, c.axes)
            for c in comps]


def particle_components(name: str, radius_A: float, rng: np.random.Generator) -> list[Component]:
    """Distinct shapes per class, scaled to the class radius, with small per-particle variation."""
    r = radius_A
    jit = lambda s: s * rng.uniform(0.92, 1.08)  # noqa: E731
    if name == "apo-ferritin":  # hollow 24-mer: 12 nm outer, 8 nm inner diameter
        return [Shell(jit(0.83 * r), 0.33 * r, 1.0)]
    if name == "virus-like-particle":  # hollow capsid, sometimes with some cargo inside
        comps: list[Component] = [Shell(jit(0.9 * r), 0.17 * r, 1.0)]
        cargo = rng.uniform(0.0, 0.35)
        if cargo > 0.1:
            comps.append(Ellipsoid((0, 0, 0), (0.55 * r,) * 3, cargo))
        return comps
    if name == "ribosome":  # large + small subunit, RNA-rich (denser)
        return _centered([
            Ellipsoid((0, 0, -0.12 * r), (jit(0.72 * r), jit(0.66 * r), 0.55 * r), 1.25),
            Ellipsoid((0, 0.05 * r, 0.5 * r), (jit(0.62 * r), 0.4 * r, 0.3 * r), 1.25),
        ])
    if name == "beta-galactosidase":  # D2 tetramer: four lobes on the corners of a rectangle
        a, b = 0.42 * r, 0.3 * r
        return _centered([Ellipsoid((sx * a, sy * b, 0), (0.36 * r, 0.3 * r, 0.42 * r), 0.9)
                          for sx in (-1, 1) for sy in (-1, 1)])
    if name == "thyroglobulin":  # elongated dimer: two long lobes side by side, slightly twisted
        tw = rng.uniform(0.0, 0.12) * r
        return _centered([
            Ellipsoid((0, -0.25 * r, -tw), (0.8 * r, 0.24 * r, 0.26 * r), 0.9),
            Ellipsoid((0, 0.25 * r, tw), (0.8 * r, 0.24 * r, 0.26 * r), 0.9),
        ])
    if name == "beta-amylase":  # small tetramer on the corners of a tetrahedron
        d = 0.42 * r
        verts = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3) * d
        return _centered([Ellipsoid(tuple(v), (0.36 * r,) * 3, 0.9) for v in verts])
    if name == "proteasome":  # 20S core: four stacked heptameric rings, a hollow barrel
        return _proteasome(r, jit, rng)
    raise KeyError(f"no shape for particle {name!r}")


def _proteasome(r: float, jit, rng: np.random.Generator) -> list[Component]:
    """The 20S proteasome (about 150 Å long, 115 Å across, a 20-50 Å channel; D7): 28
    subunits in four rings of seven, alpha rings outside, beta rings inside, each ring
    turned by half a subunit against the next. Not one of the competition's classes: the
    complex a checkpoint has never seen, for measuring how it learns a new one."""
    comps = []
    twist = rng.uniform(-0.05, 0.05)
    for k, z in enumerate((-0.7, -0.24, 0.24, 0.7)):
        ring_r = jit(0.48 * r)
        for j in range(7):
            phi = 2 * np.pi * (j + 0.5 * (k % 2)) / 7 + twist * k
            c, s = np.cos(phi), np.sin(phi)
            axes = ((c, s, 0.0), (-s, c, 0.0), (0.0, 0.0, 1.0))  # radial, tangential, barrel
            comps.append(Ellipsoid((ring_r * c, ring_r * s, z * r),
                                   (0.24 * r, 0.21 * r, 0.24 * r), 0.95,
                                   tuple(map(tuple, np.array(axes).T))))
    return _centered(comps)


def distractor_components(rng: np.random.Generator) -> tuple[list[Component], float]:
    """An unlabeled protein or complex: 1-5 lobes of random size. Returns (components, radius)."""
    n = int(rng.integers(1, 6))
    size = rng.uniform(18.0, 70.0)
    comps = [Ellipsoid(tuple(rng.normal(0, size * 0.7, 3)),
                       tuple(rng.uniform(0.5, 1.0, 3) * size), rng.uniform(0.6, 1.2))
             for _ in range(n)]
    comps = _centered(comps)
    bound = max(np.linalg.norm(c.center_A) + max(c.semi_axes_A) for c in comps)
    return comps, float(bound)


def gold_components(rng: np.random.Generator) -> tuple[list[Component], float]:
    r = rng.uniform(25.0, 55.0)
    return [Ellipsoid((0, 0, 0), (r, r, r), rng.uniform(4.0, 8.0))], r


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def render(vol: np.ndarray, center_zyx_vox: np.ndarray, comps: list[Component],
           rotation: Rotation, bound_A: float, voxel_size_A: float,
           max_density: float | None = None) -> None:
    """Adds an object's density into `vol` (z,y,x) in place, clipped at the borders.

    Overlapping components add up, unless `max_density` caps the sum: protein packs no
    denser where two domains of a random model happen to overlap."""
    c = np.asarray(center_zyx_vox, dtype=np.float64)
    h = int(np.ceil((bound_A + 2 * EDGE_A) / voxel_size_A)) + 1
    lo = np.maximum(np.floor(c).astype(int) - h, 0)
    hi = np.minimum(np.floor(c).astype(int) + h + 1, vol.shape)
    if np.any(hi <= lo):
        return
    axes = [(np.arange(lo[i], hi[i]) - c[i]) * voxel_size_A for i in range(3)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    local = rotation.inv().apply(pts)  # world (Å) → object frame
    dens = np.zeros(len(local), dtype=np.float64)
    for comp in comps:
        if isinstance(comp, Shell):
            rr = np.linalg.norm(local, axis=1)
            dens += comp.density * _sigmoid((comp.thickness_A / 2 - np.abs(rr - comp.radius_A))
                                            / (EDGE_A / 4))
        else:
            q = local - np.asarray(comp.center_A)
            if comp.axes is not None:
                q = q @ np.asarray(comp.axes)
            q /= np.asarray(comp.semi_axes_A)
            rho = np.linalg.norm(q, axis=1)
            dens += comp.density * _sigmoid((1.0 - rho) * min(comp.semi_axes_A) / (EDGE_A / 4))
    if max_density is not None:
        dens = np.minimum(dens, max_density)
    vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += dens.reshape(zz.shape).astype(vol.dtype)


def render_membrane(vol: np.ndarray, center_zyx_vox: np.ndarray, radius_A: float,
                    voxel_size_A: float, density: float = 1.0) -> None:
    """A lipid vesicle: two 12 Å leaflets 40 Å apart on a sphere, clipped to the volume."""
    c = np.asarray(center_zyx_vox, dtype=np.float64)
    h = (radius_A + 40.0) / voxel_size_A
    lo = np.maximum(np.floor(c - h).astype(int), 0)
    hi = np.minimum(np.ceil(c + h).astype(int) + 1, vol.shape)
    if np.any(hi <= lo):
        return
    axes = [((np.arange(lo[i], hi[i]) - c[i]) * voxel_size_A).astype(np.float32)
            for i in range(3)]
    rr = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2
                 + axes[2][None, None, :] ** 2)
    d = np.abs(rr - radius_A)
    leaflets = _sigmoid((6.0 - np.abs(d - 20.0)) / (EDGE_A / 4)).astype(np.float32)
    vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += density * leaflets


def random_rotation(rng: np.random.Generator) -> Rotation:
    return Rotation.random(random_state=rng)
