"""Candidate rescorers compared on the same network outputs, run by run.

    python bench/rescorers.py --checkpoint A.pt B.pt [C.pt ...] @configs/heldout_21.args \
        [--project ...] [--json OUT]

Every checkpoint must carry the same network (a rescorer fitted by `python -m
sparse_det.rescore` from another): each run is sparsified and read by that network once,
then every checkpoint's rescorer scores the same candidates at its own thresholds and
calibration, so the run-by-run differences are the rescorers' alone. Prints each family's
mean run F4 (weighted) per checkpoint and each checkpoint's difference from the first (mean
± standard error over runs), and the same over all runs. Before a checkpoint is re-tuned, its
thresholds are the ones it was fitted from: a first look at a rescorer, not its final
score.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.copick_io import CopickProject
from data_tools.datasets import require_projects
from sparse_det.argfile import ArgumentFileParser
from sparse_det.metric import score_tables
from sparse_det.structures import DETECTION_COLUMNS
from sparse_det.writers import project_solution, to_submission


def same_network(pickers) -> bool:
    first = pickers[0].ckpt.model.state_dict()
    return all(all(torch.equal(first[k], v) for k, v in p.ckpt.model.state_dict().items())
               for p in pickers[1:])


def run_scores(pickers, project: CopickProject, run: str, solution: pd.DataFrame
               ) -> list[float]:
    """Weighted F4 of one run for each picker, from one pass of the shared network."""
    from sparse_det.inference import network_outputs
    from sparse_det.rescore import channels_for, rescore

    base = pickers[0]
    sv = base.sparse(project, run)
    dets, final, probs = base.detect_outputs(sv, resparsify=base.resparsifier(project, run,
                                                                              None, sv))
    channels, voxel_A, origin_A = channels_for(sv, project, run, base.sparsify_config)
    truth = solution[solution["experiment"] == run]
    scores = []
    for p in pickers:
        scored = rescore(dets, p.ckpt.rescorer, channels, voxel_A, origin_A, p.particles,
                         network_outputs(final, probs))
        rows = pd.DataFrame(p.pick(p.calibrate(scored)).rows(), columns=DETECTION_COLUMNS)
        scores.append(score_tables(truth, to_submission(rows), project.particles).score)
    return scores


def paired(diffs: np.ndarray) -> str:
    se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return f"{diffs.mean():+.4f} ± {se:.4f}"


def main() -> int:
    from sparse_det.inference import Picker

    ap = ArgumentFileParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", nargs="+", required=True)
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    if len(a.checkpoint) < 2:
        ap.error("give at least two checkpoints")
    pickers = [Picker.load(c, a.device) for c in a.checkpoint]
    if not same_network(pickers):
        ap.error("the checkpoints carry different networks: compare them with "
                 "bench/detector.py and bench/compare.py instead")
    if any(p.ckpt.rescorer is None for p in pickers):
        ap.error("every checkpoint must carry a rescorer")
    per_run = {}
    for path in a.project:
        project = CopickProject(path)
        solution = project_solution(project)
        for run in project.runs():
            per_run[(path, run)] = run_scores(pickers, project, run, solution)
            print(f"{Path(path).name} {run}: " + " ".join(f"{s:.4f}" for s in per_run[(path, run)]),
                  flush=True)
    print("\n| family | runs | " + " | ".join(Path(c).stem for c in a.checkpoint)
          + " | " + " | ".join(f"{Path(c).stem} − first" for c in a.checkpoint[1:]) + " |")
    print("|---|---" + "|---" * (2 * len(a.checkpoint) - 1) + "|")
    groups = {Path(p).name: [k for k in per_run if k[0] == p] for p in a.project}
    groups["all"] = list(per_run)
    for name, keys in groups.items():
        s = np.array([per_run[k] for k in keys])
        print(f"| {name} | {len(keys)} | " + " | ".join(f"{m:.3f}" for m in s.mean(0)) + " | "
              + " | ".join(paired(s[:, i] - s[:, 0]) for i in range(1, s.shape[1])) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"checkpoints": a.checkpoint, "per_run": [
            {"project": p, "run": r, "f4": v} for (p, r), v in per_run.items()]}, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
