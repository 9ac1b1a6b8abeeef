"""A simulated project's records: solution.csv (every pick, the competition's columns) and
simulation.json (each call's settings and every run's drawn parameters), written merged with
earlier calls into the same project, and read back as the ranges that draw a run again."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from data_tools.atomic import atomic_write_text
from data_tools.particles import DataError
from data_tools.sim_ranges import HARD_NEGATIVE_FIELDS, SimRanges
from data_tools.tilt_ranges import NOT_RANGES, TiltRanges, recorded_choices


def write_records(out: Path, sol: pd.DataFrame, record: dict) -> None:
    """solution.csv and simulation.json, merged with those of earlier calls into the same
    project (several seeds, physics or prefixes in one project): rows and runs of other runs
    are kept; each call's settings are one entry of `batches`."""
    sol_path, rec_path = out / "solution.csv", out / "simulation.json"
    if sol_path.exists():
        old = pd.read_csv(sol_path).drop(columns="id")
        sol = pd.concat([old[~old["experiment"].isin(record["runs"])], sol], ignore_index=True)
    sol.insert(0, "id", np.arange(len(sol)))
    runs = dict(record.pop("runs"))
    batches = [record]
    if rec_path.exists():
        old = json.loads(rec_path.read_text())
        old_runs = old.pop("runs", {})
        batches = old.pop("batches", [old]) + batches
        runs = {k: v for k, v in old_runs.items() if k not in runs} | runs
    merged = record | {"batches": batches, "runs": runs}  # the latest call's keys on top
    atomic_write_text(sol_path, sol.to_csv(index=False))
    atomic_write_text(rec_path, json.dumps(merged, indent=2))


def like_run(project: str | Path, run: str) -> tuple[SimRanges, TiltRanges | None, str, tuple]:
    """(ranges, tilt ranges or None, physics, shape) that draw runs with exactly the
    parameters `run` of a simulated project was drawn with (its simulation.json): every
    range pinned to the run's value, so new runs differ from it only in what the seed
    places (particles, orientations, noise, hard negatives' geometry). What
    bench/ceiling.py trains on to ask whether a run's score is the picker's ceiling."""
    path = Path(project) / "simulation.json"
    try:
        record = json.loads(path.read_text())
        params = record["runs"][run]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from exc
    except KeyError:
        raise DataError(f"{path}: no simulated run {run!r}") from None
    pinned = {}
    for f in fields(SimRanges):
        if f.name == "contrast_scale_log10":
            v = float(np.log10(params["contrast_scale"]))
        elif f.name in HARD_NEGATIVE_FIELDS:
            drawn = params.get("hard_negatives", {})
            v = len(drawn.get("carbon" if f.name == "carbon_edges" else f.name, []))
        else:
            # a shape share absent: none drawn; the per-class mass factors are a draw of
            # their own stream, not a range, so a copy is drawn without them
            v = params.get(f.name, 0.0)
        pinned[f.name] = (v, v)
    tilt = None
    if record.get("physics") == "tilt":
        t = params["tilt"]
        tilt = TiltRanges.from_dict({
            **{f.name: (t[f.name], t[f.name]) for f in fields(TiltRanges)
               if f.name in t
               and f.name not in (*NOT_RANGES, "axis_error_deg")},
            # the axis error's sign is drawn per run; its size is the parameter
            "axis_error_deg": (abs(t.get("axis_error_deg", 0.0)),) * 2,
            "denoisers": (t["denoiser"],), "align_recentre": t["align_recentre"],
            "halves": "halves_seed" in t, **recorded_choices(t)})
    return (SimRanges.from_dict(pinned), tilt, record.get("physics", "fast"),
            tuple(record["shape_zyx"]))
