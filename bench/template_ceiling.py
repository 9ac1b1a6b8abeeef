"""What a matched radial template that knows the annotations would score, per class and family.

`bench/visibility.py` says how far each particle stands out; this turns the same template
into a picker and scores it with the competition's metric, so a family's target can be
read against what its tomograms show. Per class: the template is the class's mean radial
profile around annotated centres minus the background's (working grid, out to 1.5 radii),
taken from the *other* runs of the same project (`--template family`: the physics known,
the run's own particles not; a one-run project falls back to its own) or from the run
itself (`own`: the most optimistic); the tomogram is correlated with it (FFT), local
maxima within half a radius are candidates, and one threshold per class — the F4-optimal
one over the project's runs, chosen on the answers — keeps them. It is an oracle twice
over (templates and thresholds from annotations), but a spherically averaged one: it
cannot read a shape's orientation, which a network can, so it bounds nothing from above
on elongated classes. Where it beats the network by a margin, the particles are there to
be found; where both are low, the input does not show them.

    python bench/template_ceiling.py --project data/heldout_ood [--project ...] \
        [--template family|own] [--working-A 20] [--json OUT]
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import fft, ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.visibility import N_BACKGROUND, radial_profiles, shell_radii
from data_tools.atomic import atomic_write_text
from data_tools.coords import xyz_A_to_zyx_vox, zyx_vox_to_xyz_A
from data_tools.copick_io import CopickProject
from data_tools.datasets import require_projects
from data_tools.features import robust_normalise
from data_tools.tomo_input import read_working
from sparse_det.argfile import ArgumentFileParser
from sparse_det.metric import DISTANCE_MULTIPLIER, ClassScore, fbeta, weighted_score
from sparse_det.thresholds import pr_curve

CLIP_SIGMA = 6.0  # the sparsifier's clip: gold and carbon would otherwise own the maps
MAX_CANDIDATES_PER_REF = 40  # the strongest local maxima kept per annotated particle


def template_kernel(profile: np.ndarray) -> np.ndarray:
    """A cube whose voxels carry `profile` at their integer radius, zero beyond it."""
    rmax = len(profile) - 1
    r = shell_radii(rmax)
    return np.where(r <= rmax, profile[np.minimum(r, rmax)], 0.0).astype(np.float32)


def correlate(vol: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`vol` correlated with the (point-symmetric) kernel, same shape, zero padded."""
    shape = [s + k - 1 for s, k in zip(vol.shape, kernel.shape, strict=True)]
    shape = [fft.next_fast_len(s, real=True) for s in shape]
    out = fft.irfftn(fft.rfftn(vol, shape) * fft.rfftn(kernel, shape), shape)
    h = [k // 2 for k in kernel.shape]
    return out[h[0]:h[0] + vol.shape[0], h[1]:h[1] + vol.shape[1],
               h[2]:h[2] + vol.shape[2]].astype(np.float32)


def local_maxima(score: np.ndarray, radius_vox: int, n_max: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(zyx [N,3], score [N]) of the strongest maxima within `radius_vox`. Peaks near the
    faces count too (particles touch the slab's faces; the volume is zero-padded at its
    median)."""
    peak = score == ndimage.maximum_filter(score, size=2 * radius_vox + 1, mode="nearest")
    zyx = np.argwhere(peak)
    s = score[tuple(zyx.T)]
    top = np.argsort(-s, kind="stable")[:n_max]
    return zyx[top].astype(np.float64), s[top]


class RunData:
    """One run read once: its normalised, clipped volume and its picks; profiles on demand."""

    def __init__(self, project: CopickProject, run: str, tomo_type: str, working_A: float,
                 seed: int):
        tomo, _ = read_working(project, run, tomo_type=tomo_type, type_fallback=True,
                               working_A=working_A)
        self.run, self.voxel_A, self.origin_A = run, tomo.voxel_size_A, tomo.origin_A
        self.vol = np.clip(robust_normalise(tomo.data, f"{run}: {tomo.path}"),
                           -CLIP_SIGMA, CLIP_SIGMA)
        self.picks = project.read_picks(run)
        self.rng = np.random.default_rng(seed)

    def profiles(self, xyz_A: np.ndarray, rmax: int) -> tuple[np.ndarray, np.ndarray]:
        """(particles' radial profiles, random points' profiles)."""
        zyx = xyz_A_to_zyx_vox(xyz_A, self.voxel_A, self.origin_A)
        bg_at = self.rng.uniform(rmax, np.array(self.vol.shape) - rmax - 1,
                                 size=(N_BACKGROUND, 3))
        return radial_profiles(self.vol, zyx, rmax), radial_profiles(self.vol, bg_at, rmax)


def project_scores(project: CopickProject, template: str, tomo_type: str, working_A: float,
                   seed: int = 0) -> dict:
    runs = [RunData(project, r, tomo_type, working_A, seed + i)
            for i, r in enumerate(project.runs())]
    per_class, counts = {}, {}
    for p in project.particles:
        if not p.weight:
            continue
        rmax = int(np.ceil(1.5 * p.radius_A / working_A))
        diffs = {}
        for rd in runs:
            xyz = rd.picks.get(p.name, np.zeros((0, 3)))
            prof, bg = rd.profiles(xyz, rmax) if len(xyz) else (np.zeros((0, rmax + 1)),) * 2
            diffs[rd.run] = (prof.sum(0), len(prof), bg.mean(0))
        units = []
        for rd in runs:
            others = [r for r in diffs if r != rd.run and diffs[r][1]]
            use = [rd.run] if template == "own" or not others else others
            n = sum(diffs[r][1] for r in use)
            ref = rd.picks.get(p.name, np.zeros((0, 3)))
            if n == 0:
                units.append((np.zeros((0, 3)), np.zeros(0), ref))
                continue
            tmpl = (sum(diffs[r][0] for r in use) / n
                    - np.mean([diffs[r][2] for r in use], axis=0))
            score = correlate(rd.vol, template_kernel(tmpl))
            zyx, s = local_maxima(score, max(1, round(0.5 * p.radius_A / working_A)),
                                  max(200, MAX_CANDIDATES_PER_REF * max(len(ref), 5)))
            units.append((zyx_vox_to_xyz_A(zyx, rd.voxel_A, rd.origin_A), s, ref))
        _, tps, kept, n_ref = pr_curve(units, DISTANCE_MULTIPLIER * p.radius_A)
        if n_ref == 0:
            continue
        f = [fbeta(tp, k - tp, n_ref - tp) for tp, k in zip(tps, kept, strict=True)]
        i = int(np.argmax(f)) if len(f) else -1
        tp, fp = (int(tps[i]), int(kept[i] - tps[i])) if i >= 0 else (0, 0)
        per_class[p.name] = ClassScore(tp=tp, fp=fp, fn=n_ref - tp)
        counts[p.name] = {"tp": tp, "fp": fp, "fn": n_ref - tp,
                          "f4": per_class[p.name].fbeta}
    return {"runs": [rd.run for rd in runs], "template": template,
            "weighted_f4": weighted_score(per_class, project.particles), "per_class": counts}


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--template", choices=("family", "own"), default="family")
    ap.add_argument("--tomo-type", default="denoised")
    ap.add_argument("--working-A", type=float, default=20.0,
                    help="grid the tomogram is read on (the checkpoint's: 20 Å)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    warnings.simplefilter("ignore")
    out = []
    names = None
    for path in a.project:
        t0 = time.perf_counter()
        project = CopickProject(path)
        res = project_scores(project, a.template, a.tomo_type, a.working_A)
        res["project"] = path
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out.append(res)
        if names is None:
            names = [p.name for p in project.particles if p.weight]
            print("| project | runs | " + " | ".join(names) + " | weighted F4 |")
            print("|---|---|" + "---|" * (len(names) + 1))
        cells = [f"{res['per_class'][n]['f4']:.3f}" if n in res["per_class"] else "–"
                 for n in names]
        print(f"| {path} | {len(res['runs'])} | " + " | ".join(cells)
              + f" | **{res['weighted_f4']:.3f}** |", flush=True)
    if a.json:
        atomic_write_text(a.json, json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
