"""Seconds and memory of one tomogram larger than the competition's, with known answers.

Cellular tomograms are often several times the competition's 184 x 630 x 630 voxels at
10 Å. This tiles one annotated run (level 0, its picks moved with each copy) into larger
runs, picks each with `python -m sparse_det.infer` in a fresh process, and prints its wall
seconds (the process's start and model load included), peak RSS and weighted F4 — the
same particles repeated, so F4 should hold while time and memory grow with the volume.

    python bench/large_tomogram.py [--project data/heldout_in] [--run TS_sim_2024_000]
        [--reps 1,1,1 1,2,2 2,2,2] [--levels 3] [--voxel-A 13.48] [--work data/large]
        [--json bench/large_tomogram.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.child_peak import run_measured  # noqa: E402
from data_tools.atomic import atomic_write_text  # noqa: E402
from data_tools.copick_io import CopickProject  # noqa: E402


def tiled_project(src: CopickProject, run: str, reps_zyx: tuple[int, int, int],
                  dest: Path, n_levels: int = 3, voxel_A: float | None = None,
                  chunks_zyx: tuple[int, int, int] = (64, 128, 128)) -> str:
    """`run`'s level-0 tomogram tiled `reps_zyx` times into a one-run project at `dest`
    (made once; a pyramid of `n_levels`), every pick copied into each tile; returns the new
    run's name. `voxel_A`: each tile first resampled to that voxel size (another lab's
    pixel size, e.g. 13.48 Å), written in a folder of that spacing; in zarr chunks of
    `chunks_zyx` (the data portal's are 256³)."""
    name = f"{run}_x{''.join(map(str, reps_zyx))}"
    if (dest / "copick_config.json").is_file():
        return name
    tomo = src.read_tomogram(run, 10.0, "denoised", scale=0)
    tile, tile_A = tomo.data, tomo.voxel_size_A
    if voxel_A:
        from bench.input_variants import resampled  # an independent resampler

        tile, tile_A = resampled(tile, tile_A, voxel_A), voxel_A
    (dest / "static").mkdir(parents=True, exist_ok=True)
    (dest / "overlay").mkdir(exist_ok=True)
    out = CopickProject(dest, src.particles)
    out.write_tomogram(name, np.tile(tile, reps_zyx), tile_A, voxel_spacing_A=round(tile_A, 3),
                       origin_A=tomo.origin_A, n_levels=n_levels, chunks_zyx=chunks_zyx)
    step_xyz_A = np.array(tile.shape[::-1]) * tile_A
    rz, ry, rx = reps_zyx
    shifts = np.array([[ix, iy, iz] for iz in range(rz) for iy in range(ry)
                       for ix in range(rx)]) * step_xyz_A
    for particle, pts in src.read_picks(run).items():
        out.write_picks(name, particle, (pts[None] + shifts[:, None]).reshape(-1, 3))
    out.write_config(f"bench/large_tomogram.py: {run} x {reps_zyx}")  # last: marks it made
    return name


def pick_and_score(project: Path, out_csv: Path, checkpoint: str | None) -> dict:
    """One infer call in a fresh process: wall seconds, its peak RSS (VmHWM), weighted F4."""
    args = ["--project", str(project), "--out", str(out_csv), "--fresh", "--quiet"]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    seconds, peak_GB = run_measured("sparse_det.infer", args)
    from sparse_det.metric import score_tables
    from sparse_det.writers import project_solution, read_submission

    proj = CopickProject(project)
    score = score_tables(project_solution(proj), read_submission(out_csv), proj.particles)
    return {"seconds": seconds, "peak_rss_gb": peak_GB, "weighted_f4": score.score}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default="data/heldout_in")
    ap.add_argument("--run", default="TS_sim_2024_000")
    ap.add_argument("--reps", nargs="+", default=["1,1,1", "1,2,2", "2,2,2"],
                    help="copies along z,y,x")
    ap.add_argument("--work", type=Path, default=Path("data/large"))
    ap.add_argument("--levels", type=int, default=3,
                    help="pyramid levels written (1: level 0 only, which the input step "
                         "bins by 2 as it reads it)")
    ap.add_argument("--voxel-A", type=float,
                    help="resample each tile to this voxel size first (13.48: the input step "
                         "resamples it; 7.84 with --levels 1: bins by 2, then resamples)")
    ap.add_argument("--chunks", default="64,128,128", metavar="Z,Y,X",
                    help="zarr chunks of the tiled tomogram (the data portal's: 256,256,256)")
    ap.add_argument("--checkpoint")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    src = CopickProject(a.project)
    chunks = tuple(int(v) for v in a.chunks.split(","))
    if len(chunks) != 3 or min(chunks) < 1:
        ap.error(f"--chunks {a.chunks!r}: three positive integers z,y,x")
    rows = []
    print(f"| copies z,y,x | voxels at {a.voxel_A or 10:g} Å | s (process) | peak GB | "
          "weighted F4 |")
    print("|---|---|---|---|---|")
    for text in a.reps:
        reps = tuple(int(v) for v in text.split(","))
        if len(reps) != 3 or min(reps) < 1:
            ap.error(f"--reps {text!r}: three positive integers z,y,x")
        dest = a.work / (f"{a.run}_x{''.join(map(str, reps))}"
                         + ("" if a.levels == 3 else f"_levels{a.levels}")
                         + (f"_{a.voxel_A:g}A" if a.voxel_A else "")
                         + ("" if chunks == (64, 128, 128) else f"_c{chunks[0]}"))
        name = tiled_project(src, a.run, reps, dest, a.levels, a.voxel_A, chunks)
        res = pick_and_score(dest, a.work / f"{name}.csv", a.checkpoint)
        made = CopickProject(dest)
        spacing_A = made.voxel_spacings(name)[0]
        shape = made.tomogram_scales(name, spacing_A)[0][2]
        rows.append({"reps_zyx": reps, "shape_zyx": list(shape), "voxel_A": spacing_A,
                     "levels": a.levels, "chunks_zyx": list(chunks), **res})
        gb = f"{res['peak_rss_gb']:.2f}"
        print(f"| {text} | {'×'.join(map(str, shape))} | {res['seconds']:.1f} | {gb} | "
              f"{res['weighted_f4']:.3f} |", flush=True)
    if a.json:
        atomic_write_text(a.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
