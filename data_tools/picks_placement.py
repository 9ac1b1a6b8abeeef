"""Whether a run's picks can be where its tomograms are: copick's picks are in Å, and picks
saved in pixels or nm (the field's most reported mix-up) would train and score as particles
nobody can find. CopickProject warns once per run as it reads them; `data_tools.info` shows
it per run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from data_tools.particles import DataError

if TYPE_CHECKING:
    from data_tools.copick_io import CopickProject

# A genuine annotation fills its tomogram; this many picks, all in one corner, do not.
MISPLACED_MIN_PICKS = 10


def tomogram_extent_A(project: CopickProject, run: str
                      ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(lowest x,y,z Å, highest x,y,z Å, level 0's voxel Å) that the run's tomograms
    cover (voxel edges, every type and spacing folder, from their metadata); None where
    it has none that reads."""
    lo, hi, vox = None, None, 0.0
    for vs in project.voxel_spacings(run):
        for t in project.tomogram_types(run, vs):
            try:
                _, v, shape, origin = project.tomogram_scales(run, vs, t)[0]
            except DataError:  # reading it says why; the extent makes do without it
                continue
            a = np.full(3, origin - v / 2)
            b = origin + (np.array(shape[::-1], float) - 0.5) * v
            lo, hi = (a, b) if lo is None else (np.minimum(lo, a), np.maximum(hi, b))
            vox = vox or v
    return None if lo is None else (lo, hi, vox)


def picks_outside(project: CopickProject, run: str, picks: dict[str, np.ndarray],
                  extent: tuple | None = None) -> dict[str, int]:
    """{particle: how many of its picks lie beyond the run's tomograms (`extent`, when
    the caller has it: tomogram_extent_A) by more than its radius}, those with any."""
    extent = extent or tomogram_extent_A(project, run)
    if extent is None:
        return {}
    lo, hi, _ = extent
    out = {}
    for name, pts in picks.items():
        r = project.particles[name].radius_A
        n = int(np.sum(np.any((pts < lo - r) | (pts > hi + r), axis=1))) if len(pts) else 0
        if n:
            out[name] = n
    return out


def picks_misplaced(project: CopickProject, run: str,
                    picks: dict[str, np.ndarray]) -> str | None:
    """Why the run's picks cannot be in Å of its tomograms, or None: some lie beyond
    them by more than the particle's radius, or at least MISPLACED_MIN_PICKS of them all
    lie in the corner that pixels of its voxels (or nm) read as Å would fill."""
    extent = tomogram_extent_A(project, run)
    have = [p for p in picks.values() if len(p)]
    if extent is None or not have:
        return None
    lo, hi, vox = extent
    where = (f"(x, y, z from {np.round(lo).astype(int).tolist()} to "
             f"{np.round(hi).astype(int).tolist()} Å)")
    outside = picks_outside(project, run, picks, extent)
    if outside:
        return (f"picks beyond its tomogram {where} by more than the particle's radius: "
                + ", ".join(f"{n} of {len(picks[k])} {k}" for k, n in outside.items())
                + "; copick picks are in Å")
    pts = np.concatenate(have)
    if len(pts) < MISPLACED_MIN_PICKS:
        return None
    fits = [(f, unit) for f, unit in ((vox, f"pixels of its {vox:g} Å voxels"),
                                      (10.0, "nm"))
            if f >= 4 and np.all(pts <= hi / f + vox)]
    if not fits:
        return None
    return (f"all {len(pts)} picks lie in the first 1/{fits[0][0]:g} of its tomogram "
            f"{where} along every axis (a voxel's slack), where "
            + " or ".join(unit for _, unit in fits) + " read as Å would put them; copick "
            "picks are in Å: " + ", ".join(f"× {f:g} if they are {unit}"
                                            for f, unit in fits))
