"""Synthetic cryo-ET projects in the competition layout, with ground truth.

    python -m data_tools.simulate --out DIR --runs N --seed S [--shape Z Y X] [--snr LO HI]
                                  [--ranges JSON...] [--physics fast|tilt]
                                  [--tilt-ranges JSON...]

Each run draws its own physics from wide ranges (SNR, defocus, B-factor, blur, ice thickness,
crowding, membranes, gold, tilt range, contrast scale and offset; on request carbon film edges
and ice contamination, data_tools/hard_negatives.py), so a detector trained on it cannot lean
on one look. Imaging, "fast": density → missing wedge (tilt about y) ×
phase-flipped CTF with an envelope, plus noise through the wedge, then a mild Gaussian
"denoising"; protein is darker. "tilt": a tilt series reconstructed by weighted
back-projection (data_tools/tilt_series.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft

from data_tools.atomic import atomic_path
from data_tools.cli_args import at_least, expand_home
from data_tools.coords import zyx_vox_to_xyz_A
from data_tools.copick_io import CopickProject
from data_tools.datasets import layered_ranges
from data_tools.denoisers import denoise
from data_tools.particles import DataError, ParticleTable
from data_tools.scene import EXTRA_NAMES, FULL_SHAPE_ZYX, VOXEL_SIZE_A, render_scene
from data_tools.sim_ranges import SimRanges, draw_run_params
from data_tools.sim_records import like_run, write_records
from data_tools.tilt_ranges import TiltRanges
from data_tools.tilt_series import ELECTRON_WAVELENGTH_A, reconstruct_with_halves, reconstructed_at
from data_tools.zarr_levels import bin_mean

BIN2_ORIGIN_A = VOXEL_SIZE_A / 2  # a 2× mean-binned voxel 0 covers full voxels 0 and 1
PHYSICS = ("fast", "tilt")


def simulate_run(run: str, shape_zyx, particles: ParticleTable, ranges: SimRanges,
                 seed: list[int], voxel_size_A: float = VOXEL_SIZE_A):
    """Returns (tomogram z,y,x float32, {particle: centres [N,3] x,y,z Å}, drawn parameters)."""
    rng = np.random.default_rng(seed)
    p = draw_run_params(ranges, rng, seed)
    density, picks, extra = render_scene(shape_zyx, particles, p, rng, voxel_size_A)
    tomo = image(density, p, voxel_size_A, rng, extra)
    picks_A = {k: zyx_vox_to_xyz_A(np.array(v).reshape(-1, 3), voxel_size_A)
               for k, v in picks.items()}
    return tomo, picks_A, p


def reconstruct_laterally_infinite(density: np.ndarray, voxel_A: float, p: dict, t: dict,
                                   rng: np.random.Generator,
                                   extra: np.ndarray | None = None,
                                   noise_sigma: float | None = None
                                   ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None, float]:
    """A specimen is far wider than the field: rays tilted through the volume's x edges
    cross ice outside it. The density is padded in x with its own ice profile far enough
    for the largest tilt, reconstructed, and cropped back; else the edges of the WBP carry
    bands that no real tomogram has. Returns reconstruct_with_halves' (volume, halves,
    noise scale); `noise_sigma` is its."""
    Z, Y, X = density.shape
    margin = int(min(X, np.ceil(Z * np.tan(np.radians(p["tilt_max_deg"])))))
    ice = np.median(density[:, ::4, ::4], axis=(1, 2)).astype(np.float32)
    side = np.broadcast_to(ice[:, None, None], (Z, Y, margin))
    padded = np.concatenate([side, density, side], axis=2)
    if extra is not None:
        extra = np.pad(extra, ((0, 0), (0, 0), (margin, margin)))
    vol, halves, sigma = reconstruct_with_halves(padded, voxel_A, p, t, rng, extra,
                                                 noise_sigma)

    def crop(v):
        return np.ascontiguousarray(v[:, :, margin:margin + X])

    return crop(vol), (tuple(crop(h) for h in halves) if halves is not None else None), sigma


def simulate_tilt_run(run: str, shape_zyx, particles: ParticleTable, ranges: SimRanges,
                      tilt: TiltRanges, seed: list[int]) -> tuple[dict, dict, dict]:
    """The scene of simulate_run, imaged as a tilt series at 2× binning (20.024 Å; or on
    the full grid, TiltRanges.form_bin) and reconstructed (data_tools/tilt_series.py).
    Returns ({"wbp": vol, "denoised": vol}, "sirt" instead of "wbp" where the tilt ranges
    ask for a SIRT-like reconstruction), picks x,y,z Å, drawn parameters); at 2× binning
    the volumes' voxel 0 centre is at BIN2_ORIGIN_A."""
    rng = np.random.default_rng(seed)
    p = draw_run_params(ranges, rng, seed)
    density, picks, extra = render_scene(shape_zyx, particles, p, rng)
    t = tilt.draw(np.random.default_rng([*seed, 7]))
    b = t.get("form_bin", 2)
    t_grid = _on_grid(t, b)
    noise_sigma = _twin_dose(density, p, t, rng) if b == 1 else None
    binned = bin_mean(density, b) if b > 1 else density
    del density
    if extra is not None and b > 1:
        extra = bin_mean(extra, b)
    wbp, halves, _ = reconstruct_laterally_infinite(binned, b * VOXEL_SIZE_A, p, t_grid, rng,
                                                    extra, noise_sigma)
    std = float(wbp.std()) or 1.0

    def contrast(v):
        return (v / std + np.float32(p["contrast_offset"])) * np.float32(p["contrast_scale"])

    wbp = contrast(wbp)
    raw_kind = "sirt" if t.get("sirt_iterations", 0) else "wbp"
    tomos = {raw_kind: wbp, "denoised": denoise(wbp, t["denoiser"], t_grid["denoise_sigma_vox"],
                                                b * VOXEL_SIZE_A, p["defocus_um"],
                                                t["amp_contrast"])}
    if halves is not None:
        tomos |= {f"{raw_kind}-even": contrast(halves[0]), f"{raw_kind}-odd": contrast(halves[1])}
    # A rotated tilt axis moves where each particle reconstructs; picks follow the density.
    centre = (np.array(shape_zyx, np.float64) - 1) / 2
    picks_A = {k: zyx_vox_to_xyz_A(reconstructed_at(np.array(v).reshape(-1, 3), centre,
                                                    b * VOXEL_SIZE_A, binned.shape[0], p,
                                                    t_grid), VOXEL_SIZE_A)
               for k, v in picks.items()}
    return tomos, picks_A, p | {"tilt": t}


# A 10 Å detector pixel gets a quarter of a 20 Å one's electrons, so twice its noise; and a
# ray through the 10 Å grid sums twice the voxels, so twice the signal: the same dose is
# four times the 20 Å noise scale in the simulator's units (tests/test_tilt_series.py
# checks the low band's S/N of the two grids agree).
FULL_GRID_NOISE_PER_20A = 4.0


def _twin_dose(density: np.ndarray, p: dict, t: dict, rng: np.random.Generator) -> float:
    """The noise scale for the full 10 Å grid at the dose of the run's 20 Å twin (the one
    form_bin 2 draws from the same seed, whose noise p["snr"] sets): the run's SNR means
    the same microscope session on either grid, not the same number on each. The hard
    negatives and the halves are left out: neither enters the noise scale nor draws from
    `rng`, so the scale is the twin's without their back-projections."""
    import copy

    plain = {k: v for k, v in t.items() if k != "halves_seed"}
    *_, sigma_20 = reconstruct_laterally_infinite(bin_mean(density, 2), 2 * VOXEL_SIZE_A, p,
                                                  plain, copy.deepcopy(rng))
    return FULL_GRID_NOISE_PER_20A * sigma_20


def _on_grid(t: dict, b: int) -> dict:
    """TiltRanges.draw()'s values with those in voxels (stated on the 20 Å grid) on a grid
    binned `b`x: the same Å. The median's 3³ and the other denoisers' strengths are not
    widths and stay."""
    if b == 2:
        return t
    out = dict(t, align_sigma_vox=t["align_sigma_vox"] * 2 / b)
    if t["denoiser"] in ("gaussian", "lowpass"):
        out["denoise_sigma_vox"] = t["denoise_sigma_vox"] * 2 / b
    return out


def image(density: np.ndarray, p: dict, voxel_size_A: float,
          rng: np.random.Generator, extra: np.ndarray | None = None) -> np.ndarray:
    """Density → tomogram: wedge, CTF, envelope, noise at the drawn SNR, blur, sign, contrast.
    `extra` (the hard negatives) is imaged alike but left out of the SNR: the noise is the
    one `density` alone would get."""
    shape = density.shape
    spec = scipy.fft.rfftn(density, workers=-1)
    del density
    kz = scipy.fft.fftfreq(shape[0]).astype(np.float32)[:, None, None] / voxel_size_A
    ky = scipy.fft.fftfreq(shape[1]).astype(np.float32)[None, :, None] / voxel_size_A
    kx = scipy.fft.rfftfreq(shape[2]).astype(np.float32)[None, None, :] / voxel_size_A
    k2 = kz**2 + ky**2 + kx**2
    # Missing wedge: a tilt series about y measures |kz| <= tan(tilt_max) * |kx| (soft edge).
    ang_deg = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))
    wedge = 0.5 * (1 + np.tanh((np.float32(p["tilt_max_deg"]) - ang_deg) / np.float32(2.0)))
    del ang_deg
    chi = np.float32(np.pi * ELECTRON_WAVELENGTH_A * p["defocus_um"] * 1e4) * k2
    ctf = np.abs(np.float32(0.995) * np.sin(chi) + np.float32(0.1) * np.cos(chi))
    ctf = np.sqrt(ctf**2 + np.float32(p["ctf_floor"]) ** 2)  # partial CTF deconvolution
    envelope = np.exp(-np.float32(p["bfactor_A2"] / 4) * k2)
    blur = np.exp(-np.float32(2 * np.pi**2 * p["blur_vox"] ** 2 * voxel_size_A**2) * k2)
    sig_filter = (wedge * ctf * envelope * blur).astype(np.float32)
    noise_filter = (wedge * blur).astype(np.float32)
    sig_filter[0, 0, 0] = 0.0
    noise_filter[0, 0, 0] = 0.0
    del chi, ctf, envelope, k2
    spec *= sig_filter
    noise = (rng.standard_normal(spec.shape, dtype=np.float32)
             + 1j * rng.standard_normal(spec.shape, dtype=np.float32)).astype(np.complex64)
    noise *= noise_filter
    # Parseval: the ratio of the two spectra's energies is the variance ratio in real space.
    # The flat ice slab's power lies on the kz axis alone (kx = ky = 0). A missing wedge
    # removes all of it; without one (a tilt range near 90°, the wedge-filled look of
    # IsoNet-corrected tomograms) it would dwarf the particles' and set the noise ten times
    # higher. Left out, the SNR means the same at every tilt range (and is unchanged, to
    # the bit, where a wedge removed the axis).
    sig_pow = float(np.sum(np.abs(spec) ** 2)) - float(np.sum(np.abs(spec[:, 0, 0]) ** 2))
    noise_pow = float(np.sum(np.abs(noise) ** 2))
    sigma = np.sqrt(sig_pow / max(noise_pow, 1e-30)) / p["snr"]
    if extra is not None:
        spec += scipy.fft.rfftn(extra, workers=-1) * sig_filter
    spec += np.complex64(sigma) * noise
    del noise
    vol = scipy.fft.irfftn(spec, s=shape, workers=-1).astype(np.float32)
    del spec
    vol *= -1.0  # dense protein is dark
    std = float(vol.std()) or 1.0
    vol = (vol / std + np.float32(p["contrast_offset"])) * np.float32(p["contrast_scale"])
    return vol.astype(np.float32)


def simulate_project(out: str | Path, n_runs: int, seed: int, shape_zyx=FULL_SHAPE_ZYX,
                     ranges: SimRanges | None = None, run_prefix: str = "TS_sim",
                     progress: bool = True, physics: str = "fast",
                     tilt: TiltRanges | None = None,
                     indices: list[int] | None = None,
                     extra_particles: tuple[str, ...] = ()) -> CopickProject:
    """Writes a complete copick project with picks, copick_config.json, solution.csv and
    simulation.json (every run's drawn parameters). physics "fast": the 3-D Fourier imaging
    model, 10 Å with a 3-level pyramid; "tilt": a tilt series reconstructed by WBP
    (data_tools/tilt_series.py), written as `wbp` and `denoised` at 20.024 Å, 2 levels
    (with TiltRanges.form_bin 1: at 10.012 Å, 3 levels, as "fast" is).
    Run i draws from its own stream [seed, i], so `indices` (default 0..n_runs-1) makes any
    subset of a seed's runs exactly as the whole batch would. `extra_particles`: complexes
    of EXTRA_PARTICLES drawn beside the competition's, and listed in the config."""
    from tqdm import tqdm

    ranges = ranges or SimRanges()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    particles = ParticleTable.competition(extra_particles)
    (out / "static").mkdir(exist_ok=True)
    (out / "overlay").mkdir(exist_ok=True)
    project = CopickProject(out, particles)
    project.write_config(f"simulated (seed {seed})")
    if physics not in PHYSICS:
        raise ValueError(f"physics must be one of {PHYSICS}, got {physics!r}")
    tilt = tilt or TiltRanges()
    rows, record = [], {"seed": seed, "shape_zyx": list(shape_zyx), "ranges": asdict(ranges),
                        "physics": physics, "runs": {}}
    if extra_particles:
        record["extra_particles"] = list(extra_particles)
    if physics == "tilt":
        record["tilt_ranges"] = tilt.to_dict()
    indices = list(range(n_runs)) if indices is None else list(indices)
    for i in tqdm(indices, desc="simulate", unit="run", disable=not progress):
        run = f"{run_prefix}_{seed}_{i:03d}"
        if physics == "tilt":
            tomos, picks, params = simulate_tilt_run(run, shape_zyx, particles, ranges, tilt,
                                                     [seed, i])
            for kind, vol in tomos.items():
                if tilt.form_bin == 1:  # the full grid: written as the fast physics is
                    project.write_tomogram(run, vol, VOXEL_SIZE_A, kind)
                else:
                    project.write_tomogram(run, vol, 2 * VOXEL_SIZE_A, kind, 2 * VOXEL_SIZE_A,
                                           n_levels=2, origin_A=BIN2_ORIGIN_A)
        else:
            tomo, picks, params = simulate_run(run, shape_zyx, particles, ranges, [seed, i])
            project.write_tomogram(run, tomo, VOXEL_SIZE_A)
        for name, pts in picks.items():
            project.write_picks(run, name, pts)
            rows += [(run, name, *xyz) for xyz in pts]
        record["runs"][run] = params
    write_records(out, pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y",
                                                    "z"]), record)
    return project


def ensure_project(out: str | Path, n_runs: int, seed: int, shape_zyx=FULL_SHAPE_ZYX,
                   ranges: SimRanges | None = None, progress: bool = True) -> CopickProject:
    """The project at `out`, simulated first when it is missing: written under a temporary
    name and renamed, so a killed job never leaves half a project behind."""
    out = Path(out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, overwrite=False) as tmp:
            simulate_project(tmp, n_runs, seed, shape_zyx, ranges, progress=progress)
        # copick_config.json names absolute roots: point them at the final folder.
        CopickProject(out, ParticleTable.competition()).write_config(f"simulated (seed {seed})")
    return CopickProject(out)


def _layers(values: list[str] | None) -> list:
    """Command-line ranges layers: an inline JSON object where one starts with "{", else a
    JSON file's path."""
    layers = []
    for v in values or []:
        if not v.lstrip().startswith("{"):
            layers.append(v)
            continue
        try:
            layers.append(json.loads(v))
        except ValueError as exc:
            raise DataError(f"inline ranges {v!r} are not JSON: {exc}") from exc
    return layers


def _from_layers(option: str, values: list[str] | None, build):
    """build(the merged layers of `option`); an error names the option and its layers."""
    try:
        return build(layered_ranges(_layers(values), option, Path(".")))
    except DataError:
        raise
    except (ValueError, TypeError) as exc:
        raise DataError(f"{option} {' '.join(values or []) or '(--snr)'}: {exc}") from exc


def _ranges_from_arguments(a: argparse.Namespace) -> tuple[SimRanges, TiltRanges] | None:
    """The ranges --ranges, --snr and --tilt-ranges set; None (the error printed, naming
    the option and its layers) where a layer is unreadable or wrong."""
    snr = {"snr": a.snr} if a.snr else {}
    try:
        ranges = _from_layers("--ranges", a.ranges, lambda layered: SimRanges.from_dict(
            {**asdict(SimRanges()), **layered, **snr}))
        tilt = _from_layers("--tilt-ranges", a.tilt_ranges, TiltRanges.from_dict)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return ranges, tilt


# The picker reads an axis of 2 working voxels (4 of these 10 Å ones) or more.
MIN_SHAPE_VOX = 4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=at_least(1), default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", type=at_least(MIN_SHAPE_VOX), nargs=3, default=FULL_SHAPE_ZYX,
                    metavar=("Z", "Y", "X"))
    ap.add_argument("--snr", type=float, nargs=2, metavar=("LO", "HI"))
    ap.add_argument("--ranges", nargs="+", metavar="JSON",
                    help="JSON files or inline objects overriding SimRanges fields, layered "
                    'in order, e.g. bench/heldout_lowsnr.json \'{"bfactor_A2": [1500, 2500]}\'')
    ap.add_argument("--tilt-ranges", nargs="+", metavar="JSON",
                    help="the same for TiltRanges fields (tilt physics), e.g. "
                    'configs/tilt_ranges_wide.json \'{"dose_weighting": true}\'')
    ap.add_argument("--prefix", default="TS_sim")
    ap.add_argument("--physics", choices=PHYSICS, default="fast",
                    help="fast: 3-D Fourier imaging model at 10 Å; tilt: tilt series, CTF per "
                         "tilt, WBP, written as wbp and denoised at 20 Å")
    ap.add_argument("--like", nargs=2, metavar=("PROJECT", "RUN"),
                    help="draw every parameter as this simulated run was (its project's "
                         "simulation.json): new placements and noise, the same physics, "
                         "shape and image formation (and the project's complexes beyond "
                         "the competition's); --ranges, --tilt-ranges, --snr, "
                         "--physics and --shape are then not read")
    ap.add_argument("--extra-particles", nargs="+", default=[], metavar="NAME",
                    help="complexes drawn beside the competition's, e.g. proteasome (a "
                         "class no checkpoint has learnt)")
    ap.add_argument("--quiet", action="store_true")
    a = expand_home(ap.parse_args(argv))
    extra = tuple(a.extra_particles)
    if a.like:
        try:
            ranges, tilt, physics, shape = like_run(*a.like)
            # The run's complexes beyond the competition's, as its project's config lists.
            extra = extra or tuple(n for n in CopickProject(a.like[0]).particles.names
                                   if n in EXTRA_NAMES)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        parsed = _ranges_from_arguments(a)
        if parsed is None:
            return 2
        (ranges, tilt), physics, shape = parsed, a.physics, tuple(a.shape)
    try:
        ParticleTable.competition(extra)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    simulate_project(a.out, a.runs, a.seed, shape, ranges, a.prefix,
                     progress=not a.quiet and sys.stderr.isatty(), physics=physics,
                     tilt=tilt, extra_particles=extra)
    like = f" like {a.like[1]}" if a.like else ""
    print(f"wrote {a.runs} run(s){like} to {a.out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
