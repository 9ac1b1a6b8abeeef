"""Each held-out family's per-class F4 pooled over all its runs, and how far it would move
were its runs drawn again: a bootstrap over runs.

    python bench/families.py RESULTS.json [MORE.json ...] [@configs/families_44.args]
                             [--family LABEL PROJECT [PROJECT ...]] [--draws 2000] [--json F]

RESULTS.json: `bench/detector.py --json` (its "per_run_counts": each run's TP, FP and FN per
class). `--family` pools the runs of several projects (given by folder name, e.g. the two
draws of one family, heldout_lowsnr and heldout2_lowsnr); a project no family names is a
family of its own. The interval is the 2.5-97.5 % range of the pooled F4 over `--draws`
resamplings of the family's runs with replacement (seeded): a family of 2-4 runs, or a class
with 20 particles in it, moves by tenths between draws, and a target is met or missed only
beyond that. Runs, not particles, are resampled, since a run's particles share its physics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.particles import ParticleTable
from sparse_det.argfile import ArgumentFileParser
from sparse_det.metric import BETA

SEED = 0


def run_counts(paths: list[str]) -> dict[str, dict[str, dict[str, list[int]]]]:
    """{project folder name: {run: {class: [tp, fp, fn]}}} from detector.py JSON files."""
    out: dict = {}
    for path in paths:
        for r in json.loads(Path(path).read_text()):
            if "per_run_counts" not in r:
                raise SystemExit(f"{path}: {r['project']} has no per-run counts; bench it again "
                                 "with bench/detector.py")
            name = Path(r["project"]).name
            if name in out:
                raise SystemExit(f"{path}: project {name} is benched twice")
            out[name] = r["per_run_counts"]
    return out


def f4_of(counts: np.ndarray) -> np.ndarray:
    """F-beta of [..., 3] (tp, fp, fn) counts; 0 where there is nothing to find or pick."""
    tp, fp, fn = np.moveaxis(counts.astype(np.float64), -1, 0)
    b2 = BETA**2
    den = (1 + b2) * tp + b2 * fn + fp
    return np.divide((1 + b2) * tp, den, out=np.zeros_like(tp), where=den > 0)


def family_table(runs: list[dict[str, list[int]]], particles: ParticleTable, draws: int,
                 seed: int = SEED) -> dict:
    """Pooled per-class and weighted F4 of a family's runs, each with its bootstrap interval."""
    if not runs:
        raise ValueError("a family needs at least one benched run")
    names = [p.name for p in particles.scored]
    weights = np.array([p.weight for p in particles.scored], np.float64)
    counts = np.array([[r.get(n, [0, 0, 0]) for n in names] for r in runs], np.int64)  # R,C,3
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(runs), size=(draws, len(runs)))
    boot = f4_of(counts[pick].sum(1))  # draws, C
    boot_w = boot @ weights / weights.sum()
    pooled = f4_of(counts.sum(0))

    def interval(x: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(x, [2.5, 97.5])]

    return {"runs": len(runs),
            "particles": {n: int(counts[:, i, 0].sum() + counts[:, i, 2].sum())
                          for i, n in enumerate(names)},
            "per_class": {n: float(pooled[i]) for i, n in enumerate(names)},
            "per_class_interval": {n: interval(boot[:, i]) for i, n in enumerate(names)},
            "score": float(pooled @ weights / weights.sum()),
            "score_interval": interval(boot_w)}


def families(counts: dict, groups: list[list[str]]) -> dict[str, list[str]]:
    """{label: project names}: the --family groups, then every other project on its own."""
    out, named = {}, set()
    for label, *projects in groups:
        missing = [p for p in projects if p not in counts]
        if missing:
            raise SystemExit(f"--family {label}: no results for {missing}; "
                             f"benched: {sorted(counts)}")
        out[label] = projects
        named |= set(projects)
    out |= {p: [p] for p in counts if p not in named}
    return out


def markdown(tables: dict[str, dict]) -> str:
    names = list(next(iter(tables.values()))["per_class"])
    lines = ["| family | runs | " + " | ".join(names) + " | weighted F4 |",
             "|" + "---|" * (len(names) + 3)]
    for label, t in tables.items():
        cells = [f"{t['per_class'][n]:.3f} ({t['per_class_interval'][n][0]:.2f}–"
                 f"{t['per_class_interval'][n][1]:.2f}; {t['particles'][n]})" for n in names]
        lo, hi = t["score_interval"]
        lines.append(f"| {label} | {t['runs']} | " + " | ".join(cells)
                     + f" | **{t['score']:.3f}** ({lo:.3f}–{hi:.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="bench/detector.py --json files")
    ap.add_argument("--family", nargs="+", action="append", default=[],
                    metavar=("LABEL", "PROJECT"), help="pool these projects' runs as one family")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if any(len(g) < 2 for g in a.family):
        ap.error("--family needs a label and at least one project")
    counts = run_counts(a.results)
    particles = ParticleTable.competition()
    tables = {}
    for label, projects in families(counts, a.family).items():
        runs = [run for p in projects for run in counts[p].values()]
        if not runs:
            raise SystemExit(f"--family {label}: {projects} hold no benched runs")
        tables[label] = family_table(runs, particles, a.draws)
    print(markdown(tables))
    print("\n(pooled F4; in brackets the 2.5-97.5 % range over the family's runs resampled "
          f"{a.draws} times, and each class's particles)")
    if a.json:
        Path(a.json).write_text(json.dumps(tables, indent=2))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
