"""The command line `finetune` and `adapt` share (a project, a base checkpoint, an output,
steps and a time budget, a work folder), and how both end: one `error:` line for bad input,
one line for Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys

from data_tools.cli_args import add_runs_argument
from data_tools.particles import DataError
from sparse_det.checkpoint import DEFAULT_CHECKPOINT, CheckpointError


def adaptation_arguments(doc: str, *, project: str, out: str, steps: int, per: str
                         ) -> argparse.ArgumentParser:
    """The command line finetune and adapt share: a project, a base checkpoint, an output,
    a step count and a time budget, a device, a work folder."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--project", required=True, help=project)
    ap.add_argument("--out", required=True, help=out)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="base checkpoint")
    add_runs_argument(ap, help="only these runs")
    ap.add_argument("--steps", type=int, default=steps, help=f"per {per}")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help=f"wall-clock budget for every {per} together (0: none)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", help="shards and training folders (default: <out>.work)")
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    ap.add_argument("--blend", type=float, default=1.0,
                    help="write BLEND x the trained weights + (1 - BLEND) x the base's "
                         "(WiSE-FT; 1: the trained weights alone)")
    ap.add_argument("--config-radii", action="store_true",
                    help="train with the config's radii where they are far off the "
                         "checkpoint's (default: the checkpoint's; copick's data-portal "
                         "configs give every object 50 Å)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(message)s")


def run_or_report(call):
    """call()'s result, or None after printing one `error:` line for bad input (a missing
    run, a foreign checkpoint, an unwritable output): the command then exits with 2."""
    try:
        return call()
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torch
        print("interrupted; the same command resumes from the trainings kept in its --work "
              "folder", file=sys.stderr)
        raise SystemExit(130) from None
