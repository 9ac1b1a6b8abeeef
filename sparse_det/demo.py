"""The demo: simulate a small project → sparsify (Ray) → infer with the shipped checkpoint →
evaluate, printing the per-class table → pictures (slices and precision-recall curves).

    python -m sparse_det.demo [--out demo_data] [--runs 2] [--shape Z Y X]

Everything it writes lies under --out (the submission: <out>/submission.csv).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data_tools.cli_args import at_least, expand_home
from data_tools.copick_io import CopickProject
from data_tools.simulate import FULL_SHAPE_ZYX, MIN_SHAPE_VOX, simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, read_checkpoint
from sparse_det.config import config_from_dict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_data")
    ap.add_argument("--runs", type=at_least(1), default=2)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--shape", type=at_least(MIN_SHAPE_VOX), nargs=3, default=FULL_SHAPE_ZYX)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--submission", default=None,
                    help="the CSV to write (default: <out>/submission.csv)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = expand_home(ap.parse_args(argv))
    from sparse_det.evaluate import evaluate
    from sparse_det.stream import infer_project
    from sparse_det.visualize import visualize_run
    from sparse_det.writers import to_submission, write_submission

    out = Path(a.out)
    project_dir = out / "project"
    tty = sys.stderr.isatty() and not a.quiet
    t0 = time.perf_counter()
    if not (project_dir / "solution.csv").is_file():
        print(f"[1/4] simulating {a.runs} run(s) of {a.shape} into {project_dir}")
        simulate_project(project_dir, a.runs, a.seed, tuple(a.shape), progress=tty)
    else:
        print(f"[1/4] reusing {project_dir}")
    project = CopickProject(project_dir)
    print("[2/4] sparsifying with Ray (a private local Ray)")
    from ray_jobs.preprocess import preprocess_project

    cfg = config_from_dict(read_checkpoint(a.checkpoint)["config"])  # settings, no model
    results = preprocess_project(project_dir, out / "shards", cfg.sparsify, progress=tty)
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        print(f"error: preprocessing failed: {failed}", file=sys.stderr)
        return 1
    print(f"[3/4] picking particles with {a.checkpoint}")
    t1 = time.perf_counter()
    rows = infer_project(project, a.checkpoint, shards_dir=out / "shards", progress=tty)
    sub = Path(a.submission) if a.submission else out / "submission.csv"
    sub.parent.mkdir(parents=True, exist_ok=True)
    write_submission(to_submission(rows), sub)
    seconds, n_runs = time.perf_counter() - t1, len(project.runs())
    print(f"      {len(rows)} particles -> {sub} ({seconds:.1f} s for {n_runs} tomogram(s) "
          "from shards, the model's loading included)")
    print("[4/4] evaluating against the simulated ground truth")
    print(evaluate(project_dir, sub).table())
    run = project.runs()[0]
    pngs = visualize_run(project, run, out / "pictures", checkpoint=a.checkpoint,
                         submission=rows, shards_dir=out / "shards")
    print("pictures (solid circles: ground truth, dashed: picks; PR curves per class):")
    for png in pngs:
        print(f"  {png}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
