"""Scores a submission with the competition metric.

    python -m sparse_det.evaluate --solution PROJECT_OR_CSV --submission CSV [--runs RUN ...]
        [--json]

Every run the solution scores counts, as in the competition: a run the submission has no
row of has every particle missed, and a line on stderr says so (a submission of some runs,
`infer --runs`, is scored on those by `--runs`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data_tools.cli_args import add_runs_argument, expand_home
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.run_names import named_among, naming_none, runs_named
from data_tools.truth_user import add_truth_user_argument
from sparse_det.class_match import as_listed
from sparse_det.metric import Score, score_tables
from sparse_det.writers import project_solution, read_submission


def _warn_unscored(picks, scored_runs: set[str], submission: str | Path) -> None:
    """A line on stderr for a submission's rows of runs the solution does not score: they
    count for nothing, as in the competition's metric, and where that is every row the
    submission was most likely scored against the wrong solution."""
    other = sorted(set(picks["experiment"]) - scored_runs)
    if other:
        n = int(picks["experiment"].isin(other).sum())
        shown = ", ".join(other[:8]) + (f", ... ({len(other)} runs)" if len(other) > 8 else "")
        print(f"{submission}: {n} of {len(picks)} rows are of runs the solution does not score "
              f"({shown}); they count for nothing", file=sys.stderr)


def _warn_unpicked(picks, scored_runs: list[str], submission: str | Path) -> None:
    """A line on stderr for scored runs the submission has no row of: every particle there
    counts as missed, right for a submission of every run, not for one of some."""
    absent = sorted(set(scored_runs) - set(picks["experiment"]))
    if absent:
        shown = ", ".join(absent[:8]) + (f", ... ({len(absent)} runs)" if len(absent) > 8
                                         else "")
        print(f"{submission}: no rows of {len(absent)} of the {len(scored_runs)} runs scored "
              f"({shown}); their particles count as missed (--runs scores the runs named "
              "alone)", file=sys.stderr)


def _of_runs(table, wanted: list[str] | None, every: list[str], where: str):
    """`table`'s rows of the runs `wanted` names (runs or patterns) among `every`, or all
    where None; a name that names none of them is an error."""
    if not wanted:
        return table
    missing = naming_none(wanted, every)
    if missing:
        raise DataError(f"{where}: no run {', '.join(map(repr, missing))} to score; runs: "
                        f"{', '.join(every[:12]) or 'none'}")
    return table[table["experiment"].isin(named_among(every, wanted))].reset_index(drop=True)


def evaluate(solution: str | Path, submission: str | Path, truth_user: str | None = None,
             runs: list[str] | None = None) -> Score:
    """`truth_user`: whose picks in a solution project are the ground truth
    (CopickProject.truth_files). A project scores its annotated runs, each on the particles
    it annotates in full (CopickProject.read_truth), the submission's particle names read
    as the project's config calls them (class_match.as_listed). `runs`: only the runs these
    names or patterns name, and the submission's rows of them."""
    solution = Path(solution)
    if solution.suffix == ".csv":
        particles = ParticleTable.competition()
        truth = read_submission(solution)
        every = sorted(set(truth["experiment"]))
        truth = _of_runs(truth, runs, every, str(solution))
        picks = read_submission(submission)
        picks = picks[~picks["experiment"].isin(set(every) - set(truth["experiment"]))
                      ].reset_index(drop=True)
        score = score_tables(truth, picks, particles)
        _warn_unscored(picks, set(truth["experiment"]), submission)
        _warn_unpicked(picks, sorted(set(truth["experiment"])), submission)
        return score
    project = CopickProject(solution, truth_user=truth_user)
    left_out = set()
    if runs:  # the rows of the project's other runs are not this score's
        named = runs_named([project], runs)[0]
        left_out = set(project.runs()) - set(named)
    runs = project.annotated_runs(sorted(set(project.runs()) - left_out))
    if not runs:
        raise DataError(f"{solution}: no run has ground-truth picks (python -m "
                        "data_tools.info shows whose picks are read)")
    unannotated = {(r, n) for r in runs for n in project.training_truth(r)[1]}
    picks = read_submission(submission)
    picks = picks[~picks["experiment"].isin(left_out)].reset_index(drop=True)
    picks["particle_type"] = as_listed(picks["particle_type"], project.particles,
                                       lambda line: print(line, file=sys.stderr))
    score = score_tables(project_solution(project, runs), picks,
                         project.particles, experiments=runs, not_annotated=unannotated)
    if not np.isfinite(score.score):
        raise DataError(f"{solution}: nothing to score: every scored particle of its "
                        "annotated runs is unannotated or picked in part there")
    _warn_unscored(picks, set(runs), submission)
    _warn_unpicked(picks, runs, submission)
    return score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Competition F-beta (beta=4) of a submission CSV.")
    ap.add_argument("--solution", required=True, help="copick project (its picks) or CSV")
    ap.add_argument("--submission", required=True)
    add_runs_argument(ap, help="score only these runs (default: every run the solution scores)")
    ap.add_argument("--json", action="store_true")
    add_truth_user_argument(ap)
    a = expand_home(ap.parse_args(argv))
    try:
        score = evaluate(a.solution, a.submission, a.truth_user, a.runs)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(score.to_dict(), indent=2) if a.json else score.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
