"""A second, independently built model of every particle class: the same radius, symmetry
and rough mass as data_tools/shapes.py's, built from other parts (subunits instead of smooth
shells, other domain layouts and densities).

Why: a detector trained on one set of shapes learns those shapes, and real complexes (or
another simulator's) are neither. Measuring it on the other family says how much it leans
on our shapes; training on both teaches what the classes share (size, mass, symmetry,
hollowness) rather than one drawing of them.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from data_tools.shapes import Component, Ellipsoid, Shell, _centered, particle_components


def _fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly evenly spread unit vectors (deterministic)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


def _on_sphere(n: int, radius: float, semi_axes: tuple[float, float, float], density: float,
               rng: np.random.Generator, jitter: float = 0.0) -> list[Ellipsoid]:
    """n subunits on a sphere, each an ellipsoid whose first axis points outward: a
    subunit's orientation is what the rotation-free Ellipsoid cannot hold, so the outward
    axis is approximated by stretching the semi-axes along the radial direction's largest
    component (good enough at the working resolution of 20 Å)."""
    out = []
    for v in _fibonacci_sphere(n):
        v = v + rng.normal(0, jitter, 3) if jitter else v
        v = v / np.linalg.norm(v)
        axes = np.full(3, semi_axes[1])
        axes[int(np.argmax(np.abs(v)))] = semi_axes[0]
        out.append(Ellipsoid(tuple(v * radius), tuple(axes), density))
    return out


def particle_components_alt(name: str, radius_A: float,
                            rng: np.random.Generator) -> list[Component]:
    """The other family's components of class `name` at `radius_A`, mass centroid at the
    origin, with small per-particle variation."""
    r = radius_A
    jit = lambda s: s * rng.uniform(0.9, 1.1)  # noqa: E731
    if name == "apo-ferritin":  # 24 four-helix-bundle subunits on a shell, hollow inside
        return _centered(_on_sphere(24, jit(0.76 * r), (0.3 * r, 0.24 * r, 0.24 * r), 1.1,
                                    rng))
    if name == "virus-like-particle":  # capsomers on a sphere; cargo now and then
        comps: list[Component] = _on_sphere(int(rng.integers(60, 91)), jit(0.88 * r),
                                            (0.12 * r, 0.14 * r, 0.14 * r), 1.2, rng, 0.02)
        cargo = rng.uniform(0.0, 0.4)
        if cargo > 0.15:
            comps.append(Ellipsoid((0, 0, 0), (jit(0.5 * r),) * 3, cargo))
        return _centered(comps)
    if name == "ribosome":  # large subunit with three protrusions, flat small subunit
        return _centered([
            Ellipsoid((0, 0, -0.2 * r), (jit(0.62 * r), jit(0.6 * r), 0.5 * r), 1.3),
            Ellipsoid((0.45 * r, 0, 0.1 * r), (0.18 * r, 0.15 * r, 0.22 * r), 1.2),
            Ellipsoid((-0.5 * r, 0.1 * r, -0.1 * r), (0.16 * r, 0.16 * r, 0.2 * r), 1.2),
            Ellipsoid((0, 0.45 * r, -0.3 * r), (0.14 * r, 0.22 * r, 0.14 * r), 1.1),
            Ellipsoid((0, -0.1 * r, 0.48 * r), (jit(0.55 * r), 0.28 * r, 0.22 * r), 1.2),
        ])
    if name == "beta-galactosidase":  # D2: four two-domain subunits around a cavity
        comps = []
        for sx in (-1, 1):
            for sy in (-1, 1):
                for dz, a in ((0.22, 0.3), (-0.22, 0.24)):
                    comps.append(Ellipsoid((sx * 0.45 * r, sy * 0.35 * r, sx * sy * dz * r),
                                           (a * r, 0.26 * r, jit(0.26 * r)), 1.0))
        return _centered(comps)
    if name == "thyroglobulin":  # two curved arms of four domains each, side by side
        comps = []
        bend = rng.uniform(0.1, 0.25)
        for side in (-1, 1):
            for i, t in enumerate(np.linspace(-0.55, 0.55, 4)):
                comps.append(Ellipsoid((t * r, side * (0.22 + bend * (t**2 - 0.25)) * r,
                                        side * 0.06 * i * r / 3),
                                       (0.22 * r, 0.2 * r, jit(0.24 * r)), 0.95))
        return _centered(comps)
    if name == "beta-amylase":  # four subunits on a square (D2), not a tetrahedron
        d = 0.3 * r
        return _centered([Ellipsoid((sx * d, sy * d, 0), (0.4 * r, 0.38 * r, 0.34 * r), 0.9)
                          for sx in (-1, 1) for sy in (-1, 1)])
    raise KeyError(f"no shape for particle {name!r}")


# Radius of gyration over class radius of data_tools/shapes.py's models (measured at 10 Å):
# what a blob of the third family matches, besides mass and hollowness.
GYRATION_SHARE = {"apo-ferritin": 0.86, "beta-amylase": 0.51, "beta-galactosidase": 0.59,
                  "ribosome": 0.55, "thyroglobulin": 0.47, "virus-like-particle": 0.91}
HOLLOW = {"apo-ferritin": (12, 40), "virus-like-particle": (40, 120)}  # subunits per shell


def _mass(comps: list[Component]) -> float:
    """Summed volume × density (overlaps counted twice: a rough mass)."""
    return float(sum(c.density * (4 * np.pi * c.radius_A**2 * c.thickness_A
                                  if isinstance(c, Shell) else 4 / 3 * np.pi
                                  * np.prod(c.semi_axes_A)) for c in comps))


@cache
def _first_family_mass(name: str, radius_A: float) -> float:
    """The rough mass of the first family's model of the class (its jitter at seed 0)."""
    return _mass(particle_components(name, radius_A, np.random.default_rng(0)))


def _with_mass(comps: list[Ellipsoid], mass: float) -> list[Ellipsoid]:
    k = mass / max(_mass(comps), 1e-9)
    return [Ellipsoid(c.center_A, c.semi_axes_A, c.density * k) for c in comps]


def particle_components_blob(name: str, radius_A: float,
                             rng: np.random.Generator) -> list[Component]:
    """A third family, for testing only: random lumps that share with the class nothing but
    its size (radius of gyration), rough mass and hollowness — no symmetry, no domain
    layout. What a detector still finds here it finds by size and mass alone."""
    r = radius_A
    mass = _first_family_mass(name, r)
    if name in HOLLOW:
        lo, hi = HOLLOW[name]
        n = int(rng.integers(lo, hi + 1))
        shell = GYRATION_SHARE[name] * r
        # Enough subunit volume to fill about the shell the first family draws.
        size = shell * (2.6 / n) ** (1 / 3) * rng.uniform(0.8, 1.0)
        comps = []
        for _ in range(n):
            v = rng.normal(size=3)
            v *= shell / np.linalg.norm(v)
            comps.append(Ellipsoid(tuple(v), tuple(size * rng.uniform(0.7, 1.3, 3)),
                                   rng.uniform(0.9, 1.3)))
        return _with_mass(_centered(comps), mass * rng.uniform(0.8, 1.2))
    target = GYRATION_SHARE[name] * r
    k = int(rng.integers(3, 8))
    semi = rng.uniform(0.25, 0.45, (k, 3)) * r
    spread = np.sqrt(max(target**2 - 0.6 * float((semi**2).mean()), 1.0) / 3)
    centres = rng.normal(0, spread, (k, 3))
    # Keep every lump inside the class radius, where the renderer looks for it.
    reach = np.linalg.norm(centres, axis=1) + semi.max(axis=1)
    centres *= np.minimum(1.0, 0.95 * r / reach)[:, None]
    return _with_mass(_centered([Ellipsoid(tuple(c), tuple(s), rng.uniform(0.8, 1.3))
                                 for c, s in zip(centres, semi, strict=True)]),
                      mass * rng.uniform(0.8, 1.2))
