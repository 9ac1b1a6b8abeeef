"""Submission CSV (`id,experiment,particle_type,x,y,z`, Å): read, write atomically, and picks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from data_tools.atomic import atomic_write_text
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError

SUBMISSION_COLUMNS = ["id", "experiment", "particle_type", "x", "y", "z"]


def read_submission(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc
    missing = [c for c in SUBMISSION_COLUMNS[1:] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {SUBMISSION_COLUMNS}")
    try:
        xyz = df[["x", "y", "z"]].apply(pd.to_numeric).to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: x/y/z must be numbers in Å ({exc})") from exc
    if not np.isfinite(xyz).all():
        raise DataError(f"{path}: x/y/z must be finite numbers (Å)")
    df[["x", "y", "z"]] = xyz
    df["experiment"] = df["experiment"].astype(str)
    return df


def to_submission(rows: pd.DataFrame) -> pd.DataFrame:
    """Orders columns and numbers the rows from 0."""
    df = rows[["experiment", "particle_type", "x", "y", "z"]].reset_index(drop=True)
    df.insert(0, "id", np.arange(len(df)))
    return df


def write_submission(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    buf = io.StringIO()
    df[SUBMISSION_COLUMNS].to_csv(buf, index=False, float_format="%.3f")
    atomic_write_text(path, buf.getvalue())
    return path


def project_solution(project: CopickProject, runs: list[str] | None = None) -> pd.DataFrame:
    """The ground-truth picks of a project as a solution table."""
    rows = []
    for run in runs or project.runs():
        for name, pts in project.read_picks(run).items():
            rows += [(run, name, *xyz) for xyz in pts]
    return to_submission(pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y",
                                                     "z"]))
