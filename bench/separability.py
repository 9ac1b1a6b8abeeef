"""How well an input treatment separates two classes across runs, without a network.

For each treatment of the tomogram (clip level, spectral whitening at a reference sigma, or
whitening only part of the way), every annotated particle's radial profile (working grid,
out to 1.5 thyroglobulin radii, the same radius for every class so profiles compare) is
projected on a template: class A's mean profile minus class B's (B may be `background`,
random points), taken on the *reference run*. d' is the two classes' separation in pooled
standard deviations. A template that separates on the run it was taken from but not on
others reads a run-specific appearance (blur, B-factor, denoiser), which is what a network
trained on some runs and applied to others suffers from; each run's own template (matched,
in brackets) is the upper bound.

    python bench/separability.py --reference data/heldout_in:TS_sim_2024_000 \
        --project data/heldout_in data/heldout_lowsnr data/heldout_tilt
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.visibility import radial_profiles, shell_voxels
from data_tools import spectrum
from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.features import robust_normalise
from data_tools.tomo_input import read_working

N_BACKGROUND = 400
PROFILE_RADIUS_A = 1.5 * 130.0  # 1.5 thyroglobulin radii, for every class
PAIRS = (("beta-galactosidase", "thyroglobulin"), ("beta-galactosidase", "background"),
         ("apo-ferritin", "background"))


def treatments(v: np.ndarray, voxel_A: float, sigmas_A: list[float], powers: list[float]
               ) -> dict[str, np.ndarray]:
    """The normalised volume `v` as each treatment hands it on, keyed by name."""
    out = {"clip 6": np.clip(v, -6, 6), "clip 20": np.clip(v, -20, 20)}
    for s_A in sigmas_A:
        for p in powers:
            w = spectrum.whiten(v, s_A / voxel_A, power=p)
            name = f"whiten {s_A:g} A" + ("" if p == 1.0 else f" ^{p:g}") + ", clip 20"
            out[name] = np.clip(robust_normalise(w, name), -20, 20)
    return out


def run_profiles(project: CopickProject, run: str, *, tomo_type: str, working_A: float,
                 sigmas_A: list[float], powers: list[float]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """{treatment: {class or 'background': profiles (n, radii)}} for one run."""
    tomo, _ = read_working(project, run, tomo_type=tomo_type, type_fallback=True,
                           working_A=working_A)
    v = robust_normalise(tomo.data, f"{run}: {tomo.path}")
    picks = project.read_picks(run)
    rmax = int(np.ceil(PROFILE_RADIUS_A / tomo.voxel_size_A))
    rng = np.random.default_rng(0)
    bg_at = rng.uniform(rmax, np.array(v.shape) - rmax - 1, size=(N_BACKGROUND, 3))
    wanted = {a for pair in PAIRS for a in pair} - {"background"}
    out = {}
    for name, vol in treatments(v, tomo.voxel_size_A, sigmas_A, powers).items():
        d = {"background": radial_profiles(vol, bg_at, rmax)}
        for cls in wanted & set(picks):
            zyx = xyz_A_to_zyx_vox(picks[cls], tomo.voxel_size_A, tomo.origin_A)
            d[cls] = radial_profiles(vol, zyx, rmax)
        out[name] = d
    return out


def dprime(a: np.ndarray, b: np.ndarray, template: np.ndarray) -> float:
    sa, sb = a @ template, b @ template
    return float((sa.mean() - sb.mean()) / np.sqrt(0.5 * (sa.var() + sb.var()) + 1e-30))


def template(profiles: dict[str, np.ndarray], a: str, b: str) -> np.ndarray:
    rmax = profiles[a].shape[1] - 1
    return (profiles[a].mean(0) - profiles[b].mean(0)) * shell_voxels(rmax)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, metavar="PROJECT:RUN",
                    help="the run every template is taken from")
    ap.add_argument("--project", nargs="+", required=True, help="projects to apply it to")
    ap.add_argument("--tomo-type", default="denoised")
    ap.add_argument("--working-A", type=float, default=20.0)
    ap.add_argument("--sigmas-A", type=float, nargs="+", default=[20.0, 30.0, 40.0])
    ap.add_argument("--powers", type=float, nargs="+", default=[1.0, 0.5],
                    help="whitening powers (1 = full; data_tools.spectrum.whiten)")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    ref_project, ref_run = a.reference.rsplit(":", 1)
    kw = {"tomo_type": a.tomo_type, "working_A": a.working_A, "sigmas_A": a.sigmas_A,
          "powers": a.powers}
    ref = run_profiles(CopickProject(ref_project), ref_run, **kw)
    others = []
    for path in a.project:
        p = CopickProject(path)
        others += [(run, run_profiles(p, run, **kw)) for run in p.runs() if run != ref_run]
    for cls_a, cls_b in PAIRS:
        print(f"\n{cls_a} against {cls_b}: d' with the template from {ref_run} "
              f"(each run's own in brackets)")
        print("| treatment | " + " | ".join(run for run, _ in others) + " | mean |")
        print("|---|" + "---|" * (len(others) + 1))
        for name, ref_prof in ref.items():
            t = template(ref_prof, cls_a, cls_b)
            cells, ds = [], []
            for _, res in others:
                pr = res[name]
                if cls_a not in pr or cls_b not in pr:
                    cells.append("–")
                    continue
                ds.append(dprime(pr[cls_a], pr[cls_b], t))
                own = dprime(pr[cls_a], pr[cls_b], template(pr, cls_a, cls_b))
                cells.append(f"{ds[-1]:.2f} ({own:.2f})")
            print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(ds):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
