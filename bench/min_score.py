"""What `infer --min-score P` keeps: per project and class, precision and recall of the
picks at the checkpoint's F4 thresholds and with a floor P on their calibrated
probabilities (a pick is kept where its score passes both), and how many picks that is.

    python bench/min_score.py @configs/heldout_44.args [--floors 0.3 0.5 0.7 0.9]
        [--checkpoint PT] [--json OUT]

Scores are the checkpoint's calibrated probabilities that a pick is its particle; a floor
trades recall for precision, for uses where a false pick costs more than a missed one
(subtomogram averaging). Counts are micro over a project's runs, as the metric's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.atomic import atomic_write_text
from data_tools.datasets import require_projects
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.thresholds import MIN_SCORE_FLOORS, precision_recall_at_floors


def project_report(picker, path: str, floors: list[float]) -> dict:
    from data_tools.copick_io import CopickProject

    project = CopickProject(path)
    runs = project.runs()
    print(f"{path}: picking {len(runs)} runs", file=sys.stderr, flush=True)  # a long bench
    dets = [picker.detect_run(project, r) for r in runs]
    truths = [project.read_truth(r) for r in runs]
    return {"project": path, "runs": len(runs), "floors": precision_recall_at_floors(
        dets, truths, picker.particles, picker.thresholds, floors)}


def markdown(reports: list[dict]) -> str:
    floors = list(reports[0]["floors"])
    lines = ["| project | class | " + " | ".join(f"P / R at {f}" for f in floors) + " |",
             "|---|---|" + "---|" * len(floors)]
    for r in reports:
        for name in r["floors"]["F4"]:
            cells = [f"{r['floors'][f][name]['precision']:.2f} / "
                     f"{r['floors'][f][name]['recall']:.2f}" for f in floors]
            lines.append(f"| {Path(r['project']).name} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--floors", type=float, nargs="+", default=list(MIN_SCORE_FLOORS),
                    help="default: those tune reports")
    ap.add_argument("--json")
    a = ap.parse_args()
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    from sparse_det.inference import Picker

    picker = Picker.load(a.checkpoint, a.device)
    reports = [project_report(picker, p, a.floors) for p in a.project]
    print(markdown(reports))
    if a.json:
        atomic_write_text(Path(a.json), json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
