"""Seconds of `python -m sparse_det.infer` on one tomogram in a fresh process, as a user's
first command meets them: the interpreter's start, the imports, the model's building, the
reading, the picking and the process's end.

    python bench/cold_call.py [--project data/heldout_tilt] [--run RUN | --all-runs] [--repeat 5]
                              [--against DIR] [--json F]

`--against DIR`: another checkout (made with `git worktree add`, with this one's `.venv`
and `data` linked in) timed in turn with this one, call by call, since this host's speed
drifts; both must write the same CSV. The least and the median of each are printed.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def call_seconds(checkout: Path, project: str, run: str | None, out_csv: Path) -> float:
    """Wall seconds of one infer command in `checkout` (its .venv's python)."""
    cmd = [str(checkout / ".venv" / "bin" / "python"), "-m", "sparse_det.infer",
           "--project", project, "--out", str(out_csv), "--quiet"]
    if run:
        cmd += ["--runs", run]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=checkout, check=True, capture_output=True)
    return time.perf_counter() - t0


def bench(project: str, run: str | None, repeat: int, against: Path | None) -> dict:
    checkouts = {"this": ROOT} | ({"against": against.resolve()} if against else {})
    seconds: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: Path(tmp) / f"{name}.csv" for name in checkouts}
        for _ in range(repeat):
            for name, checkout in checkouts.items():
                seconds[name].append(call_seconds(checkout, project, run, outs[name]))
        same = (None if against is None
                else filecmp.cmp(outs["this"], outs["against"], shallow=False))
    return {"project": project, "run": run, "repeat": repeat, "same_csv": same,
            "checkouts": {k: str(v) for k, v in checkouts.items()},
            "seconds": seconds,
            "least": {k: min(v) for k, v in seconds.items()},
            "median": {k: statistics.median(v) for k, v in seconds.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default="data/heldout_tilt")
    ap.add_argument("--run", help="default: the project's first run")
    ap.add_argument("--all-runs", action="store_true", help="the whole project in one call")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--against", type=Path)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.all_runs:
        a.run = None
    elif a.run is None:
        from data_tools.copick_io import CopickProject

        a.run = CopickProject(a.project).runs()[0]
    result = bench(a.project, a.run, a.repeat, a.against)
    print(f"| {a.run or 'every run'}, a fresh process | least s | median s |")
    print("|---|---|---|")
    for name, path in result["checkouts"].items():
        print(f"| {name} ({path}) | {result['least'][name]:.2f} | "
              f"{result['median'][name]:.2f} |")
    if result["same_csv"] is not None:
        print(f"same CSV: {result['same_csv']}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0 if result["same_csv"] in (None, True) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.cli import run

    sys.exit(run(main))
