"""The held-out runs denoised the ways people denoise tomograms, then picked: prints a markdown
table of weighted F4 per project and denoiser, and (--json) what bench/detector.py's
bench_project measures of each copy (each run's score for `bench/compare.py`).

    python bench/denoisers.py @configs/heldout_21.args [--checkpoint PT]
        [--denoisers none median diffusion] [--work /tmp/denoisers] [--json OUT.json]

Each run's raw back-projection (`wbp`) is denoised where the run has one, as users denoise
their reconstructions; otherwise its `denoised` tomogram is (a second pass). The filters are
`data_tools.denoisers.denoise`'s at `--sigma` (in 20 Å voxels; scaled to the tomogram's
own voxels): `none` (the source as it is), `gaussian`, `lowpass`, `median` (3 voxels at 20 Å,
5 at 10 Å) and `diffusion` (Perona-Malik). Whitening cancels most of a linear filter
(docs/experiments.md, *Why denoising `wbp` hardly matters*); the non-linear ones, median and
diffusion, are the test. `n2n` is cryoCARE's way (data_tools/n2n.py): a U-Net trained per
run on its frame-split halves (`wbp-even`, `wbp-odd`: simulated with TiltRanges.halves,
configs/datasets.yaml's heldout_halves), applied to both and averaged; --sigma does not
apply to it, --n2n-steps sets its training (about 0.5 s a step on 2 cores). `general` is
one network trained across other runs' halves (`python -m data_tools.n2n`, Topaz-Denoise's
way; `--general PATH`), applied to each run's `wbp`. Each copy of a
project has only its tomograms rewritten, and stays under --work for the next checkpoint
(remove --work when done).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.detector import bench_project  # noqa: E402
from data_tools.copick_io import CopickProject, copy_without_tomograms  # noqa: E402
from data_tools.datasets import require_projects  # noqa: E402
from data_tools.denoisers import denoise  # noqa: E402
from data_tools.tilt_ranges import ALL_DENOISERS  # noqa: E402

SCORED = ["apo-ferritin", "beta-galactosidase", "ribosome", "thyroglobulin",
          "virus-like-particle"]
WORKING_A = 20.0  # the simulator denoises at 20 Å; --sigma is in those voxels


def denoise_at(vol: np.ndarray, how: str, sigma_20: float, voxel_A: float) -> np.ndarray:
    """`denoise` with its strength kept in Å on a grid of `voxel_A`."""
    from scipy import ndimage

    f = max(1, round(WORKING_A / voxel_A))
    if how == "median" and f > 1:
        return ndimage.median_filter(vol, size=2 * f + 1).astype(np.float32)
    if how == "diffusion":  # diffusion spreads as the square root of its steps
        return denoise(vol, how, sigma_20 * f * f)
    return denoise(vol, how, sigma_20 * f, voxel_A)


def n2n_denoised(src: CopickProject, run: str, spacing_A: float, steps: int):
    """(the run's halves denoised cryoCARE's way, their voxel size in Å)."""
    from data_tools.n2n import N2NConfig, denoise_n2n, halves_of

    even, odd, voxel_A = halves_of(src, run)
    print(f"{run}: training the n2n denoiser on its halves {even.shape}", flush=True)
    vol = denoise_n2n(even, odd, N2NConfig(steps=steps), log=lambda m: print(f"  {m}", flush=True))
    return vol, voxel_A


def denoised_copy(src: CopickProject, dest: Path, how: str, sigma_20: float,
                  n2n_steps: int = 500, general: str | None = None) -> CopickProject:
    """The copy, made unless a finished one is there (comparing checkpoints reuses it).
    how == "general": the general denoiser saved at `general` (data_tools.n2n)."""
    done = dest / ".denoised"
    if done.exists():
        return CopickProject(dest)
    project = copy_without_tomograms(src, dest)
    if how == "general":
        from data_tools.n2n import denoise_general, load_general

        net = load_general(general)
    for run in src.runs():
        spacing_A = src.voxel_spacings(run)[0]
        if how == "n2n":
            vol, voxel_A = n2n_denoised(src, run, spacing_A, n2n_steps)
        else:
            kind = "wbp" if "wbp" in src.tomogram_types(run, spacing_A) else "denoised"
            t = src.read_tomogram(run, spacing_A, kind)
            vol, voxel_A = np.asarray(t.data, np.float32), t.voxel_size_A
            if how == "general":
                vol = denoise_general(net, vol, voxel_A)
            else:
                vol = denoise_at(vol, how, sigma_20, voxel_A)
        project.write_tomogram(run, vol, voxel_size_A=voxel_A, voxel_spacing_A=spacing_A)
    done.touch()
    return project


def _parser():
    from sparse_det.argfile import ArgumentFileParser

    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--denoisers", nargs="+", default=["none", "median", "diffusion"],
                    choices=["none", "n2n", "general",
                             *sorted(set(ALL_DENOISERS) - {"none", "deconv"})])
    ap.add_argument("--general", help="`general`: a general denoiser's weights (python -m "
                                      "data_tools.n2n), applied to each run's wbp")
    ap.add_argument("--n2n-steps", type=int, default=500,
                    help="training steps of the n2n denoiser, per run")
    ap.add_argument("--sigma", type=float, default=1.0,
                    help="denoising strength in 20 Å voxels (the simulator's 0.5-1.5)")
    ap.add_argument("--no-rescore", action="store_true",
                    help="the network alone (a checkpoint's rescorer left out)")
    ap.add_argument("--work", default="/tmp/denoisers")
    ap.add_argument("--json", help="also write the results here: one entry per project and "
                                   "denoiser, as bench/detector.py --json writes them")
    return ap


def main(argv: list[str] | None = None) -> int:
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    ap = _parser()
    a = ap.parse_args(argv)
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    if "general" in a.denoisers and not a.general:
        ap.error("--denoisers general needs --general PATH")
    checkpoint = a.checkpoint or str(DEFAULT_CHECKPOINT)
    results = []
    for path in a.project:
        src = CopickProject(path)
        for how in a.denoisers:
            tag = f"{how}_{a.sigma:g}"
            if how == "n2n":
                tag = f"n2n_{a.n2n_steps}"
            elif how == "general":
                tag = f"general_{Path(a.general).stem}"
            copy = denoised_copy(src, Path(a.work) / tag / src.path.name, how, a.sigma,
                                 a.n2n_steps, a.general)
            scores = bench_project(str(copy.path), checkpoint, "cpu", rescore=not a.no_rescore)
            r = scores | {"project": f"{src.path.name}+{how}", "denoiser": how}
            results.append(r)
            print(f"{r['project']}: {r['score']:.4f} ({r['infer_s_per_tomogram']:.1f} s per "
                  "tomogram)", flush=True)
    alone = ", the network alone" if a.no_rescore else ""
    print(f"\ncheckpoint {checkpoint}{alone}, strength {a.sigma} (20 Å voxels)\n")
    print("| project | denoiser | " + " | ".join(SCORED) + " | weighted F4 |")
    print("|---|---|" + "---|" * (len(SCORED) + 1))
    for r in results:
        print(f"| {r['project'].split('+')[0]} | {r['denoiser']} | "
              + " | ".join(f"{r['per_class'][k]:.3f}" for k in SCORED)
              + f" | **{r['score']:.3f}** |")
    if a.json:
        from data_tools.atomic import atomic_path

        with atomic_path(Path(a.json)) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
