"""The recall ceiling of a sparsification: the share of each class's particles that keep at
least a few voxels within their radius (`python -m data_tools.sparsify --report`); a
particle the sparse set lost, no network can find."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.run_names import runs_named
from data_tools.sparsify import shard_or_sparsify
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.structures import SparseVolume


def retained(sv: SparseVolume, centers_xyz_A: np.ndarray, radius_A: float,
             min_voxels: int = 5) -> np.ndarray:
    """Per particle: does it keep at least `min_voxels` voxels within its radius?"""
    from scipy.spatial import cKDTree

    if len(centers_xyz_A) == 0:
        return np.zeros(0, bool)
    c = xyz_A_to_zyx_vox(centers_xyz_A, sv.voxel_size_A, sv.origin_A)
    counts = cKDTree(sv.coords_zyx).query_ball_point(c, radius_A / sv.voxel_size_A,
                                                     return_length=True)
    return np.asarray(counts) >= min_voxels


def ceiling_report(project: CopickProject, cfg: SparsifyConfig, out: Path | None,
                   runs: list[str] | None = None, progress: bool = True) -> dict:
    """Sparsifies each run (writing shards when `out` is given; a shard already there made
    with `cfg` is read back, so an interrupted call resumes) and measures the ceiling."""
    from tqdm import tqdm

    per_class = {p.name: [0, 0] for p in project.particles}
    rows = []
    project.require_runs()
    for run in tqdm(runs_named([project], runs)[0], desc="sparsify", unit="run",
                    disable=not progress):
        t0 = time.perf_counter()
        sv = shard_or_sparsify(project, run, cfg, out, write=out is not None)
        dt = time.perf_counter() - t0
        for name, pts in project.read_picks(run).items():
            ok = retained(sv, pts, project.particles[name].radius_A)
            per_class[name][0] += int(ok.sum())
            per_class[name][1] += len(ok)
        rows.append({"run": run, "kept_fraction": len(sv) / float(np.prod(sv.shape_zyx)),
                     "n_voxels": len(sv), "seconds": dt,
                     "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})
    return {"config": cfg.to_dict(), "runs": rows,
            "retained": {k: {"kept": a, "total": b, "fraction": a / b if b else None}
                         for k, (a, b) in per_class.items()}}


def format_report(rep: dict) -> str:
    lines = [f"{'particle':<22}{'retained':>10}{'total':>8}{'fraction':>10}"]
    for k, v in rep["retained"].items():
        frac = "-" if v["fraction"] is None else f"{v['fraction']:.4f}"
        lines.append(f"{k:<22}{v['kept']:>10}{v['total']:>8}{frac:>10}")
    lines.append("")
    lines.append(f"{'run':<22}{'kept %':>10}{'voxels':>10}{'s':>8}{'peak GB':>9}")
    for r in rep["runs"]:
        lines.append(f"{r['run']:<22}{100 * r['kept_fraction']:>10.2f}{r['n_voxels']:>10}"
                     f"{r['seconds']:>8.2f}{r['peak_rss_gb']:>9.2f}")
    return "\n".join(lines)
