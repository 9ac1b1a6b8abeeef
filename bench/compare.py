"""Run-by-run differences between checkpoints benched on the same held-out runs
(`bench/detector.py --json`, which stores each run's weighted F4 under "per_run"), or tuned
on the same tuning runs (a checkpoint `sparse_det.tune` wrote: its runs' weighted F4 at the
thresholds it chose, under extra["tuned_per_run"]).

    python bench/compare.py REFERENCE.json OTHER.json [OTHER.json ...]
    python bench/compare.py REFERENCE_tuned.pt OTHER_tuned.pt [...]
    python bench/compare.py --match-runs REFERENCE.json OTHER.json  # same runs, other copies

`--match-runs` pairs runs by name across differently named projects: the same scenes written
another way (heldout_tilt_sirt's runs against heldout_tilt's, a denoised copy against its
original). `--family LABEL PROJECT [PROJECT ...]` (or `@configs/families_44.args`) pools the
runs of several projects into one row, as bench/families.py does: a held-out family's two
draws.

Prints, per project and pooled over every run, the mean of OTHER − REFERENCE and its
standard error: a family of 2–4 runs moves by a few hundredths between checkpoints that
differ only by more training (README, *Results*), so a difference means something only
beyond its standard error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.families import families
from sparse_det.argfile import ArgumentFileParser
from sparse_det.thresholds import paired_difference


def per_run(path: str) -> dict[str, dict[str, float]]:
    """{project name: {run: weighted F4}}."""
    if path.endswith(".pt"):
        from sparse_det.checkpoint import read_checkpoint

        tuned = read_checkpoint(path).get("extra", {}).get("tuned_per_run")
        if not tuned:
            raise SystemExit(f"{path}: no per-run tuning scores; tune it again")
        return tuned
    out = {}
    for r in json.loads(Path(path).read_text()):
        if "per_run" not in r:
            raise SystemExit(f"{path}: {r['project']} has no per-run scores; bench it again")
        out[Path(r["project"]).name] = r["per_run"]
    return out


def compare(ref: dict, other: dict) -> list[tuple[str, int, float, float]]:
    """(project, runs, mean difference, its standard error) per shared project, then 'all'."""
    rows, all_a, all_b = [], [], []
    for name in ref:
        if name not in other:
            continue
        runs = sorted(set(ref[name]) & set(other[name]))
        a = [other[name][r] for r in runs]
        b = [ref[name][r] for r in runs]
        rows.append((name, len(runs), *paired_difference(a, b)))
        all_a += a
        all_b += b
    rows.append(("all", len(all_a), *paired_difference(all_a, all_b)))
    return rows


def match_runs(ref: dict, other: dict) -> dict[str, dict[str, float]]:
    """`ref` regrouped under `other`'s project names, each run found by its name in
    whichever reference project holds it."""
    by_run: dict[str, float] = {}
    for runs in ref.values():
        for run, f4 in runs.items():
            if run in by_run:
                raise SystemExit(f"run {run} is in two reference projects; cannot match by name")
            by_run[run] = f4
    return {name: {r: by_run[r] for r in runs if r in by_run} for name, runs in other.items()}


def regroup(per_project: dict, groups: list[list[str]]) -> dict[str, dict[str, float]]:
    """{family label: {run: F4}}: each --family group's projects as one, every other project
    as it is."""
    out = {}
    for label, projects in families(per_project, groups).items():
        runs = [r for p in projects for r in per_project[p].items()]
        if len({r for r, _ in runs}) < len(runs):
            raise SystemExit(f"--family {label}: a run name is in two of {projects}")
        out[label] = dict(runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference")
    ap.add_argument("other", nargs="+")
    ap.add_argument("--match-runs", action="store_true",
                    help="pair runs by name whatever project holds them")
    ap.add_argument("--family", nargs="+", action="append", default=[],
                    metavar=("LABEL", "PROJECT"), help="pool these projects' runs in one row")
    a = ap.parse_args(argv)
    if any(len(g) < 2 for g in a.family):
        ap.error("--family needs a label and at least one project")
    ref = per_run(a.reference)
    for path in a.other:
        other = per_run(path)
        ref_rows = regroup(match_runs(ref, other) if a.match_runs else ref, a.family)
        other = regroup(other, a.family)
        print(f"\n{Path(path).name} − {Path(a.reference).name} (mean ± standard error)")
        print("| project | runs | difference |\n|---|---|---|")
        for name, n, mean, se in compare(ref_rows, other):
            print(f"| {name} | {n} | {mean:+.3f} ± {se:.3f} |")
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
