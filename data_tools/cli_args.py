"""Argument types the command lines share: counts that must be at least some number, and
run names as a shell gives them."""

from __future__ import annotations

import argparse
import os


def at_least(least: int):
    """An argparse type: an integer of at least `least`."""
    def integer(text: str) -> int:  # argparse names the type by it: "invalid integer value"
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"{value}: at least {least}")
        return value
    return integer


def run_argument(value: str) -> str:
    """A run named on a command line, less a trailing '/' (a shell's completion of the
    run's folder)."""
    return value.rstrip("/") or value


class _Runs(argparse.Action):
    """Each name once: a run named twice was picked twice, its particles written twice to
    the CSV (run_names.runs_named then takes each run once, in the project's order, however
    many names or patterns name it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(dict.fromkeys(run_argument(v) for v in values)))


RUNS_HELP = "each a run or a quoted shell-style pattern: 'TS_6*'"


def add_runs_argument(ap, *, nargs: str = "*", help: str | None = None,
                      aliases: tuple[str, ...] = (), required: bool = False) -> None:
    """--runs, for every command that reads some of a project's runs."""
    ap.add_argument("--runs", *aliases, dest="runs", nargs=nargs, action=_Runs,
                    metavar="RUN", required=required,
                    help=f"{help or 'only these runs'}; {RUNS_HELP}")


def expand_home(a: argparse.Namespace) -> argparse.Namespace:
    """`a` with a leading `~` of each string argument expanded, as a shell leaves it in
    `--out=~/picks.csv`: else a folder named `~` is made in the working directory."""
    def home(v):
        return os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v

    for key, value in vars(a).items():
        setattr(a, key, [home(v) for v in value] if isinstance(value, list) else home(value))
    return a
