"""Ice inclined in its tomogram: each run turned about y, the tilt axis, as a specimen
pretilted by that angle gives when its tilt series is centred on it and reconstructed in
the beam's frame (the missing wedge turns with the ice). Scored against the same truth as
the unchanged runs (the particles the turn carries out of the volume dropped from both),
run by run; `--control` adds the runs turned and turned back (the interpolation alone).

    python bench/inclined_ice.py data/heldout_in data/heldout2_in ... [--angle 10]
                                 [--control] [--work /tmp/inclined] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detector import bench_project
from bench.effects import paired_change
from bench.input_variants import inclined, inclined_picks, inclined_turn
from data_tools.copick_io import CopickProject, copy_without_tomograms
from sparse_det.checkpoint import DEFAULT_CHECKPOINT


def written(src: CopickProject, dest: Path, turn, angle_deg: float, kept_by_deg: float
            ) -> CopickProject:
    """The runs' tomograms through `turn`; the truth turned by `angle_deg`, or where that
    is 0 unmoved, keeping the particles a turn by `kept_by_deg` keeps."""
    project = copy_without_tomograms(src, dest)
    for run in src.runs():
        spacing = src.voxel_spacings(run)[0]
        tomo = src.read_tomogram(run, spacing)
        vol, voxel_A = np.asarray(tomo.data), tomo.voxel_size_A
        project.write_tomogram(run, turn(vol), voxel_size_A=voxel_A, voxel_spacing_A=spacing)
        for particle, pts in src.read_picks(run).items():
            radius_A = src.particles[particle].radius_A
            if angle_deg:
                pts = inclined_picks(pts, vol.shape, voxel_A, radius_A, angle_deg)
            else:
                pts = pts[inclined_turn(pts, vol.shape, voxel_A, radius_A, kept_by_deg)[1]]
            project.write_picks(run, particle, pts)
    return project


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("projects", nargs="+")
    ap.add_argument("--angle", type=float, default=10.0)
    ap.add_argument("--control", action="store_true")
    ap.add_argument("--work", default="/tmp/inclined")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    settings = {"unchanged": (lambda v: v, 0.0),
                f"inclined {a.angle:g}°": (lambda v: inclined(v, a.angle), a.angle)}
    if a.control:
        settings["turned and back"] = (lambda v: inclined(inclined(v, a.angle), -a.angle), 0.0)
    results = {}
    for path in a.projects:
        src = CopickProject(path)
        for name, (turn, angle) in settings.items():
            dest = Path(a.work) / Path(path).name / "".join(c if c.isalnum() else "_"
                                                            for c in name)
            project = written(src, dest, turn, angle, a.angle)
            results.setdefault(path, {})[name] = bench_project(
                str(project.path), str(DEFAULT_CHECKPOINT), "cpu")
            print(f"{path} {name}: {results[path][name]['score']:.3f}", flush=True)
    print("\n| setting | " + " | ".join(a.projects) + " | run by run against unchanged |")
    print("|---|" + "---|" * (len(a.projects) + 1))
    def pooled(name: str) -> dict:  # every project's runs as one table's
        return {"per_run": {run: f for r in results.values()
                            for run, f in r[name]["per_run"].items()}}

    for name in settings:
        m, se, n = paired_change(pooled("unchanged"), pooled(name))
        print(f"| {name} | " + " | ".join(f"{results[p][name]['score']:.3f}"
                                          for p in a.projects)
              + f" | {m:+.3f} ± {se:.3f} ({n} runs) |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
