"""The CPU's two ways to run the sparse network, paired run by run on real projects.

    python bench/cpu_conv.py [--checkpoint PT] [--repeats 2] --project data/heldout_in ...

Each run is picked end to end (`infer_project`) through spconv's own CPU path and through
the gather + GEMM path (sparse_det/model/cpu_conv.py) alternately, `--repeats` times each, so
that a host whose speed drifts (this project's 2-core hosts do, by 1.5x within an hour)
slows both alike. Prints seconds per tomogram for each path, their ratio, and whether the
picks are the same.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.copick_io import CopickProject
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.inference import infer_project
from sparse_det.model import spconv_compat

PATHS = {"spconv": False, "gather_gemm": True}


def _pick(project, checkpoint, run, gather_gemm: bool):
    spconv_compat.CPU_GATHER_GEMM = gather_gemm
    t0 = time.perf_counter()
    picks = infer_project(project, checkpoint, runs=[run], device="cpu")
    return time.perf_counter() - t0, picks


def compare(path: str, checkpoint: str, repeats: int) -> dict:
    project = CopickProject(path)
    runs = project.runs()
    _pick(project, checkpoint, runs[0], True)  # warm-up: imports, allocator
    seconds = {name: [] for name in PATHS}
    same = True
    for run in runs:
        picks = {}
        for _ in range(repeats):
            for name, flag in PATHS.items():
                dt, picks[name] = _pick(project, checkpoint, run, flag)
                seconds[name].append(dt)
        a, b = (p.sort_values(list(p.columns)).reset_index(drop=True)
                for p in picks.values())
        cols = [c for c in ("x", "y", "z") if c in a.columns]
        same &= len(a) == len(b) and bool(np.allclose(a[cols], b[cols], atol=1e-3))
    spconv_compat.CPU_GATHER_GEMM = True
    med = {name: float(np.median(v)) for name, v in seconds.items()}
    return {"project": path, "runs": len(runs), **{f"{k}_s": v for k, v in med.items()},
            "speedup": med["spconv"] / med["gather_gemm"], "same_picks": same}


def main() -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("| project | runs | spconv s/tomogram | gather + GEMM s/tomogram | speed-up | "
          "same picks |\n|---|---|---|---|---|---|")
    for path in a.project:
        r = compare(path, a.checkpoint, a.repeats)
        print(f"| {Path(path).name} | {r['runs']} | {r['spconv_s']:.2f} | "
              f"{r['gather_gemm_s']:.2f} | {r['speedup']:.2f}x | {r['same_picks']} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
