"""Run names: what a run's folder may be called, another tool's name made one, and the runs
a command line or a config names — each a run or a shell-style pattern (`TS_6*`)."""

from __future__ import annotations

import fnmatch
import re

from data_tools.datasets import making_hint
from data_tools.particles import DataError

_RUN_CHARS = r"A-Za-z0-9_.\-"  # what a run's folder name may hold
_RUN_NAME = re.compile(rf"^[A-Za-z0-9][{_RUN_CHARS}]*$")


def validate_run_name(run: str) -> str:
    """Run names become folder names: no separators, no `..`, nothing that escapes the root."""
    if not isinstance(run, str) or not _RUN_NAME.match(run) or ".." in run:
        raise DataError(f"invalid run name {run!r}: use letters, digits, '_', '-', '.' (no '..')")
    return run


def as_run_name(name: str) -> str:
    """A file's or another tool's name for a tomogram as a run name: the characters a run's
    folder may not hold (a space, '+', ...) made '_' (`TS 01` → `TS_01`), the same way for
    import_mrc's runs and the tomogram names of imported picks."""
    return re.sub(rf"[^{_RUN_CHARS}]", "_", name)


def names_run(name: str, run: str) -> bool:
    """Whether `name` — a run, or a shell-style pattern such as `TS_6*` or `TS_[56]_*`
    (a run's name holds none of `*?[`) — names `run`."""
    return fnmatch.fnmatchcase(run, name) if _is_pattern(name) else run == name


def _is_pattern(name: str) -> bool:
    return bool(set(name) & set("*?["))


def naming_none(names: list[str], runs: list[str]) -> list[str]:
    """Those of `names` that name none of `runs`."""
    return [n for n in names if not any(names_run(n, r) for r in runs)]


def named_among(runs: list[str], names: list[str] | None, exclude=()) -> list[str]:
    """Those of `runs` that `names` name (all where `names` is None or empty) and `exclude`
    does not, in their order."""
    return [r for r in runs if (not names or any(names_run(n, r) for n in names))
            and not any(names_run(n, r) for n in exclude)]


def runs_named(projects: list, runs: list[str] | None,
               exclude: list[str] | tuple[str, ...] = ()) -> list[list[str]]:
    """Each project's (CopickProject's) runs that `runs` name (every run where `runs` is None
    or empty) and `exclude` does not, in the project's order; each name a run or a pattern
    (names_run).
    A name in `runs` that names no run of any project is an error naming it: a mistyped run
    left out without a word would read as "no annotated runs" or fit on fewer runs. One in
    `exclude` is not: an argument file leaves out runs that only some checkouts have
    (configs/rescore_runs.args)."""
    for n in [*(runs or []), *exclude]:
        if not _is_pattern(n):
            validate_run_name(n)  # `../x` is refused as such, not looked for
    have = [p.runs() for p in projects]
    every = sorted(set().union(*have))
    missing = naming_none(runs or [], every)
    if missing:
        shown = ", ".join(every[:12]) + (f", ... ({len(every)} in all)" if len(every) > 12
                                         else "")
        hint = next(filter(None, (making_hint(p.path, missing) for p in projects)), "")
        raise DataError(f"{', '.join(str(p.path) for p in projects)}: no run "
                        f"{', '.join(map(repr, missing))}; runs: {shown or 'none'}{hint}")
    return [named_among(h, runs, exclude) for h in have]
