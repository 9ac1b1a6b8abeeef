"""The same runs written the ways users' data comes, each picked with no extra flag: prints a
markdown table of weighted F4 (and per class) against the unchanged runs.

    python bench/input_variants.py --project demo_data/project [--checkpoint PT]
                                   [--work /tmp/variants] [--json bench/input_variants.json]
                                   [--only VARIANT ...]

Variants: the portal's `VoxelSpacing10.012` folder, resampled to 13.48 Å and 7.84 Å (an
independent map_coordinates resampling, as another lab's pipeline would make) and to voxels
4.8 % larger or smaller (resampled to the grid; `--spacing-tolerance 0.05` reads them as
they are), pyramid level 0 only, a ramp of ±2σ or ±0.5σ across x (uneven ice), protein bright (×−1),
int8, tilted about x (y and x swapped: the missing wedge about x; its picks swapped alike),
two MRC files brought in by `data_tools.import_mrc` with no flag (standardised float16, thin
along y as IMOD's `tilt` writes a reconstruction before `trimvol -rx`) or with `--bin 2`
(float32 at half the voxel size, each voxel 2×2×2), the import's seconds and peak memory
measured in a child process; and a fifth of x blank at the volume's mean or at zero (a
reconstruction's area outside the tilt series' footprint; the particles it touches dropped
from the truth); and reconstructed 1.5× as thick (a quarter of the depth more above and
below: the run's own particle-free slices mirrored out, or noise with the whole volume's
spectrum; the truth moved down with them).
Each is a copy of the project with only the tomograms rewritten; picks are unchanged (Å)
but for the swap, the blank and the added depth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.child_peak import run_measured  # noqa: E402
from bench.detector import bench_project  # noqa: E402
from data_tools import tomo_input  # noqa: E402
from data_tools.copick_io import CopickProject, copy_without_tomograms  # noqa: E402
from data_tools.mrc import write_mrc  # noqa: E402

MRC_VARIANTS = ("MRC float16, IMOD's orientation", "MRC at half the voxel size, --bin 2")

SCORED = ["apo-ferritin", "beta-galactosidase", "ribosome", "thyroglobulin",
          "virus-like-particle"]


def resampled(vol: np.ndarray, voxel_A: float, new_A: float) -> np.ndarray:
    """Anti-aliased linear resampling, voxel 0 kept centred at 0 Å."""
    ratio = new_A / voxel_A
    src = ndimage.gaussian_filter(vol, (ratio - 1) / 2) if ratio > 1 else vol
    shape = [int(n * voxel_A / new_A) for n in vol.shape]
    grid = np.meshgrid(*[np.arange(n) * new_A / voxel_A for n in shape], indexing="ij")
    return ndimage.map_coordinates(src, grid, order=1, mode="nearest").astype(np.float32)


# Uneven ice or illumination shades a reconstruction across the field: a linear ramp of
# ± so many of the volume's standard deviations along x.
RAMP = "a ramp of ±2σ across x (uneven ice)"
RAMP_WEAK = "a ramp of ±0.5σ across x"


def ramped(vol: np.ndarray, half_range_sigma: float) -> dict:
    ramp = np.linspace(-1, 1, vol.shape[2], dtype=np.float32)
    return {"data_zyx": vol + np.float32(half_range_sigma * vol.std()) * ramp}

# Read as they are (within a --spacing-tolerance of 0.05), these runs' particles reach the
# network 4.8 % smaller or larger than training drew them; by default they are resampled.
SCALE_OFF = 0.048
SCALE_LARGER = "voxels 4.8 % larger"
SCALE_SMALLER = "voxels 4.8 % smaller"


def scaled(vol: np.ndarray, voxel_A: float, factor: float) -> dict:
    new_A = voxel_A * factor
    return {"data_zyx": resampled(vol, voxel_A, new_A), "voxel_size_A": new_A,
            "voxel_spacing_A": round(new_A, 3)}


def imported_mrc_variant(src: CopickProject, dest: Path, name: str) -> tuple[CopickProject, dict]:
    """The runs written as MRC files and imported by `python -m data_tools.import_mrc` with
    no flag but --bin; its seconds and peak resident memory (a child process's)."""
    project = copy_without_tomograms(src, dest)
    mrc_dir = dest.with_name(dest.name + "_files")
    mrc_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for run in src.runs():
        t = src.read_tomogram(run)
        vol = np.asarray(t.data, dtype=np.float32)
        if name == MRC_VARIANTS[0]:  # the inverse of trimvol -rx; standardised, as float16
            z = (vol - vol.mean()) / vol.std()  # writers keep within its range
            write_mrc(mrc_dir / f"{run}.rec", np.swapaxes(z[::-1], 0, 1).astype(np.float16),
                      t.voxel_size_A)
        else:
            fine = vol.repeat(2, 0).repeat(2, 1).repeat(2, 2)
            write_mrc(mrc_dir / f"{run}.mrc", fine, t.voxel_size_A / 2)
            del fine
        files.append(str(next(mrc_dir.glob(f"{run}.*"))))
    extra = [] if name == MRC_VARIANTS[0] else ["--bin", "2"]
    # A child of its own, its peak its own memory's high-water mark (bench/child_peak.py).
    seconds, peak_GB = run_measured("data_tools.import_mrc", [*files, "--out", str(dest),
                                                              *extra])
    cost = {"import_s": seconds, "import_peak_GB": peak_GB,
            "files_GB": sum(Path(f).stat().st_size for f in files) / 1e9}
    return CopickProject(project.path), cost


BLANK_SHARE = 5  # 1/5 of x
BLANK = "a fifth blank (the mean)"
BLANK_ZERO = "a fifth blank (zeros)"


def blanked(vol: np.ndarray, value: float) -> np.ndarray:
    """The first fifth along x set to `value`, as a reconstruction's area outside the tilt
    series' footprint is filled (with the mean, or with zeros whatever the data's level)."""
    out = np.array(vol, dtype=np.float32)
    out[:, :, :vol.shape[2] // BLANK_SHARE] = value
    return out


THICKER = "1.5x as thick, the run's own vacuum above and below"
THICKER_NOISE = "1.5x as thick, noise with the whole volume's spectrum above and below"
PAD_SHARE = 4  # a quarter of the depth more on each side


def free_slices(src: CopickProject, run: str, n_z: int, voxel_A: float) -> np.ndarray:
    """Which z slices no particle of the truth reaches (its centre ± radius)."""
    free = np.ones(n_z, dtype=bool)
    for particle, pts in src.read_picks(run).items():
        r_A = src.particles[particle].radius_A
        for z_A in pts[:, 2]:
            free[max(0, int((z_A - r_A) / voxel_A)):int((z_A + r_A) / voxel_A) + 1] = False
    return free


def with_own_vacuum(vol: np.ndarray, free: np.ndarray) -> np.ndarray:
    """depth // PAD_SHARE slices more above and below, made of the run's own slices outside
    the ice (those no particle reaches, next to each face), mirrored back and forth as far
    as needed: a reconstruction made thicker than the ice, with nothing new in it."""
    pad = vol.shape[0] // PAD_SHARE
    below = int(np.argmin(free)) if not free.all() else len(free)
    above = int(np.argmin(free[::-1])) if not free.all() else len(free)
    if min(below, above) < 2:
        raise ValueError("no particle-free slab at a face to pad with")

    def mirrored(slab: np.ndarray) -> np.ndarray:  # the face's side first: no seam there
        reps = -(-pad // len(slab))
        return np.concatenate([slab if k % 2 == 0 else slab[::-1] for k in range(reps)])[:pad]

    return np.concatenate([mirrored(vol[:below])[::-1], vol, mirrored(vol[-above:][::-1])])


def thicker(vol: np.ndarray, seed: int = 0) -> np.ndarray:
    """The volume with depth // PAD_SHARE slices more above and below, as a reconstruction
    made thicker than the ice: noise with the volume's own power spectrum (its Fourier
    amplitudes under random phases), so no particle is there and nothing is constant."""
    rng = np.random.default_rng(seed)
    spectrum = np.abs(np.fft.rfftn(vol - vol.mean()))
    noise = np.fft.irfftn(spectrum * np.exp(2j * np.pi * rng.random(spectrum.shape)),
                          s=vol.shape, axes=(0, 1, 2)).astype(np.float32)
    noise = noise / noise.std() * vol.std() + vol.mean()
    pad = vol.shape[0] // PAD_SHARE
    return np.concatenate([noise[:pad], vol, noise[-pad:]])


INCLINED = "inclined 10° about the tilt axis (a lamella's pretilt)"
INCLINE_DEG = 10.0


def inclined_zx(angle_deg: float, shape_zyx) -> tuple[np.ndarray, np.ndarray]:
    """(R, centre): a rotation by `angle_deg` in the (z, x) plane about the volume's centre,
    acting on (z, x) voxel coordinates: a point p goes to R (p - centre) + centre."""
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return rot, (np.array([shape_zyx[0], shape_zyx[2]], dtype=float) - 1) / 2


def inclined(vol: np.ndarray, angle_deg: float = INCLINE_DEG) -> np.ndarray:
    """The whole reconstruction turned about y, the tilt axis: what a specimen pretilted
    by that angle gives when its tilt series is centred on it and reconstructed in the
    beam's frame (the missing wedge turns with the ice). Corners from outside read the
    volume's mean, as rotating programs fill them."""
    rot, c = inclined_zx(angle_deg, vol.shape)
    inv = rot.T  # output (z, x) reads input rot.T (o - c) + c
    matrix = np.eye(3)
    matrix[np.ix_([0, 2], [0, 2])] = inv
    offset = np.zeros(3)
    offset[[0, 2]] = c - inv @ c
    return ndimage.affine_transform(np.asarray(vol, dtype=np.float32), matrix, offset,
                                    order=1, mode="constant", cval=float(vol.mean()))


def inclined_turn(pts_xyz_A: np.ndarray, shape_zyx, voxel_A: float, radius_A: float,
                   angle_deg: float = INCLINE_DEG) -> tuple[np.ndarray, np.ndarray]:
    """The picks turned with the volume (x, y, z Å) and which stay: those whose centre
    neither leaves it nor comes within half a radius of its z faces."""
    rot, c = inclined_zx(angle_deg, shape_zyx)
    zx = pts_xyz_A[:, [2, 0]] / voxel_A
    zx = (zx - c) @ rot.T + c
    out = np.stack([zx[:, 1], pts_xyz_A[:, 1] / voxel_A, zx[:, 0]], axis=1) * voxel_A
    margin = 0.5 * radius_A / voxel_A
    stay = ((zx[:, 0] >= margin) & (zx[:, 0] <= shape_zyx[0] - 1 - margin)
            & (zx[:, 1] >= 0) & (zx[:, 1] <= shape_zyx[2] - 1))
    return out, stay


def inclined_picks(pts_xyz_A: np.ndarray, shape_zyx, voxel_A: float, radius_A: float,
                   angle_deg: float = INCLINE_DEG) -> np.ndarray:
    """The picks turned with the volume, those that leave it dropped (inclined_turn)."""
    out, stay = inclined_turn(pts_xyz_A, shape_zyx, voxel_A, radius_A, angle_deg)
    return out[stay]


HOT = "two voxels at ±1e6 sigma (hot pixels)"
TINY_UNITS = "in units of 1e-20"


def with_hot_voxels(vol: np.ndarray) -> np.ndarray:
    out = vol.copy()
    z, y, x = vol.shape
    out[5, 5, 5], out[z - 9, y // 2, x // 3] = 1e6 * vol.std(), -1e6 * vol.std()
    return out


# write_tomogram's arguments for each rewritten variant, from (volume, voxel size, (source
# project, run) for the variants that read the truth), made only for the variant asked for.
VARIANT_ARGUMENTS = {
    "unchanged": lambda vol, vs, _: {},
    "VoxelSpacing10.012": lambda vol, vs, _: {"voxel_spacing_A": 10.012},
    "13.48 Å": lambda vol, vs, _: {"data_zyx": resampled(vol, vs, 13.48),
                                   "voxel_size_A": 13.48, "voxel_spacing_A": 13.48},
    "7.84 Å": lambda vol, vs, _: {"data_zyx": resampled(vol, vs, 7.84), "voxel_size_A": 7.84,
                                  "voxel_spacing_A": 7.84},
    "level 0 only": lambda vol, vs, _: {"n_levels": 1},
    SCALE_LARGER: lambda vol, vs, _: scaled(vol, vs, 1 + SCALE_OFF),
    SCALE_SMALLER: lambda vol, vs, _: scaled(vol, vs, 1 - SCALE_OFF),
    RAMP: lambda vol, vs, _: ramped(vol, 2.0),
    RAMP_WEAK: lambda vol, vs, _: ramped(vol, 0.5),
    "bright protein": lambda vol, vs, _: {"data_zyx": -vol},
    "int8": lambda vol, vs, _: {"data_zyx": (vol - vol.mean()) / vol.std() * 20,
                                "dtype": np.int8},
    "tilted about x": lambda vol, vs, _: {
        "data_zyx": np.ascontiguousarray(vol.transpose(0, 2, 1))},
    BLANK: lambda vol, vs, _: {"data_zyx": blanked(vol, vol.mean())},
    BLANK_ZERO: lambda vol, vs, _: {"data_zyx": blanked(vol, 0.0)},
    THICKER: lambda vol, vs, truth: {
        "data_zyx": with_own_vacuum(vol, free_slices(*truth, vol.shape[0], vs))},
    THICKER_NOISE: lambda vol, vs, _: {"data_zyx": thicker(vol)},
    INCLINED: lambda vol, vs, _: {"data_zyx": inclined(vol)},
    HOT: lambda vol, vs, _: {"data_zyx": with_hot_voxels(vol)},
    TINY_UNITS: lambda vol, vs, _: {"data_zyx": vol * np.float32(1e-20)},
}


def write_variant(src: CopickProject, dest: Path, name: str) -> CopickProject:
    project = copy_without_tomograms(src, dest)
    for run in src.runs():
        folder_A = src.voxel_spacings(run)[0]  # 10.000 here; the tilt series' 20.024
        t = src.read_tomogram(run, folder_A)
        vol, vs = t.data, t.voxel_size_A
        kw = VARIANT_ARGUMENTS[name](vol, vs, (src, run))
        project.write_tomogram(run, **({"data_zyx": vol, "voxel_size_A": vs,
                                        "voxel_spacing_A": folder_A,
                                        "origin_A": t.origin_A} | kw))
        if name == "tilted about x":
            for particle, pts in src.read_picks(run).items():
                project.write_picks(run, particle, pts[:, [1, 0, 2]])
        if name in (BLANK, BLANK_ZERO):  # a particle the blank touches is not there to find
            edge_A = vol.shape[2] // BLANK_SHARE * vs
            for particle, pts in src.read_picks(run).items():
                keep = pts[:, 0] > edge_A + src.particles[particle].radius_A
                project.write_picks(run, particle, pts[keep])
        if name == INCLINED:
            for particle, pts in src.read_picks(run).items():
                project.write_picks(run, particle, inclined_picks(
                    pts, vol.shape, vs, src.particles[particle].radius_A))
        if name in (THICKER, THICKER_NOISE):  # the same particles, deeper by the slices added above
            shift_xyz_A = np.array([0.0, 0.0, vol.shape[0] // PAD_SHARE * vs])
            for particle, pts in src.read_picks(run).items():
                project.write_picks(run, particle, pts + shift_xyz_A)
    return project


VARIANTS = ("unchanged", "VoxelSpacing10.012", "13.48 Å", "7.84 Å", SCALE_LARGER, SCALE_SMALLER,
            "level 0 only", RAMP, RAMP_WEAK,
            "bright protein", "int8", "tilted about x", *MRC_VARIANTS, BLANK, BLANK_ZERO, THICKER,
            THICKER_NOISE, INCLINED, HOT, TINY_UNITS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--work", default="/tmp/input_variants")
    ap.add_argument("--json")
    ap.add_argument("--only", nargs="+", choices=VARIANTS,
                    help="these variants (and the unchanged runs) only")
    ap.add_argument("--spacing-tolerance", type=float,
                    help="read a level as it is within this share of the working grid "
                         f"(default {tomo_input.SPACING_TOLERANCE}), else resample it")
    a = ap.parse_args(argv)
    if a.spacing_tolerance is not None:
        tomo_input.SPACING_TOLERANCE = a.spacing_tolerance
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    checkpoint = a.checkpoint or str(DEFAULT_CHECKPOINT)
    src = CopickProject(a.project)
    results = {}
    for name in [n for n in VARIANTS if a.only is None or n == "unchanged" or n in a.only]:
        dest = Path(a.work) / "".join(c if c.isalnum() else "_" for c in name)
        cost = {}
        if name in MRC_VARIANTS:
            project, cost = imported_mrc_variant(src, dest, name)
        else:
            project = write_variant(src, dest, name)
        results[name] = bench_project(str(project.path), checkpoint, "cpu") | cost
        print(f"{name}: {results[name]['score']:.4f} {cost or ''}", flush=True)
    base = results["unchanged"]["score"]
    print(f"\n{len(src.runs())} run(s) of {a.project}, checkpoint {checkpoint}\n")
    print("| variant | " + " | ".join(SCORED) + " | weighted F4 | Δ |")
    print("|---|" + "---|" * (len(SCORED) + 2))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r['per_class'][k]:.3f}" for k in SCORED)
              + f" | **{r['score']:.3f}** | {r['score'] - base:+.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
