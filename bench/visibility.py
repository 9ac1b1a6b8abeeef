"""How visible each class is in a run, independent of any network: a matched radial template.

For each annotated particle, the tomogram's radial profile around its centre (out to 1.5
radii, robustly normalised volume on the working grid) is correlated with the class's mean
profile in that run minus the background's; the same correlation at random points gives the
background spread, and each particle's z-score is its distance from that background in
background standard deviations. A class the network misses at z ≥ 4 is a learnable miss,
not an information limit.

    python bench/visibility.py --project data/heldout_tilt [--runs ...] [--tomo-type wbp]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.features import robust_normalise
from data_tools.tomo_input import read_working

N_BACKGROUND = 400
MIN_PARTICLES = 3


def shell_radii(rmax: int) -> np.ndarray:
    """Integer distance (voxels) of each voxel of a (2 rmax + 1)³ cube from its centre."""
    zz, yy, xx = np.indices((2 * rmax + 1,) * 3) - rmax
    return np.sqrt(zz**2 + yy**2 + xx**2).round().astype(int)


def shell_voxels(rmax: int) -> np.ndarray:
    """How many voxels of the cube lie at each integer radius 0..rmax."""
    r = shell_radii(rmax)
    return np.bincount(r[r <= rmax])


def radial_profiles(vol: np.ndarray, centres_zyx: np.ndarray, rmax: int) -> np.ndarray:
    """Mean value per integer radius (voxels) around each centre whose cube fits the volume."""
    r = shell_radii(rmax)
    inside = r <= rmax
    counts = np.bincount(r[inside])
    out = []
    for c in np.round(centres_zyx).astype(int):
        lo, hi = c - rmax, c + rmax + 1
        if np.any(lo < 0) or np.any(hi > vol.shape):
            continue
        sub = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        out.append(np.bincount(r[inside], weights=sub[inside]) / counts)
    return np.array(out).reshape(-1, rmax + 1)


def template_z(particles: np.ndarray, background: np.ndarray, shell_voxels: np.ndarray
               ) -> np.ndarray:
    """Each particle's template correlation in background standard deviations."""
    mean_bg = background.mean(0)
    template = (particles.mean(0) - mean_bg) * shell_voxels
    s_p = (particles - mean_bg) @ template
    s_b = (background - mean_bg) @ template
    return (s_p - s_b.mean()) / max(float(s_b.std()), 1e-12)


def run_visibility(project: CopickProject, run: str, tomo_type: str, working_A: float,
                   seed: int = 0) -> dict[str, np.ndarray]:
    tomo, _ = read_working(project, run, tomo_type=tomo_type, type_fallback=True,
                           working_A=working_A)
    v = robust_normalise(tomo.data, f"{run}: {tomo.path}")
    picks = project.read_picks(run)
    rng = np.random.default_rng(seed)
    out = {}
    for p in project.particles:
        xyz = picks.get(p.name, np.zeros((0, 3)))
        if len(xyz) < MIN_PARTICLES:
            continue
        rmax = int(np.ceil(1.5 * p.radius_A / tomo.voxel_size_A))
        if np.any(np.array(v.shape) <= 2 * rmax + 1):
            continue
        zyx = xyz_A_to_zyx_vox(xyz, tomo.voxel_size_A, tomo.origin_A)
        prof = radial_profiles(v, zyx, rmax)
        bg_at = rng.uniform(rmax, np.array(v.shape) - rmax - 1, size=(N_BACKGROUND, 3))
        bg = radial_profiles(v, bg_at, rmax)
        if len(prof) < MIN_PARTICLES:
            continue
        out[p.name] = template_z(prof, bg, shell_voxels(rmax))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--runs", nargs="*")
    ap.add_argument("--tomo-type", default="denoised")
    ap.add_argument("--working-A", type=float, default=20.0,
                    help="grid the tomogram is read on (the checkpoint's: 20 Å)")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    project = CopickProject(a.project)
    names = [p.name for p in project.particles if p.weight]
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for run in a.runs or project.runs():
        z = run_visibility(project, run, a.tomo_type, a.working_A)
        cells = [f"{np.median(z[n]):.1f} (p10 {np.percentile(z[n], 10):.1f}, n={len(z[n])})"
                 if n in z else "–" for n in names]
        print(f"| {run} | " + " | ".join(cells) + " |", flush=True)
    print("\nmedian template z-score per class (10th percentile, particles)")
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
