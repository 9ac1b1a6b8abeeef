"""Single-process training.

    python -m sparse_det.train --config configs/NAME.yaml [--out-dir DIR] [--steps N] [--seed S]
                               [--fresh]
"""

from __future__ import annotations

import argparse
import sys

from data_tools.cli_args import at_least, expand_home
from data_tools.particles import DataError
from sparse_det.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the sparse detector.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out-dir")
    ap.add_argument("--steps", type=at_least(1))
    ap.add_argument("--device")
    ap.add_argument("--seed", type=int, help="train.seed: crops, augmentation, initialisation")
    ap.add_argument("--init", help="start from this checkpoint's weights (fine-tuning)")
    ap.add_argument("--fresh", action="store_true", help="ignore last.pt in the out dir")
    ap.add_argument("--quiet", action="store_true")
    a = expand_home(ap.parse_args(argv))
    try:
        cfg = load_config(a.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.out_dir:
        cfg.train.out_dir = a.out_dir
    if a.steps is not None:
        cfg.train.steps = a.steps
    if a.device:
        cfg.train.device = a.device
    if a.seed is not None:
        cfg.train.seed = a.seed
    if a.init:
        cfg.train.init_checkpoint = a.init
    from sparse_det.training import train

    try:
        best = train(cfg, progress=not a.quiet and sys.stderr.isatty(), resume=not a.fresh)
    except (DataError, ValueError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback through torch
        print(f"interrupted; the same command resumes from {cfg.train.out_dir}/last.pt (the "
              "last epoch's end)", file=sys.stderr)
        return 130
    print(f"best checkpoint: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
