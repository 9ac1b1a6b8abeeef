"""How a benchmark script ends: bad input (a project not simulated yet, a foreign
checkpoint, a missing file) as one `error:` line and exit 2, Ctrl-C as one line and exit
130, as the project's commands end; a bug still shows its traceback."""

from __future__ import annotations

import sys
from pathlib import Path

from data_tools.datasets import sets_making
from data_tools.particles import DataError
from sparse_det.checkpoint import CheckpointError


def made(projects: list[str]) -> list[str]:
    """`projects`, or one error naming every one not simulated yet and the sets of
    configs/datasets.yaml that make them all (`@configs/heldout_44.args` names 14
    projects of two sets: one command, not one missing project at a time)."""
    missing = [p for p in projects if not Path(p).expanduser().exists()]
    if not missing:
        return projects
    sets = list(dict.fromkeys(s[0] for s in map(sets_making, missing) if s))
    how = f"; python -m data_tools.datasets make {' '.join(sets)} makes them" if sets else ""
    raise DataError(f"{', '.join(missing)}: "
                    f"{'projects do' if len(missing) > 1 else 'project does'} not exist{how}")


def run(main) -> int:
    """main()'s exit code, or 2 after its bad-input error's line, or 130 after Ctrl-C."""
    try:
        return main()
    except (DataError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
