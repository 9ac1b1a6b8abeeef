"""Seconds of each stage of the picker, per held-out family: the least of a few repeats of
each run, so that two commits or two settings compare on a host whose speed drifts.

    python bench/stage_times.py @configs/heldout_21.args [--repeat 3] [--json F]

Every run is read, sparsified, read by the network, decoded and rescored as `infer` does
(bench/detector.py's run_stage_seconds), `--repeat` times; each stage's least time per run
is kept and the family's mean of those printed, with the total. bench/detector.py gives the
F4 and the seconds of whole calls; this one says where a change moved the seconds. To
compare two commits, run it from a checkout of each, family by family in turn.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.detector import run_stage_seconds
from bench.host import host_reference
from data_tools.copick_io import CopickProject
from data_tools.datasets import require_projects
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.config import INFER_PRECISION, PRECISIONS

STAGES = ("read", "sparsify", "reselect", "network", "decode", "rescore")


def family_stages(picker, path: str, device: str, repeat: int) -> dict:
    """Mean over the family's runs of each stage's least seconds over `repeat` tries."""
    project = CopickProject(path)
    runs = project.runs()
    best = []
    for run in runs:
        tries = [run_stage_seconds(picker, project, run, device) for _ in range(repeat)]
        best.append({k: min(t[k] for t in tries) for k in STAGES})
    mean = {k: sum(b[k] for b in best) / len(best) for k in STAGES}
    return {"project": path, "runs": len(runs), **mean, "total": sum(mean.values())}


def main() -> int:
    from sparse_det.inference import Picker

    ap = ArgumentFileParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=PRECISIONS, default=INFER_PRECISION)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    picker = Picker.load(a.checkpoint, a.device, precision=a.precision)
    rows = [family_stages(picker, p, a.device, a.repeat) for p in a.project]
    print("| family | runs | " + " | ".join(STAGES) + " | total |")
    print("|---|---" + "|---" * (len(STAGES) + 1) + "|")
    for r in rows:
        print(f"| {Path(r['project']).name} | {r['runs']} | "
              + " | ".join(f"{r[k]:.3f}" for k in (*STAGES, "total")) + " |")
    ref = host_reference()
    print(f"\nhost reference (bench/host.py): filters {ref['filters']:.3f} s, the picker's "
          f"network pass {ref['sparse_network_picker']:.3f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"families": rows, "host_reference_s": ref,
                                            "repeat": a.repeat}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
