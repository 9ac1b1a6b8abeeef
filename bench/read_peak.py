"""The memory of reading one tomogram onto the working grid, against the estimate.

Ray reserves, and `infer` reads ahead by, data_tools.peak_memory.peak_bytes: the larger of the
picking phases' line (per working voxel) and the read's (the working volume plus
Plan.read_bytes, the slabs of source sections in hand). This writes one-level tomograms of
the shapes, voxel sizes and zarr chunks users' data come in (noise, which compresses no
better than a tomogram), reads each as `infer` does (data_tools.sparsify.
read_input, the shipped checkpoint's settings) in a fresh process with the model loaded, and
prints the read's seconds, the resident GB before it, the process's high-water mark after
it, and the read line of the estimate.

    python bench/read_peak.py [--work data/read_peak] [--case Z,Y,X:A:CZ,CY,CX ...]
        [--json bench/read_peak.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_tools.atomic import atomic_write_text  # noqa: E402

# (shape z,y,x, voxel Å, chunks z,y,x): how each reaches the 20 Å grid is in the table.
CASES = [
    ((184, 630, 630), 20.0, (64, 128, 128)),
    ((368, 1260, 1260), 10.0, (64, 128, 128)),
    ((300, 1800, 1800), 5.0, (64, 128, 128)),
    ((272, 934, 934), 13.48, (64, 128, 128)),
    ((272, 934, 934), 13.48, (256, 256, 256)),
    ((234, 1608, 1608), 7.84, (64, 128, 128)),
    ((234, 1608, 1608), 7.84, (256, 256, 256)),
]
CHILD = """import re, sys, time
sys.path.insert(0, {root!r})
from data_tools.copick_io import CopickProject
from data_tools.peak_memory import peak_bytes, read_peak_bytes
from data_tools.sparsify import plan_input, read_input
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint
doc = read_checkpoint(DEFAULT_CHECKPOINT)
cfg = SparsifyConfig.from_dict(doc["config"]["sparsify"])
project = CopickProject(sys.argv[1])
run = project.runs()[0]
status = lambda key: int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read())[1])
before = status('VmRSS')
plan = plan_input(project, run, cfg)
t0 = time.perf_counter()
tomo, _ = read_input(project, run, cfg)
seconds = time.perf_counter() - t0
print(before, status('VmHWM'), tomo.data.size, read_peak_bytes(plan), peak_bytes(plan),
      seconds, plan.how)
"""


def made(work: Path, shape: tuple[int, int, int], voxel_A: float,
         chunks: tuple[int, int, int]) -> Path:
    """A one-run, one-level project of that tomogram (written once)."""
    from data_tools.copick_io import CopickProject
    from data_tools.particles import ParticleTable

    dest = work / f"{'x'.join(map(str, shape))}_{voxel_A:g}A_c{chunks[0]}"
    if (dest / "copick_config.json").is_file():
        return dest
    (dest / "static").mkdir(parents=True, exist_ok=True)
    (dest / "overlay").mkdir(exist_ok=True)
    proj = CopickProject(dest, ParticleTable.competition())
    # Noise, which compresses as little as a real tomogram: zarr holds a slab's compressed
    # chunks while it decodes them.
    data = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    proj.write_tomogram("TS_read", data, voxel_A,
                        voxel_spacing_A=round(voxel_A, 3), n_levels=1, chunks_zyx=chunks)
    proj.write_config("bench/read_peak.py")  # last: marks it made
    return dest


def measured(project: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(project)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"reading {project} failed (exit {out.returncode})")
    before_kB, hwm_kB, voxels, read_line, line, seconds, how = out.stdout.split("\n")[
        -2].split(" ", 6)
    return {"before_gb": int(before_kB) / 2**20, "peak_gb": int(hwm_kB) / 2**20,
            "working_voxels": int(voxels), "how": how, "read_line_gb": int(read_line) / 2**30,
            "estimate_gb": int(line) / 2**30, "seconds": float(seconds)}


def parse_case(text: str, ap: argparse.ArgumentParser) -> tuple:
    try:
        shape, voxel, chunks = text.split(":")
        case = (tuple(map(int, shape.split(","))), float(voxel),
                tuple(map(int, chunks.split(","))))
    except ValueError:
        case = ()
    if not case or len(case[0]) != 3 or len(case[2]) != 3 or min(*case[0], *case[2]) < 1:
        ap.error(f"--case {text!r}: Z,Y,X:A:CZ,CY,CX, e.g. 234,1608,1608:7.84:256,256,256")
    return case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("data/read_peak"))
    ap.add_argument("--case", action="append", metavar="Z,Y,X:A:CZ,CY,CX",
                    help="a level to measure instead of the seven: shape, voxel Å, chunks")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    cases = [parse_case(text, ap) for text in a.case] if a.case else CASES
    rows = []
    print("| level | Å | chunk z | how | s | GB before | peak GB | read line GB | "
          "estimate GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, voxel_A, chunks in cases:
        row = {"shape_zyx": list(shape), "voxel_A": voxel_A, "chunks_zyx": list(chunks),
               **measured(made(a.work, shape, voxel_A, chunks))}
        rows.append(row)
        print(f"| {'×'.join(map(str, shape))} | {voxel_A:g} | {chunks[0]} | {row['how']} | "
              f"{row['seconds']:.1f} | "
              f"{row['before_gb']:.2f} | {row['peak_gb']:.2f} | {row['read_line_gb']:.2f} | "
              f"{row['estimate_gb']:.2f} |",
              flush=True)
    if a.json:
        atomic_write_text(a.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
