"""How the input's radial amplitude spectrum moves between families, as a checkpoint reads it.

    python bench/spectra.py --project DIR [--project DIR ...] [--runs RUN ...]
        [--checkpoint PT] [--save-median OUT.npy] [--json OUT.json]

Each run is read as the checkpoint's sparsifier reads it (type, level, working grid),
robustly normalised, and its mean amplitude per frequency shell scaled to unit RMS
(data_tools.spectrum.unit_profile). The table prints the profile at a few wavelengths: a
blurred, B-factor-damped or strongly denoised tomogram has little above 1/60 Å^-1. With
--save-median, the median profile of the runs is written (a spectrum reference).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.datasets import require_projects

WAVELENGTHS_A = (300, 160, 100, 80, 60, 50, 45)


def profile_of(project, run: str, cfg) -> np.ndarray:
    from data_tools.features import robust_normalise
    from data_tools.sparsify import read_input
    from data_tools.spectrum import shell_amplitude, unit_profile

    tomo, _ = read_input(project, run, cfg)
    x = robust_normalise(np.asarray(tomo.data, np.float32), f"{run}")
    return unit_profile(shell_amplitude(x))


def shells_at(wavelengths_A, voxel_A: float) -> list[int]:
    from data_tools.spectrum import N_SHELLS

    return [min(int(voxel_A / w * 2 * N_SHELLS), N_SHELLS) for w in wavelengths_A]


def main(argv: list[str] | None = None) -> int:
    from data_tools.copick_io import CopickProject
    from sparse_det.argfile import ArgumentFileParser
    from sparse_det.checkpoint import load_checkpoint

    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--runs", nargs="*")
    ap.add_argument("--checkpoint", default="sparse_det/checkpoints/default.pt")
    ap.add_argument("--save-median")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    cfg = load_checkpoint(a.checkpoint).config.sparsify
    voxel_A = cfg.working_spacing_A
    cols = shells_at(WAVELENGTHS_A, voxel_A)
    print("run".ljust(28) + "".join(f"{w:>7} Å" for w in WAVELENGTHS_A))
    rows = {}
    for p in a.project:
        project = CopickProject(p)
        for run in project.runs():
            if a.runs and run not in a.runs:
                continue
            prof = profile_of(project, run, cfg)
            rows[run] = prof.tolist()
            print(run.ljust(28) + "".join(f"{prof[c]:9.3f}" for c in cols), flush=True)
    if not rows:
        print("error: no runs matched", file=sys.stderr)
        return 2
    med = np.median(np.array(list(rows.values())), axis=0)
    print("median".ljust(28) + "".join(f"{med[c]:9.3f}" for c in cols))
    if a.save_median:
        np.save(a.save_median, med)
    if a.json:
        Path(a.json).write_text(json.dumps({"voxel_A": voxel_A, "profiles": rows}))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
