"""Each run's picks kept as they are made, so that an interrupted infer resumes.

A project of hundreds of tomograms takes an hour or more on a CPU; a crash, a full disk or a
lost session at run 300 should not cost the first 299. `infer_project(parts_dir=...)`
writes every run's detections to DIR/RUN.json (atomically) with a key of what made them:
the checkpoint's bytes, the precision it ran at, the test-time mirrors, the rescorer, the
user's input choices and the tomogram read (its level's folder, file count and newest
mtime). Run again, it reads the runs whose file carries the same key and picks only the
others; a file made any other way, or unreadable, is picked again and overwritten.
`python -m sparse_det.infer` keeps them beside its CSV (OUT.parts/) and removes them once
the CSV is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.atomic import atomic_write_text, writable_dir
from data_tools.particles import DataError
from data_tools.run_names import validate_run_name
from sparse_det.structures import DETECTION_COLUMNS

if TYPE_CHECKING:
    from data_tools.copick_io import CopickProject
    from data_tools.sparsify_config import SparsifyConfig

log = logging.getLogger(__name__)

FORMAT = 1
PARTS_SUFFIX = ".parts"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a checkpoint: a few MB, milliseconds)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parts_key(checkpoint: str | Path, precision: str, tta: str, rescore: bool,
              input_overrides: dict | None) -> dict:
    """What a run's picks depend on beyond its tomogram. `precision` and `tta` as resolved
    (never "auto" or None): bf16 and fp32 picks differ a little, so neither stands in for
    the other."""
    overrides = {k: v for k, v in (input_overrides or {}).items() if v is not None}
    return {"format": FORMAT, "checkpoint_sha256": file_digest(checkpoint),
            "precision": precision, "tta": tta, "rescore": bool(rescore),
            "input_overrides": json.loads(json.dumps(overrides, sort_keys=True, default=str))}


def part_path(folder: str | Path, run: str) -> Path:
    """Where a run's picks are kept under `folder`."""
    return Path(folder) / f"{validate_run_name(run)}.json"


def parts_dir_for(out_csv: str | Path) -> Path:
    """Where infer keeps the runs' picks while it writes `out_csv`."""
    out = Path(out_csv)
    return out.with_name(out.name + PARTS_SUFFIX)


def tomogram_stamp(project: CopickProject, run: str, cfg: SparsifyConfig) -> dict | None:
    """Which tomogram level a run's picks were read from and when its files last changed
    (the newest mtime under that level's folder, and how many files): a tomogram written
    again after an interrupted call is picked again. None where the run has no tomogram
    (picked from shards alone)."""
    from data_tools.sparsify import plan_input

    try:
        source = plan_input(project, run, cfg).source
        level = project.tomogram_path(run, source.folder_spacing_A, source.tomo_type)
    except DataError:
        return None
    files = [p for p in (level / str(source.level)).rglob("*") if p.is_file()]
    files += [p for p in level.glob(".z*") if p.is_file()]  # metadata: scale, origin
    return {"path": str(level.resolve()), "level": source.level, "files": len(files),
            "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0)}


class RunParts:
    """DIR/RUN.json per run: {"key": parts_key plus the run's tomogram stamp, "rows":
    [[experiment, type, x, y, z, score], ...]} (Å, DETECTION_COLUMNS). `stamp(run)`: what
    identifies the run's input (tomogram_stamp), or None."""

    def __init__(self, folder: str | Path, key: dict,
                 stamp: Callable[[str], dict | None] | None = None):
        self.folder = writable_dir(folder)
        self.key = key
        self.stamp = stamp or (lambda run: None)

    def key_for(self, run: str) -> dict:
        return self.key | {"tomogram": self.stamp(run)}

    def path(self, run: str) -> Path:
        return part_path(self.folder, run)

    def get(self, run: str) -> list[tuple] | None:
        """The run's rows if its file was made with this key, else None."""
        path = self.path(run)
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            rows = [tuple(r) for r in doc["rows"]]
            ok = doc["key"] == self.key_for(run) and all(
                len(r) == len(DETECTION_COLUMNS) and r[0] == run for r in rows)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable (%s); picking run %r again", path, exc, run)
            return None
        if not ok:
            log.info("%s: made with another checkpoint or settings; picking run %r again",
                     path, run)
            return None
        return rows

    def read(self, runs: list[str]) -> dict[str, list[tuple]]:
        """{run: rows} of the runs whose file was made with this key."""
        rows = {run: got for run in runs if (got := self.get(run)) is not None}
        if rows:
            log.info("%s: %d of %d runs' picks read from an earlier call", self.folder,
                     len(rows), len(runs))
        return rows

    def put(self, run: str, rows: list[tuple]) -> None:
        atomic_write_text(self.path(run), json.dumps({"key": self.key_for(run),
                                                      "rows": rows}))
