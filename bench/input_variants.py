"""The same runs written the ways users' data comes, each picked with no extra flag: prints a
markdown table of weighted F4 (and per class) against the unchanged runs.

    python bench/input_variants.py --project demo_data/project [--checkpoint PT]
                                   [--work /tmp/variants] [--json bench/input_variants.json]

Variants: the portal's `VoxelSpacing10.012` folder, resampled to 13.48 Å and 7.84 Å (an
independent map_coordinates resampling, as another lab's pipeline would make), pyramid level
0 only, protein bright (×−1), int8, and tilted about x (y and x swapped: the missing wedge
about x; its picks swapped alike). Each is a copy of the project with only the tomograms
rewritten; picks are unchanged (Å) but for the swap.
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

from bench.detector import bench_project  # noqa: E402
from data_tools.copick_io import CopickProject, copy_without_tomograms  # noqa: E402

SCORED = ["apo-ferritin", "beta-galactosidase", "ribosome", "thyroglobulin",
          "virus-like-particle"]


def resampled(vol: np.ndarray, voxel_A: float, new_A: float) -> np.ndarray:
    """Anti-aliased linear resampling, voxel 0 kept centred at 0 Å."""
    ratio = new_A / voxel_A
    src = ndimage.gaussian_filter(vol, (ratio - 1) / 2) if ratio > 1 else vol
    shape = [int(n * voxel_A / new_A) for n in vol.shape]
    grid = np.meshgrid(*[np.arange(n) * new_A / voxel_A for n in shape], indexing="ij")
    return ndimage.map_coordinates(src, grid, order=1, mode="nearest").astype(np.float32)


def write_variant(src: CopickProject, dest: Path, name: str) -> CopickProject:
    project = copy_without_tomograms(src, dest)
    for run in src.runs():
        t = src.read_tomogram(run)
        vol, vs = t.data, t.voxel_size_A
        z = (vol - vol.mean()) / vol.std()
        kw = {"unchanged": {},
              "VoxelSpacing10.012": {"voxel_spacing_A": 10.012},
              "13.48 Å": {"data_zyx": resampled(vol, vs, 13.48), "voxel_size_A": 13.48,
                          "voxel_spacing_A": 13.48},
              "7.84 Å": {"data_zyx": resampled(vol, vs, 7.84), "voxel_size_A": 7.84,
                         "voxel_spacing_A": 7.84},
              "level 0 only": {"n_levels": 1},
              "bright protein": {"data_zyx": -vol},
              "int8": {"data_zyx": z * 20, "dtype": np.int8},
              "tilted about x": {"data_zyx": np.ascontiguousarray(vol.transpose(0, 2, 1))},
              }[name]
        project.write_tomogram(run, **({"data_zyx": vol, "voxel_size_A": vs} | kw))
        if name == "tilted about x":
            for particle, pts in src.read_picks(run).items():
                project.write_picks(run, particle, pts[:, [1, 0, 2]])
    return project


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--work", default="/tmp/input_variants")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    checkpoint = a.checkpoint or str(DEFAULT_CHECKPOINT)
    src = CopickProject(a.project)
    results = {}
    for name in ("unchanged", "VoxelSpacing10.012", "13.48 Å", "7.84 Å", "level 0 only",
                 "bright protein", "int8", "tilted about x"):
        project = write_variant(src, Path(a.work) / name.replace(" ", "_"), name)
        results[name] = bench_project(str(project.path), checkpoint, "cpu")
        print(f"{name}: {results[name]['score']:.4f}", flush=True)
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
    raise SystemExit(main())
