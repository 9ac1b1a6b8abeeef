"""The README's first real-data commands on the competition's layout exactly as Kaggle ships
it: `train/` with static/ and overlay/, no copick config, picks named `Picks/<particle>.json`,
and `test/static/` holding ExperimentRuns/ with the denoised tomograms only. The picks must
not depend on the layout they are read from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from sparse_det.evaluate import main as evaluate_main
from sparse_det.infer import main as infer_main

SPACING = "VoxelSpacing10.000"


def as_competition(src: Path, dest: Path) -> list[str]:
    """Lays the simulated project `src` out as czii/train and czii/test; returns its runs."""
    runs = sorted(p.name for p in (src / "static/ExperimentRuns").iterdir())
    for run in runs:
        tomos = src / "static/ExperimentRuns" / run / SPACING
        shutil.copytree(tomos, dest / "train/static/ExperimentRuns" / run / SPACING)
        shutil.copytree(tomos / "denoised.zarr",
                        dest / "test/static/ExperimentRuns" / run / SPACING / "denoised.zarr")
        picks = dest / "train/overlay/ExperimentRuns" / run / "Picks"
        picks.mkdir(parents=True)
        for f in (src / "overlay/ExperimentRuns" / run / "Picks").glob("curation_0_*.json"):
            doc = json.loads(f.read_text())
            (picks / f"{doc['pickable_object_name']}.json").write_text(json.dumps(doc))
    return runs


def _picks(csv: Path) -> pd.DataFrame:
    df = pd.read_csv(csv)
    assert list(df.columns) == ["id", "experiment", "particle_type", "x", "y", "z"], df.columns
    return df.drop(columns="id").sort_values(["experiment", "particle_type", "x", "y", "z"],
                                             ignore_index=True)


def _score(solution: Path, submission: Path, capsys) -> float:
    assert evaluate_main(["--solution", str(solution), "--submission", str(submission),
                          "--json"]) == 0
    return json.loads(capsys.readouterr().out)["score"]


def test_competition_layout_reads_as_the_project_it_came_from(small_project, tmp_path, capsys):
    runs = as_competition(small_project.path, tmp_path / "czii")
    assert not list((tmp_path / "czii").rglob("copick_config.json")), "no config, as shipped"
    subs = {}
    for name, project in [("original", small_project.path), ("train", tmp_path / "czii/train"),
                          ("test", tmp_path / "czii/test/static")]:
        subs[name] = tmp_path / f"{name}.csv"
        assert infer_main(["--project", str(project), "--out", str(subs[name]), "--quiet"]) == 0
    capsys.readouterr()
    original = _picks(subs["original"])
    assert sorted(original["experiment"].unique()) == runs, original["experiment"].unique()
    for name in ("train", "test"):
        pd.testing.assert_frame_equal(_picks(subs[name]), original, obj=f"{name} picks")
    score = _score(tmp_path / "czii/train", subs["train"], capsys)
    assert score == _score(small_project.path, subs["original"], capsys), \
        "the bare-named picks score as the copick-named ones"
    assert score > 0.8, f"the shipped default on easy simulated runs: weighted F4 {score}"
