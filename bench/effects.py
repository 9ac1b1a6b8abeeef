"""One image-formation effect at a time, on paired runs: the same particles, physics and
noise (the same seeds) with and without the effect, so the difference is the effect's alone.

    python bench/effects.py [--work data/effects] [--checkpoint PT] [--json bench/effects.json]
        [--only EFFECT ...] [--no-rescore]

Base: 4 fast-simulator runs (seed 960) and 2 tilt series (seed 961), in the training ranges.
Effects: carbon film edges and ice contamination (configs/sim_hard_negatives.json; both
physics), no missing wedge (tilt range 88-90°, the wedge-filled look of IsoNet-corrected
tomograms; the fast model only, a tilt series cannot reach 90°), tilted about x (the base
with y and x swapped, picks alike), every particle drawn from the second shape family
(data_tools/shapes_alt.py: the same classes built from other parts), every particle a
lump of the third (only its class's size, mass and hollowness; no shipped training draws it),
and every particle a procedural model (data_tools/shapes_procedural.py: a new random assembly
with the class's symmetry, size, mass and hollowness).
Projects are simulated into `--work` once (about 9 minutes) and reused. Prints a markdown
table: per-class and weighted F4 (the checkpoint's thresholds, one pass) and the change
from the base run by run (mean ± standard error).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.detector import bench_project  # noqa: E402
from data_tools.copick_io import CopickProject  # noqa: E402
from data_tools.sim_ranges import SimRanges  # noqa: E402
from data_tools.simulate import simulate_project  # noqa: E402

SCORED = ["apo-ferritin", "beta-galactosidase", "ribosome", "thyroglobulin",
          "virus-like-particle"]
FAST_SEED, TILT_SEED = 960, 961
HARD_NEGATIVES = ROOT / "configs" / "sim_hard_negatives.json"
# Each effect's project folder under --work.
EFFECTS = {"carbon and contamination": "hard_negatives", "no missing wedge": "no_wedge",
           "tilted about x": "about_x", "other particle shapes": "alt_shapes",
           "lumps of the right size and mass": "blob_shapes",
           "procedural particle models": "procedural_shapes"}


def simulate(dest: Path, ranges: SimRanges, tilt: bool = True) -> None:
    """The base's runs drawn with `ranges` (fast, then tilt series), written under a
    temporary name and renamed."""
    if dest.exists():
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    simulate_project(tmp, 4, FAST_SEED, ranges=ranges, run_prefix="TS_fx", progress=False)
    if tilt:
        simulate_project(tmp, 2, TILT_SEED, ranges=ranges, run_prefix="TS_fxtilt",
                         progress=False, physics="tilt")
    tmp.rename(dest)
    CopickProject(dest).write_config(f"bench/effects.py: {dest.name}")


def swapped(src: Path, dest: Path) -> None:
    """`src` tilted about x: every tomogram and pick with y and x swapped."""
    if dest.exists():
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "static").mkdir(parents=True)
    (tmp / "overlay").mkdir()
    source = CopickProject(src)
    out = CopickProject(tmp, source.particles)
    for run in source.runs():
        for folder in sorted((source.static_root / "ExperimentRuns" / run).glob(
                "VoxelSpacing*/*.zarr")):
            spacing = float(folder.parent.name.removeprefix("VoxelSpacing"))
            kind = folder.name.removesuffix(".zarr")
            levels = len([p for p in folder.iterdir() if p.name.isdigit()])
            t = source.read_tomogram(run, spacing, kind)
            out.write_tomogram(run, np.ascontiguousarray(t.data.transpose(0, 2, 1)),
                               t.voxel_size_A, kind, spacing, n_levels=levels,
                               origin_A=t.origin_A)
        for particle, pts in source.read_picks(run).items():
            out.write_picks(run, particle, pts[:, [1, 0, 2]])
    tmp.rename(dest)
    CopickProject(dest).write_config(f"bench/effects.py: {dest.name}")


def paired_change(base: dict, other: dict) -> tuple[float, float, int]:
    """Mean and standard error of other's per-run F4 minus base's, over their shared runs."""
    d = np.array([other["per_run"][r] - base["per_run"][r]
                  for r in other["per_run"] if r in base["per_run"]])
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(d.mean()), float(se), len(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="data/effects")
    ap.add_argument("--checkpoint")
    ap.add_argument("--json")
    ap.add_argument("--only", nargs="+", choices=list(EFFECTS.values()), metavar="FOLDER",
                    help="simulate and bench only these effects, by folder (alt_shapes, "
                         "blob_shapes, ...; the base is always benched)")
    ap.add_argument("--no-rescore", dest="rescore", action="store_false",
                    help="the network alone with its own thresholds (the checkpoint's "
                         "candidate rescorer skipped)")
    a = ap.parse_args(argv)
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    checkpoint = a.checkpoint or str(DEFAULT_CHECKPOINT)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    hard = SimRanges.from_dict(json.loads(HARD_NEGATIVES.read_text()))
    projects = {"base": work / "base"} | {name: work / folder for name, folder in EFFECTS.items()
                                         if not a.only or folder in a.only}
    # How each effect's project is made, by its folder (EFFECTS names them).
    makers = {
        "hard_negatives": lambda d: simulate(d, hard),
        "no_wedge": lambda d: simulate(d, SimRanges(tilt_max_deg=(88.0, 90.0)), tilt=False),
        "about_x": lambda d: swapped(projects["base"], d),
        "alt_shapes": lambda d: simulate(d, SimRanges(alt_shape_share=(1.0, 1.0))),
        "blob_shapes": lambda d: simulate(d, SimRanges(blob_shape_share=(1.0, 1.0))),
        "procedural_shapes": lambda d: simulate(
            d, SimRanges(procedural_shape_share=(1.0, 1.0))),
    }
    simulate(projects["base"], SimRanges())
    for name, path in projects.items():
        if name != "base":
            makers[EFFECTS[name]](path)
    results = {}
    for name, path in projects.items():
        results[name] = bench_project(str(path), checkpoint, "cpu", rescore=a.rescore)
        print(f"{name}: {results[name]['score']:.4f}", flush=True)
    base = results["base"]
    print(f"\ncheckpoint {checkpoint}{'' if a.rescore else ', network alone'}\n")
    print("| runs | " + " | ".join(SCORED) + " | weighted F4 | change, run by run |")
    print("|---|" + "---|" * (len(SCORED) + 2))
    for name, r in results.items():
        change = ""
        if name != "base":
            m, se, n = paired_change(base, r)
            change = f"{m:+.3f} ± {se:.3f} ({n} runs)"
        print(f"| {name} | " + " | ".join(f"{r['per_class'][k]:.3f}" for k in SCORED)
              + f" | **{r['score']:.3f}** | {change} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
