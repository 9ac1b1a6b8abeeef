"""The CPU's ways to run the sparse network, paired run by run on real projects.

    python bench/cpu_conv.py [--against spconv|bf16] [--checkpoint PT] [--repeats 1]
                             [--runs RUN ...] [--json OUT] --project DIR ...

Each run is picked end to end (`infer_project`) through the picker's CPU path (gather + GEMM
in fp32, sparse_det/model/cpu_conv.py) and through the other one alternately, `--repeats`
times each, so that a host whose speed drifts (this project's 2-core hosts do, by 1.5x within
an hour) slows both alike. `--against spconv`: spconv's own CPU path (the same sums: the picks
must be the same); `--against bf16`: `--precision bf16`, the conv products in bfloat16 (the
picks may move: each run's F4 is scored for both). Prints, per project, seconds per tomogram
of each, their ratio, the runs whose picks differ, and the mean F4 difference run by run with
its standard error. Reads @FILE argument files (configs/heldout_21.args, tune_runs_45.args).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.atomic import atomic_write_text
from data_tools.copick_io import CopickProject
from data_tools.datasets import require_projects
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.metric import score_tables
from sparse_det.model import spconv_compat
from sparse_det.stream import infer_project
from sparse_det.writers import project_solution, to_submission

# name -> (spconv_compat.CPU_GATHER_GEMM, precision)
PATHS = {"gather_gemm": (True, "fp32"), "spconv": (False, "fp32"), "bf16": (True, "bf16")}


def _pick(project, checkpoint, run, path: str) -> tuple[float, pd.DataFrame]:
    spconv_compat.CPU_GATHER_GEMM, precision = PATHS[path]
    try:
        t0 = time.perf_counter()
        picks = infer_project(project, checkpoint, runs=[run], device="cpu",
                              precision=precision)
        return time.perf_counter() - t0, picks
    finally:
        spconv_compat.CPU_GATHER_GEMM = True


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = ["particle_type", "x", "y", "z"]
    a, b = (p[cols].sort_values(cols).reset_index(drop=True) for p in (a, b))
    return (len(a) == len(b) and a["particle_type"].equals(b["particle_type"])
            and bool(np.allclose(a[cols[1:]], b[cols[1:]], atol=1e-3)))


def compare(path: str, checkpoint: str, against: str, repeats: int,
            only_runs: set[str] | None) -> dict:
    project = CopickProject(path)
    runs = [r for r in project.runs() if only_runs is None or r in only_runs]
    if not runs:
        return {}
    names = ("gather_gemm", against)
    _pick(project, checkpoint, runs[0], "gather_gemm")  # warm-up: imports, allocator
    solution = project_solution(project, runs)
    per_run = {}
    for run in runs:
        seconds = {n: [] for n in names}
        picks = {}
        for _ in range(repeats):
            for n in names:
                dt, picks[n] = _pick(project, checkpoint, run, n)
                seconds[n].append(dt)
        sol = solution[solution["experiment"] == run]
        f4 = {n: score_tables(sol, to_submission(picks[n]), project.particles).score
              for n in names} if len(sol) else {}
        per_run[run] = {"seconds": {n: float(np.median(v)) for n, v in seconds.items()},
                        "f4": f4, "same_picks": _same(*picks.values())}
    sec = {n: float(np.mean([r["seconds"][n] for r in per_run.values()])) for n in names}
    diffs = [r["f4"][against] - r["f4"]["gather_gemm"] for r in per_run.values() if r["f4"]]
    return {"project": path, "against": against, "runs": len(runs), "seconds": sec,
            "speedup": sec["gather_gemm"] / sec[against],
            "differing_runs": [r for r, v in per_run.items() if not v["same_picks"]],
            "f4_diff_mean": float(np.mean(diffs)) if diffs else None,
            "f4_diff_se": float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
            if len(diffs) > 1 else None,
            "per_run": per_run}


def main() -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--runs", nargs="*", help="only these runs (of any project)")
    ap.add_argument("--against", choices=("spconv", "bf16"), default="spconv")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    torch.set_num_threads(a.threads)
    print(f"| project | runs | gather + GEMM fp32, s/tomogram | {a.against}, s/tomogram | "
          "speed-up | runs with other picks | F4 difference |\n|---|---|---|---|---|---|---|")
    results = []
    for path in a.project:
        r = compare(path, a.checkpoint, a.against, a.repeats,
                    set(a.runs) if a.runs else None)
        if not r:
            continue
        results.append(r)
        d = ("—" if r["f4_diff_mean"] is None else f"{r['f4_diff_mean']:+.4f}"
             + (f" ± {r['f4_diff_se']:.4f}" if r["f4_diff_se"] is not None else ""))
        print(f"| {Path(path).name} | {r['runs']} | {r['seconds']['gather_gemm']:.2f} | "
              f"{r['seconds'][a.against]:.2f} | {r['speedup']:.2f}x | "
              f"{len(r['differing_runs'])} | {d} |", flush=True)
    diffs = [v["f4"][a.against] - v["f4"]["gather_gemm"]
             for r in results for v in r["per_run"].values() if v["f4"]]
    if len(diffs) > 1:
        print(f"\nall {len(diffs)} scored runs: F4 {a.against} - gather + GEMM fp32 "
              f"{np.mean(diffs):+.4f} ± {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.4f}")
    if a.json:
        atomic_write_text(a.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
