"""Where a checkpoint loses each class's particles, per project: its F4 at the checkpoint's
thresholds, at thresholds tuned on the project itself (an oracle: what re-tuning could give),
and every reference it misses put in one of four bins.

    python bench/misses.py @configs/heldout_21.args [--checkpoint PT] [--json OUT]

A reference is missed when no detection of its class at the class's threshold lies within
the hit radius (the metric's). Its bin says what would have found it:
- `displaced`: a detection of its class that passes the threshold lies within one radius,
  just not within half of one — localisation, not recognition;
- `low score`: a candidate of its class lies within the hit radius but scores under the
  threshold — ranking;
- `other class`: none of its class, but another class's candidate passes its threshold
  there — confusion;
- `no candidate`: nothing of its class nearby at any score — the network never proposed it
  (the kept voxels or its outputs).
The `ceiling` column is the share of references with a candidate of their class within the
hit radius at any score: what thresholds alone can reach. With a rescorer every candidate
is scored for every class, so a confusion shows as `low score`; `--no-rescore` bins the
network's own detections, where each cluster has one class.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.spatial import cKDTree

from data_tools.datasets import require_projects
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.metric import DISTANCE_MULTIPLIER

BINS = ("displaced", "low score", "other class", "no candidate")


def _near(points: np.ndarray, ref: np.ndarray, radius: float) -> np.ndarray:
    """Per reference: is any point within `radius`?"""
    if len(points) == 0 or len(ref) == 0:
        return np.zeros(len(ref), bool)
    d, _ = cKDTree(points).query(ref)
    return d <= radius


def miss_bins(dets, truth: dict[str, np.ndarray], particles, thresholds: dict[str, float]
              ) -> dict[str, dict[str, int]]:
    """Per scored class of one run: references, found, each miss bin's count, and how many
    have a candidate of their class within the hit radius at any score (`ceiling`)."""
    out = {}
    for p in particles.scored:
        ref = truth.get(p.name, np.zeros((0, 3)))
        xyz, s = dets[p.name]
        hit = p.radius_A * DISTANCE_MULTIPLIER
        passing = xyz[s >= thresholds[p.name]]
        found = _near(passing, ref, hit)
        any_own = _near(xyz, ref, hit)
        row = {"references": len(ref), "found": int(found.sum()),
               "ceiling": int(any_own.sum())}
        displaced = ~found & _near(passing, ref, p.radius_A)
        low = ~found & ~displaced & any_own
        other = np.zeros(len(ref), bool)
        for q in particles.scored:
            if q.name != p.name:
                qx, qs = dets[q.name]
                other |= _near(qx[qs >= thresholds[q.name]], ref, hit)
        other &= ~found & ~displaced & ~low
        row |= {"displaced": int(displaced.sum()), "low score": int(low.sum()),
                "other class": int(other.sum())}
        row["no candidate"] = len(ref) - row["found"] - sum(row[b] for b in BINS[:3])
        out[p.name] = row
    return out


def project_report(picker, path: str) -> dict:
    """Detects every run of a project; per class the summed bins; the weighted F4 at the
    checkpoint's thresholds and at thresholds tuned on the project itself (the oracle)."""
    from data_tools.copick_io import CopickProject
    from sparse_det.thresholds import score_at, tune_thresholds

    project = CopickProject(path)
    dets, truths, rows = [], [], {}
    for run in project.runs():
        d = picker.detect_run(project, run)
        dets.append(d)
        truths.append(project.read_picks(run))
        for name, row in miss_bins(d, truths[-1], picker.particles, picker.thresholds).items():
            acc = rows.setdefault(name, dict.fromkeys(row, 0))
            for k, v in row.items():
                acc[k] += v
    at = score_at(dets, truths, picker.particles, picker.thresholds)
    oracle = tune_thresholds(dets, truths, picker.particles, 0.5)  # the project's own
    return {"project": path, "runs": len(dets), "classes": rows, "f4": at.score,
            "oracle_f4": oracle.score}


def markdown(reports: list[dict]) -> str:
    lines = ["| project | class | refs | found | ceiling | " + " | ".join(BINS) + " |",
             "|---|---|---|---|---|" + "---|" * len(BINS)]
    for r in reports:
        for name, row in r["classes"].items():
            n = max(row["references"], 1)
            lines.append(f"| {Path(r['project']).name} | {name} | {row['references']} | "
                         f"{row['found'] / n:.2f} | {row['ceiling'] / n:.2f} | "
                         + " | ".join(str(row[b]) for b in BINS) + " |")
    lines.append("")
    lines += [f"{Path(r['project']).name}: weighted F4 {r['f4']:.3f}, at thresholds tuned on "
              f"it {r['oracle_f4']:.3f}" for r in reports]
    return "\n".join(lines)


def main() -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    ap.add_argument("--no-rescore", dest="rescore", action="store_false",
                    help="the network alone, not the checkpoint's candidate rescorer")
    a = ap.parse_args()
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    from sparse_det.inference import Picker

    picker = Picker.load(a.checkpoint, a.device, rescore=a.rescore)
    reports = [project_report(picker, p) for p in a.project]
    print(markdown(reports))
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
