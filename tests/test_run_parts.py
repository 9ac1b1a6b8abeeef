"""An interrupted infer resumes: each run's picks are kept as they are made (sparse_det/
run_parts.py), and a second call reads the runs made with the same checkpoint and settings
instead of picking them again. Real projects, the shipped checkpoint, real tomograms broken
the way a user's can be (NaN voxels)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from data_tools.simulate import simulate_project
from sparse_det import infer
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.run_parts import RunParts, parts_dir_for, parts_key
from sparse_det.stream import infer_project


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return simulate_project(tmp_path_factory.mktemp("parts") / "p", 2, 11, (64, 192, 192),
                            progress=False)


def _break(project: CopickProject, run: str) -> np.ndarray:
    """Puts a NaN in the run's tomogram; returns the original to mend it with."""
    vol = project.read_tomogram(run).data.copy()
    bad = vol.copy()
    bad[5, 6, 7] = np.nan
    project.write_tomogram(run, bad)
    return vol


def _run_rows(table: pd.DataFrame, run: str) -> pd.DataFrame:
    return table[table.experiment == run].reset_index(drop=True)


def test_an_interrupted_call_resumes_with_the_runs_it_made(two_runs, tmp_path, caplog):
    first, second = two_runs.runs()
    parts = tmp_path / "parts"
    original = _break(two_runs, second)
    try:
        with pytest.raises(DataError, match="NaN"):
            infer_project(two_runs, DEFAULT_CHECKPOINT, device="cpu", precision="fp32",
                          parts_dir=parts)
    finally:
        two_runs.write_tomogram(second, original)
    assert sorted(p.name for p in parts.iterdir()) == [f"{first}.json"]
    kept = json.loads((parts / f"{first}.json").read_text())
    assert kept["key"]["precision"] == "fp32" and kept["rows"], kept["key"]

    # Mark the kept picks: if the second call reads them, the mark comes back.
    kept["rows"] = [[r[0], r[1], r[2] + 1000.0, *r[3:]] for r in kept["rows"]]
    (parts / f"{first}.json").write_text(json.dumps(kept))
    with caplog.at_level(logging.INFO, logger="sparse_det.run_parts"):
        resumed = infer_project(two_runs, DEFAULT_CHECKPOINT, device="cpu",
                                precision="fp32", parts_dir=parts)
    assert "1 of 2 runs' picks read" in caplog.text
    fresh = infer_project(two_runs, DEFAULT_CHECKPOINT, device="cpu", precision="fp32")
    assert list(resumed.experiment.unique()) == [first, second]  # the runs' order
    a, b = _run_rows(resumed, first), _run_rows(fresh, first)
    assert len(a) == len(b) > 5
    np.testing.assert_allclose(a.x, b.x + 1000.0)
    pd.testing.assert_frame_equal(_run_rows(resumed, second), _run_rows(fresh, second))
    assert (parts / f"{second}.json").is_file()


def test_picks_made_another_way_are_made_again(two_runs, tmp_path, caplog):
    first = two_runs.runs()[0]
    parts = tmp_path / "parts"
    infer_project(two_runs, DEFAULT_CHECKPOINT, runs=[first], device="cpu",
                  precision="fp32", parts_dir=parts)
    doc = json.loads((parts / f"{first}.json").read_text())
    marked = [[r[0], r[1], r[2] + 1000.0, *r[3:]] for r in doc["rows"]]
    key = parts_key(DEFAULT_CHECKPOINT, "fp32", "flip", True, None)
    stamp = doc["key"].pop("tomogram")
    assert doc["key"] == key
    assert stamp["path"].endswith(".zarr") and stamp["files"] > 1 and stamp["mtime_ns"] > 0
    # other mirrors, another precision, another input choice: each its own key
    for other in (parts_key(DEFAULT_CHECKPOINT, "fp32", "none", True, None),
                  parts_key(DEFAULT_CHECKPOINT, "bf16", "flip", True, None),
                  parts_key(DEFAULT_CHECKPOINT, "fp32", "flip", True, {"polarity": "dark"})):
        assert other != key
    (parts / f"{first}.json").write_text(json.dumps(
        {"key": doc["key"] | {"tta": "none", "tomogram": stamp}, "rows": marked}))
    with caplog.at_level(logging.INFO, logger="sparse_det.run_parts"):
        again = infer_project(two_runs, DEFAULT_CHECKPOINT, runs=[first], device="cpu",
                              precision="fp32", parts_dir=parts)
    assert "made with another checkpoint or settings" in caplog.text
    assert np.allclose(again.x, [r[2] for r in doc["rows"]])  # picked again, not the mark
    assert json.loads((parts / f"{first}.json").read_text())["key"] == key | {
        "tomogram": stamp}  # overwritten
    # the same settings, but the tomogram written again since: picked again
    (parts / f"{first}.json").write_text(json.dumps(
        {"key": key | {"tomogram": stamp}, "rows": marked}))
    read_back = infer_project(two_runs, DEFAULT_CHECKPOINT, runs=[first], device="cpu",
                              precision="fp32", parts_dir=parts)
    assert np.allclose(read_back.x, [r[2] for r in marked])
    two_runs.write_tomogram(first, two_runs.read_tomogram(first).data.copy())
    again = infer_project(two_runs, DEFAULT_CHECKPOINT, runs=[first], device="cpu",
                          precision="fp32", parts_dir=parts)
    assert np.allclose(again.x, [r[2] for r in doc["rows"]])
    (parts / f"{first}.json").write_text('{"key": ')  # a file cut short by a crash
    assert RunParts(parts, key).get(first) is None
    assert "unreadable" in caplog.text


def test_infer_command_resumes_and_cleans_up(two_runs, tmp_path, capsys):
    first, second = two_runs.runs()
    out = tmp_path / "sub" / "submission.csv"
    args = ["--project", str(two_runs.path), "--device", "cpu", "--precision", "fp32",
            "--out", str(out), "--quiet"]
    original = _break(two_runs, second)
    try:
        assert infer.main(args) == 2
    finally:
        two_runs.write_tomogram(second, original)
    err = capsys.readouterr().err
    parts = parts_dir_for(out)
    assert "NaN" in err and f"kept in {parts}" in err
    assert f"(--exclude {second} picks the other runs)" in err  # found only when read
    assert (parts / f"{first}.json").is_file() and not out.exists()
    assert infer.main(args) == 0
    written = pd.read_csv(out)
    assert set(written.experiment) == {first, second}
    assert not parts.exists()  # the CSV holds them now
    # A kept file made as this command makes it, its picks emptied: read back without
    # --fresh, picked again with it.
    def keep_emptied() -> None:
        infer_project(two_runs, DEFAULT_CHECKPOINT, runs=[first], device="cpu",
                      precision="fp32", parts_dir=parts)
        doc = json.loads((parts / f"{first}.json").read_text())
        (parts / f"{first}.json").write_text(json.dumps({"key": doc["key"], "rows": []}))

    keep_emptied()
    assert infer.main(args) == 0
    assert (pd.read_csv(out).experiment == first).sum() == 0
    keep_emptied()
    assert infer.main([*args, "--fresh"]) == 0
    again = pd.read_csv(out)
    assert (again.experiment == first).sum() == (written.experiment == first).sum() > 0


def test_ctrl_c_ends_infer_with_a_line_and_keeps_the_runs_picked(two_runs, tmp_path, capsys,
                                                                 monkeypatch):
    """Ctrl-C while the second run is read: one line, exit 130 (it was a traceback through
    torch), and the first run's picks kept for the same command to resume from."""
    from data_tools import sparsify

    first, second = two_runs.runs()
    real = sparsify.read_working

    def pressed_ctrl_c(project, run, **kw):
        if run == second:
            raise KeyboardInterrupt
        return real(project, run, **kw)

    monkeypatch.setattr(sparsify, "read_working", pressed_ctrl_c)
    out = tmp_path / "submission.csv"
    assert infer.main(["--project", str(two_runs.path), "--out", str(out), "--quiet"]) == 130
    parts = parts_dir_for(out)
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted", f"the 1 run(s) picked so far are kept in {parts}; the same command "
                       "picks only the others"]
    assert sorted(p.name for p in parts.iterdir()) == [f"{first}.json"] and not out.exists()
