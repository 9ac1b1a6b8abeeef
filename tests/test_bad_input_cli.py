"""The bad-input catalogue, end to end through the command lines: each case exits non-zero
with one line naming the problem and leaves no output file behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data_tools.copick_io import CopickProject
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.evaluate import main as evaluate_main
from sparse_det.infer import main as infer_main
from sparse_det.visualize import main as visualize_main

ZARR = "static/ExperimentRuns/{run}/VoxelSpacing10.000/denoised.zarr"


def _missing_zarr(proj: Path, run: str, tmp: Path) -> list[str]:
    shutil.rmtree(proj / ZARR.format(run=run))
    return []


def _corrupt_zarr(proj: Path, run: str, tmp: Path) -> list[str]:
    (proj / ZARR.format(run=run) / "1" / ".zarray").write_text("{not json")
    return []


def _bad_voxels(value: float):
    def make(proj: Path, run: str, tmp: Path) -> list[str]:
        p = CopickProject(proj)
        vol = p.read_tomogram(run).data.copy()
        vol[10, 20, 30] = value
        p.write_tomogram(run, vol)
        return []
    return make


def _wrong_spacing(proj: Path, run: str, tmp: Path) -> list[str]:
    attrs_file = proj / ZARR.format(run=run) / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    for ds in attrs["multiscales"][0]["datasets"]:
        ds["coordinateTransformations"][0]["scale"] = [
            s * 1.35 for s in ds["coordinateTransformations"][0]["scale"]]
    attrs_file.write_text(json.dumps(attrs))
    return []


def _bad_import_record(proj: Path, run: str, tmp: Path) -> list[str]:
    attrs_file = proj / ZARR.format(run=run) / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    attrs["sparse_det_import"] = {"file": "TS.mrc", "shape_zyx": [1, 2], "bin": 1}
    attrs_file.write_text(json.dumps(attrs))
    return []


def _truncated_checkpoint(proj: Path, run: str, tmp: Path) -> list[str]:
    bad = tmp / "trunc.pt"
    bad.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:4000])
    return ["--checkpoint", str(bad)]


def _foreign_checkpoint(proj: Path, run: str, tmp: Path) -> list[str]:
    bad = tmp / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, bad)
    return ["--checkpoint", str(bad)]


def _unsafe_run(proj: Path, run: str, tmp: Path) -> list[str]:
    return ["--runs", "../../etc"]


def _unwritable_out(proj: Path, run: str, tmp: Path) -> list[str]:
    (tmp / "out" / "a_file").write_text("")
    return ["--out", str(tmp / "out" / "a_file" / "sub.csv")]


def _unwritable_picks_out(proj: Path, run: str, tmp: Path) -> list[str]:
    """Refused before any run is picked, not after every run was."""
    (tmp / "out" / "a_file").write_text("")
    return ["--picks-out", str(tmp / "out" / "a_file" / "picks")]


def _out_is_a_folder(proj: Path, run: str, tmp: Path) -> list[str]:
    return ["--out", str(tmp / "out")]


def _gt_user(proj: Path, run: str, tmp: Path) -> list[str]:
    return ["--picks-out", str(tmp / "out" / "picks"), "--user-id", "curation"]


def _underscore_user(proj: Path, run: str, tmp: Path) -> list[str]:
    return ["--picks-out", str(tmp / "out" / "picks"), "--user-id", "my_picker"]


def _min_score_above_one(proj: Path, run: str, tmp: Path) -> list[str]:
    return ["--min-score", "1.5"]


def _uncalibrated(proj: Path, run: str, tmp: Path) -> list[str]:
    doc = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    doc["calibration"] = {}
    torch.save(doc, tmp / "uncalibrated.pt")
    return ["--checkpoint", str(tmp / "uncalibrated.pt"), "--min-score", "0.5"]


def _moved_roots(proj: Path, run: str, tmp: Path) -> list[str]:
    """A copick config whose absolute roots went stale when the project moved: no runs, not
    an empty submission."""
    cfg = json.loads((proj / "copick_config.json").read_text())
    cfg["static_root"] = f"local://{tmp / 'moved/static'}"
    cfg["overlay_root"] = f"local://{tmp / 'moved/overlay'}"
    (tmp / "stale.json").write_text(json.dumps(cfg))
    return ["--project", str(tmp / "stale.json")]


CASES = {
    "missing zarr": (_missing_zarr, "tomogram type 'denoised' not found; the run has no "
                                    "tomograms"),
    "corrupt zarr": (_corrupt_zarr, "1/.zarray: unreadable zarr metadata"),
    "NaN voxels": (_bad_voxels(np.nan), "NaN/inf voxels"),
    "inf voxels": (_bad_voxels(np.inf), "NaN/inf voxels"),
    "wrong voxel spacing": (_wrong_spacing, "wrong voxel spacing"),
    "malformed import record": (_bad_import_record, ".zattrs: 'sparse_det_import' in "
                                                    ".zattrs is malformed"),
    "truncated checkpoint": (_truncated_checkpoint, "trunc.pt: not a readable checkpoint"),
    "foreign checkpoint": (_foreign_checkpoint, "foreign.pt: not a sparse-det checkpoint"),
    "run name with ../": (_unsafe_run, "invalid run name '../../etc'"),
    "unwritable output": (_unwritable_out, "a_file: cannot create output folder"),
    "unwritable --picks-out": (_unwritable_picks_out, "a_file: cannot create output folder"),
    "output is a folder": (_out_is_a_folder, "a folder, not a CSV file's path"),
    "ground-truth user id": (_gt_user, "--user-id 'curation' is the ground-truth user"),
    "user id with _": (_underscore_user, "--user-id: the user must be letters, digits"),
    "min score above one": (_min_score_above_one, "--min-score 1.5: a probability, "
                                                  "between 0 and 1"),
    "min score, checkpoint uncalibrated": (_uncalibrated, "uncalibrated.pt's scores are not "
                                                           "calibrated to probabilities"),
    "config roots moved": (_moved_roots, "stale.json: no runs in "),
    "device spconv cannot use": (lambda *_: ["--device", "mps"],
                                 "device 'mps': the sparse convolutions (spconv) run on 'cpu' "
                                 "or 'cuda' only"),
}


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", list(CASES))
def test_infer_bad_input(case, small_project, tmp_path, capsys):
    make, expected = CASES[case]
    proj = tmp_path / "proj"
    shutil.copytree(small_project.path, proj)
    (tmp_path / "out").mkdir()
    run = small_project.runs()[0]
    extra = make(proj, run, tmp_path)
    before = set(_files(tmp_path / "out"))
    args = ["--project", str(proj), "--out", str(tmp_path / "out" / "sub.csv"),
            "--star-out", str(tmp_path / "out" / "star"), "--quiet", *extra]
    assert infer_main(args) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and expected in err, err
    assert set(_files(tmp_path / "out")) == before, "partial output left behind"
    assert not (tmp_path / "out" / "sub.csv.parts").exists(), "an empty OUT.parts/ left behind"
    if case != "run name with ../":
        assert run in err or "checkpoint" in case or case in (
            "unwritable output", "unwritable --picks-out", "output is a folder",
            "ground-truth user id", "user id with _", "min score above one", "config roots moved",
            "device spconv cannot use"), err


def test_empty_sparse_set(tmp_path, capsys):
    """A "tomogram" that varies along y only: its darkest band ties across whole x-z planes,
    so the top-2.5 % threshold equals the maximum and keeps no voxel. The sparsify CLI says so
    by run and writes no shard."""
    from data_tools.simulate import simulate_project
    from data_tools.sparsify import main as sparsify_main

    # 160 slices (1,600 Å): deep enough that the share kept is keep_fraction itself
    project = simulate_project(tmp_path / "p", 1, 3, (160, 32, 32), progress=False)
    run = project.runs()[0]
    y = np.arange(32)
    band = (-np.exp(-(y - 16.5) ** 2 / 18.0) + 0.1 * np.cos(y)).astype(np.float32)
    project.write_tomogram(run, np.broadcast_to(band[None, :, None], (160, 32, 32)).copy())
    out = tmp_path / "shards"
    assert sparsify_main(["--project", str(project.path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"run {run!r}: empty sparse set" in err, err
    assert not out.exists() or not _files(out)


def test_evaluate_unknown_particle(small_project, tmp_path, capsys):
    sub = tmp_path / "sub.csv"
    sub.write_text("id,experiment,particle_type,x,y,z\n0,TS_x,tubulin,1,2,3\n")
    assert evaluate_main(["--solution", str(small_project.path), "--submission",
                          str(sub)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tubulin" in err, err


def test_visualize_unsafe_run(small_project, tmp_path, capsys):
    assert visualize_main(["--project", str(small_project.path), "--run", "../x",
                           "--out", str(tmp_path / "pics")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "invalid run name" in err, err
    assert not (tmp_path / "pics").exists()


def test_a_run_named_twice_is_picked_once(small_project, tmp_path):
    """`--runs R/ R` (a shell's completion of the run's folder, then the name again) picks R
    once: the CSV is that of `--runs R`, not every particle twice."""
    run = small_project.runs()[0]
    for name, runs in (("once", [run]), ("twice", [f"{run}/", run])):
        assert infer_main(["--project", str(small_project.path), "--runs", *runs,
                           "--out", str(tmp_path / f"{name}.csv"), "--quiet"]) == 0
    once = (tmp_path / "once.csv").read_text()
    assert once.count("\n") > 1 and (tmp_path / "twice.csv").read_text() == once


def test_evaluate_says_which_rows_no_run_of_the_solution_scores(small_project, tmp_path,
                                                                capsys):
    """The truth itself as a submission scores 1 with or without rows of another run; those
    rows count for nothing, as in the competition's metric, and stderr says so."""
    from sparse_det.writers import project_solution

    runs = small_project.annotated_runs()
    truth = project_solution(small_project, runs)
    truth = truth[truth["particle_type"] != "beta-amylase"].reset_index(drop=True)
    other = truth.head(3).assign(experiment="TS_other")
    for name, sub in (("same", truth), ("more", pd.concat([truth, other]))):
        sub.assign(id=range(len(sub)))[["id", "experiment", "particle_type", "x", "y", "z"]
                                        ].to_csv(tmp_path / f"{name}.csv", index=False)
        assert evaluate_main(["--solution", str(small_project.path), "--submission",
                              str(tmp_path / f"{name}.csv"), "--json"]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["score"] == pytest.approx(1.0), out
        said = f"3 of {len(sub)} rows are of runs the solution does not score (TS_other)"
        assert (said in err) == (name == "more"), err


def test_a_home_the_shell_left_unexpanded_is_read_as_home(small_project, tmp_path,
                                                         monkeypatch):
    """`--project=~/p --out=~/subs/s.csv`: bash expands no ~ after `=`. Read as the home
    folder, not a folder named ~ made in the working directory."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    shutil.copytree(small_project.path, home / "p")
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    run = small_project.runs()[0]
    assert infer_main(["--project=~/p", "--runs", run, "--out=~/subs/s.csv", "--quiet"]) == 0
    assert (home / "subs/s.csv").read_text().count("\n") > 1
    assert not (cwd / "~").exists()


def test_exclude_leaves_out_the_run_an_error_names(small_project, tmp_path, capsys):
    """A run whose tomogram cannot be read stops infer before any work, naming the run and
    `--exclude RUN`; with it (or a pattern naming it) the other run is picked; an excluded
    run the project does not have, or one that leaves nothing, is an error."""
    proj = tmp_path / "proj"
    shutil.copytree(small_project.path, proj)
    good, bad = small_project.runs()
    _corrupt_zarr(proj, bad, tmp_path)
    args = ["--project", str(proj), "--out", str(tmp_path / "s.csv"), "--quiet"]
    assert infer_main(args) == 2
    assert f"(--exclude {bad} picks the other runs)" in capsys.readouterr().err
    assert infer_main([*args, "--exclude", bad]) == 0
    assert set(pd.read_csv(tmp_path / "s.csv")["experiment"]) == {good}
    (tmp_path / "s.csv").unlink()  # the same runs named by patterns
    assert infer_main([*args, "--runs", "TS_*", "--exclude", f"*{bad[-3:]}"]) == 0
    assert set(pd.read_csv(tmp_path / "s.csv")["experiment"]) == {good}
    for exclude, said in (("TS_nope", "no run 'TS_nope'; runs: "),
                          (f"{good} {bad}", "--exclude leaves no run to pick")):
        assert infer_main([*args, "--exclude", *exclude.split()]) == 2
        assert said in capsys.readouterr().err
