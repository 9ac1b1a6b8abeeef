"""What the grid a tilt series is formed on does to the picker's input: one simulated run's
scene and physics (`data_tools.sim_records.like_run`) imaged and reconstructed on the 20 Å grid
(TiltRanges.form_bin 2, every tilt family's) and on the full 10 Å grid (form_bin 1, as the
competition's tomograms are; then mean-binned 2x, as the picker reads them), and per
frequency shell of the 20 Å volume the signal's and the noise's amplitude.

    python bench/formation_grid.py --project data/heldout_tilt --run TS_tilt_701_003 \
        [--crop-yx 192] [--json OUT]

Signal and noise are separated by reconstructing twice with the same draws at SNR 1 and 2
(vol = signal + noise / snr); the full grid is formed at the 20 Å pass's dose, as
`data_tools.simulate` forms it (TiltRanges.form_bin), so the two rows are one microscope
session reconstructed on two grids: the lowest band's S/N should agree, and where the
others differ is what each grid's formation does to the signal and the noise. The field is
cropped in y and x (the full depth kept) to keep the 10 Å pass to a minute or two.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.particles import ParticleTable
from data_tools.scene import VOXEL_SIZE_A, render_scene
from data_tools.sim_ranges import draw_run_params
from data_tools.sim_records import like_run
from data_tools.simulate import FULL_GRID_NOISE_PER_20A, _on_grid, reconstruct_laterally_infinite
from data_tools.spectrum import N_SHELLS, shell_amplitude
from data_tools.zarr_levels import bin_mean

BANDS = ((0.02, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5))  # cycles per 20 Å voxel


def separated(density, extra, p, t, form_bin: int, sigma_20: float | None = None
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """(signal, noise, noise scale at SNR 1) of the run's reconstruction on the 20 Å grid
    when formed on `form_bin`'s grid (mean-binned to 20 Å after, as the picker reads a
    10 Å tomogram); the full grid at the dose of the 20 Å pass's `sigma_20`, as
    data_tools.simulate does."""
    if form_bin > 1:
        density = bin_mean(density, form_bin)
        extra = bin_mean(extra, form_bin) if extra is not None else None
    t_grid = _on_grid(t, form_bin)
    vols, sigmas = [], []
    for snr in (1.0, 2.0):
        sigma = None if sigma_20 is None else FULL_GRID_NOISE_PER_20A * sigma_20 / snr
        vol, _, used = reconstruct_laterally_infinite(
            density, form_bin * VOXEL_SIZE_A, p | {"snr": snr}, t_grid,
            np.random.default_rng(5), extra, sigma)
        vols.append(vol if form_bin == 2 else bin_mean(vol, 2))
        sigmas.append(used)
    signal = 2 * vols[1] - vols[0]
    return signal, vols[0] - signal, sigmas[0]


def band_means(amp: np.ndarray) -> list[float]:
    q = (np.arange(N_SHELLS + 1) + 0.5) / (2 * N_SHELLS)
    return [float(amp[(q >= lo) & (q < hi)].mean()) for lo, hi in BANDS]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--crop-yx", type=int, default=192, help="field kept in y and x (10 Å voxels)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    ranges, tilt, physics, shape = like_run(a.project, a.run)
    if physics != "tilt":
        print(f"error: {a.run} of {a.project} is not a tilt series", file=sys.stderr)
        return 2
    seed = [int(s) for s in a.run.rsplit("_", 2)[-2:]]
    rng = np.random.default_rng(seed)
    p = draw_run_params(ranges, rng, seed)
    density, _, extra = render_scene(tuple(shape), ParticleTable.competition(), p, rng)
    c = a.crop_yx
    density = density[:, :c, :c]
    extra = extra[:, :c, :c] if extra is not None else None
    t = tilt.draw(np.random.default_rng([*seed, 7]))
    rows, sigma_20 = {}, None
    for form_bin in (2, 1):
        signal, noise, sigma = separated(density, extra, p, t, form_bin, sigma_20)
        sigma_20 = sigma_20 or sigma
        s, n = shell_amplitude(signal), shell_amplitude(noise)
        rows[f"formed at {form_bin * 10} Å"] = {
            "snr_20A": float(signal.std() / noise.std()),
            "signal": band_means(s), "noise": band_means(n),
            "snr_by_band": [x / y for x, y in zip(band_means(s), band_means(n), strict=True)]}
    print(f"{a.run} (SNR {p['snr']:.2f}); amplitude per band of the 20 Å volume, "
          "bands in cycles per 20 Å voxel")
    print("| formed | whole-volume SNR | " + " | ".join(f"S/N {lo}-{hi}" for lo, hi in BANDS)
          + " |")
    print("|---|---|" + "---|" * len(BANDS))
    for name, r in rows.items():
        print(f"| {name} | {r['snr_20A']:.2f} | "
              + " | ".join(f"{v:.2f}" for v in r["snr_by_band"]) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"run": a.run, "project": a.project,
                                            "bands": BANDS, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
