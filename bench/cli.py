"""How a benchmark script ends: bad input (a project not simulated yet, a foreign
checkpoint, a missing file) as one `error:` line and exit 2, Ctrl-C as one line and exit
130, as the project's commands end; a bug still shows its traceback."""

from __future__ import annotations

import sys

from data_tools.particles import DataError
from sparse_det.checkpoint import CheckpointError


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
