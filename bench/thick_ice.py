"""Ice thicker than 2,000 Å, filling its tomogram: the kept share taken of at most
keep_max_depth_A (2,000 Å) of depth against the share of the whole depth. The rule is for
reconstructions thicker than their ice; this checks that it costs nothing where the ice
itself is thick and full of particles (more per area than a full-size run holds).

    python bench/thick_ice.py [--work /tmp/thick_ice] [--json bench/thick_ice.json]

Three runs of 276 × 400 × 400 voxels of 10 Å (2,760 Å deep), ice 90–95 % of the depth,
the simulator's other ranges as in training; the shipped default checkpoint on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detector import bench_project
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT

SETTINGS = {"share of at most 2,000 Å (default)": None,
            "share of the whole depth": {"keep_max_depth_A": 0.0}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/thick_ice")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    path = Path(a.work) / "project"
    if not path.exists():
        simulate_project(path, 3, 61, (276, 400, 400), SimRanges(ice_fraction=(0.9, 0.95)),
                         progress=False)
    results = {name: bench_project(str(path), str(DEFAULT_CHECKPOINT), "cpu", overrides=ov)
               for name, ov in SETTINGS.items()}
    classes = list(next(iter(results.values()))["per_class"])
    print("| kept share | " + " | ".join(classes) + " | weighted F4 | runs |")
    print("|---|" + "---|" * (len(classes) + 2))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r['per_class'][k]:.3f}" for k in classes)
              + f" | **{r['score']:.3f}** | "
              + " ".join(f"{v:.3f}" for v in r["per_run"].values()) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
