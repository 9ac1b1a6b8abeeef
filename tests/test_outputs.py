"""Outputs of sparse_det.infer besides the CSV (copick picks, STAR) and the pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.infer import main as infer_main
from sparse_det.metric import DISTANCE_MULTIPLIER, match_counts
from sparse_det.visualize import main as visualize_main
from sparse_det.writers import STAR_LABELS, PixelFrame, dynamo_table_text, star_text


def read_star_loop(text: str) -> tuple[list[str], list[list[str]]]:
    """A minimal STAR reader: the labels and rows of the first loop."""
    lines = [ln.strip() for ln in text.splitlines()]
    i = lines.index("loop_")
    labels, j = [], i + 1
    while j < len(lines) and lines[j].startswith("_"):
        labels.append(lines[j].split()[0][1:])
        j += 1
    rows = [ln.split() for ln in lines[j:] if ln and not ln.startswith("#")]
    return labels, rows


def test_star_text_known_values():
    particles = ParticleTable.competition()
    rows = pd.DataFrame({"particle_type": ["ribosome", "apo-ferritin"],
                         "x": [1001.2, 50.0], "y": [500.6, 60.0], "z": [100.12, 70.0],
                         "score": [12.5, 0.75]})
    # the competition's full-size tomogram: 630 x 630 x 184 voxels of 10.012 Å
    text = star_text("TS_5_4", rows, PixelFrame.of_project(10.012, (184, 630, 630)), particles)
    assert "\ndata_particles\n" in text
    labels, body = read_star_loop(text)
    assert labels == STAR_LABELS
    assert len(body) == 2 and all(len(r) == len(labels) for r in body), body
    r = dict(zip(labels, body[0], strict=True))
    assert r["rlnTomoName"] == r["rlnMicrographName"] == "TS_5_4"
    assert float(r["rlnCoordinateX"]) == pytest.approx(100.0, abs=1e-3)  # 1001.2 Å / 10.012
    assert float(r["rlnCoordinateY"]) == pytest.approx(50.0, abs=1e-3)
    assert float(r["rlnCoordinateZ"]) == pytest.approx(10.0, abs=1e-3)
    # RELION 5: Å from the centre, 315 and 92 voxels from voxel 0 (1001.2 - 3153.78 Å ...)
    assert float(r["rlnCenteredCoordinateXAngst"]) == pytest.approx(-2152.58, abs=0.01)
    assert float(r["rlnCenteredCoordinateYAngst"]) == pytest.approx(-2653.18, abs=0.01)
    assert float(r["rlnCenteredCoordinateZAngst"]) == pytest.approx(-820.98, abs=0.01)
    # ... which RELION 5 turns back into these pixels: centred / pixel size + size / 2
    for axis, size in zip("XYZ", (630, 630, 184), strict=True):
        assert float(r[f"rlnCenteredCoordinate{axis}Angst"]) / 10.012 + size / 2 == (
            pytest.approx(float(r[f"rlnCoordinate{axis}"]), abs=1e-3))
    assert float(r["rlnDetectorPixelSize"]) == pytest.approx(10.012)
    assert int(r["rlnClassNumber"]) == particles.class_index("ribosome")
    assert float(r["rlnAutopickFigureOfMerit"]) == 12.5
    assert r["sparseDetParticleType"] == "ribosome"
    # An empty run is still a valid file: the header and no rows.
    empty = star_text("TS_0", rows.iloc[:0], PixelFrame.of_project(10.0, (8, 8, 8)), particles)
    assert read_star_loop(empty) == (STAR_LABELS, [])


def test_star_read_by_starfile_package(tmp_path):
    starfile = pytest.importorskip("starfile")
    particles = ParticleTable.competition()
    rows = pd.DataFrame({"particle_type": ["thyroglobulin"], "x": [200.24], "y": [300.36],
                         "z": [400.48], "score": [3.0]})
    p = tmp_path / "TS.star"
    p.write_text(star_text("TS", rows, PixelFrame.of_project(10.012, (184, 630, 630)),
                           particles))
    df = starfile.read(p)
    assert list(df.columns) == STAR_LABELS
    assert df["rlnCoordinateX"].iloc[0] == pytest.approx(20.0, abs=1e-3)
    assert df["sparseDetParticleType"].iloc[0] == "thyroglobulin"


@pytest.fixture(scope="module")
def inferred(small_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    rc = infer_main(["--project", str(small_project.path), "--out", str(out / "sub.csv"),
                     "--picks-out", str(out / "picks"), "--star-out", str(out / "star"),
                     "--user-id", "sparse-det", "--session-id", "7", "--quiet"])
    assert rc == 0
    return out


def test_star_files_match_the_csv(inferred, small_project):
    sub = pd.read_csv(inferred / "sub.csv")
    for run in small_project.runs():
        labels, body = read_star_loop((inferred / "star" / f"{run}.star").read_text())
        mine = sub[sub["experiment"] == run]
        assert len(body) == len(mine) > 0, run
        xs = np.sort([float(r[labels.index("rlnCoordinateX")]) for r in body])
        np.testing.assert_allclose(xs, np.sort(mine["x"].to_numpy() / 10.012), atol=2e-3)


def test_copick_picks_in_new_project_over_input_tomograms(inferred, small_project):
    sub = pd.read_csv(inferred / "sub.csv")
    dest = CopickProject(inferred / "picks")
    run = small_project.runs()[0]
    picks = dest.read_picks(run, user_id="sparse-det", session_id="7")
    for name, pts in picks.items():
        mine = sub[(sub["experiment"] == run) & (sub["particle_type"] == name)]
        assert len(pts) == len(mine), name
    files = sorted((inferred / "picks/overlay/ExperimentRuns" / run / "Picks").glob(
        "sparse-det_7_*.json"))
    assert len(files) == len(small_project.particles), files  # an empty list where none
    docs = [json.loads(f.read_text()) for f in files]
    assert all(d["user_id"] == "sparse-det" and d["session_id"] == "7" for d in docs)
    points = [p for d in docs for p in d["points"]]
    assert len(points) == len(sub[sub["experiment"] == run]) > 0
    assert all(0 < p["score"] <= 1 for p in points), points[:2]  # calibrated probabilities
    # The new project's config reads tomograms from the input's static root.
    cfg = json.loads((inferred / "picks/copick_config.json").read_text())
    assert cfg["static_root"].endswith(str(small_project.static_root))


def test_dynamo_table_text_known_values():
    """One thyroglobulin at x, y, z = 20, 40, 60 Å in a 10 Å frame whose voxel 0 is centred
    at 0: pixels 2, 4, 6 in columns 24-26; tag 1, aligned, averaged, cc its score, tomogram
    index 3 in column 20, class 5 in column 22; 35 columns."""
    rows = pd.DataFrame({"experiment": ["TS_b"], "particle_type": ["thyroglobulin"],
                         "x": [20.0], "y": [40.0], "z": [60.0], "score": [0.75]})
    text = dynamo_table_text(rows, {"TS_b": PixelFrame.of_project(10.0, (8, 8, 8))},
                             {"TS_a": 1, "TS_b": 3}, 5)
    col = text.split()
    assert len(col) == 35 and text.endswith("\n") and text.count("\n") == 1
    assert [col[i] for i in (0, 1, 2, 9, 19, 21, 23, 24, 25)] == [
        "1", "1", "1", "0.75000", "3", "5", "2.000", "4.000", "6.000"]
    assert set(col[3:9] + col[10:19] + [col[20], col[22]] + col[26:]) == {"0"}


def test_dynamo_tables_read_back_where_the_csv_puts_the_picks(small_project, tmp_path):
    """infer --dynamo-out: a table per particle, all runs in each, and the table map; read
    back by import_picks through the map, every pick lands where the CSV has it."""
    from sparse_det.checkpoint import checkpoint_settings
    from sparse_det.picks_formats import dynamo_picks, read_tomo_map
    from sparse_det.writers import run_pixel_frame

    out = tmp_path / "dynamo"
    assert infer_main(["--project", str(small_project.path), "--out", str(tmp_path / "s.csv"),
                       "--dynamo-out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p.name}.tbl" for p in small_project.particles] + ["tomograms.doc"])
    runs = small_project.runs()
    assert read_tomo_map(out / "tomograms.doc") == {i + 1: r for i, r in enumerate(runs)}
    sparsify = checkpoint_settings(DEFAULT_CHECKPOINT).config.sparsify
    sub = pd.read_csv(tmp_path / "s.csv")
    for p in small_project.particles:
        back = dynamo_picks(out / f"{p.name}.tbl", run=None, particle=p.name,
                            tomo_map=read_tomo_map(out / "tomograms.doc"),
                            frame_of=lambda r: run_pixel_frame(small_project, r, sparsify))
        mine = sub[sub["particle_type"] == p.name]
        assert len(back) == len(mine), p.name
        for run in runs:
            a = back[back["experiment"] == run][["x", "y", "z"]].to_numpy()
            b = mine[mine["experiment"] == run][["x", "y", "z"]].to_numpy()
            np.testing.assert_allclose(a, b, atol=0.02)  # both written to 0.001 (px, Å)


def test_min_score_keeps_the_picks_at_least_that_probable(inferred, small_project, tmp_path):
    """--min-score 0.5 writes exactly the picks of the same run whose score is at least 0.5:
    fewer, and none of them less precise against the truth. The picks go into an empty
    folder made beforehand, which becomes a project as a missing one does."""
    (tmp_path / "picks").mkdir()
    assert infer_main(["--project", str(small_project.path), "--out", str(tmp_path / "s.csv"),
                       "--picks-out", str(tmp_path / "picks"), "--min-score", "0.5",
                       "--quiet"]) == 0
    every, sure = CopickProject(inferred / "picks"), CopickProject(tmp_path / "picks")
    counts = np.zeros((2, 2))  # [every pick, kept] x [true, false] where truth annotates
    n_kept = 0
    for run in small_project.runs():
        truth = small_project.read_truth(run)
        for name in small_project.particles.names:
            doc = json.loads((inferred / "picks/overlay/ExperimentRuns" / run / "Picks"
                              / f"sparse-det_7_{name}.json").read_text())
            scores = np.array([p["score"] for p in doc["points"]])
            pts = every.read_picks(run, user_id="sparse-det", session_id="7")[name]
            kept = sure.read_picks(run, user_id="sparse-det", session_id="0")[name]
            np.testing.assert_allclose(kept, pts[scores >= 0.5].reshape(-1, 3), atol=1e-3)
            n_kept += len(kept)
            if name in truth:
                hit = small_project.particles[name].radius_A * DISTANCE_MULTIPLIER
                counts += [match_counts(truth[name], p, hit)[:2] for p in (pts, kept)]
    n_every, n_sure = counts.sum(axis=1)
    assert 0 < n_sure < n_every
    assert len(pd.read_csv(tmp_path / "s.csv")) == n_kept
    precision = counts[:, 0] / counts.sum(axis=1)
    assert precision[1] > precision[0], counts


def test_picks_into_the_input_project_leave_ground_truth_alone(small_project, tmp_path):
    import shutil

    proj = tmp_path / "proj"
    shutil.copytree(small_project.path, proj)
    before = CopickProject(proj).read_picks(small_project.runs()[0])
    assert infer_main(["--project", str(proj), "--out", str(tmp_path / "s.csv"),
                       "--picks-out", str(proj), "--quiet"]) == 0
    after = CopickProject(proj).read_picks(small_project.runs()[0])
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert list((proj / "overlay/ExperimentRuns").glob("*/Picks/sparse-det_0_*.json"))


def test_visualize_writes_three_pngs(small_project, tmp_path, capsys):
    run = small_project.runs()[0]
    assert visualize_main(["--project", str(small_project.path), "--run", run,
                           "--checkpoint", str(DEFAULT_CHECKPOINT), "--out",
                           str(tmp_path / "pics")]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.split("/")[-1] for p in printed)
    assert names == sorted(f"{run}_{k}.png" for k in ("xy", "xz", "pr")), printed
    for p in printed:
        data = Path(p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, p


def test_visualize_draws_the_runs_a_pattern_names_with_one_load(small_project, tmp_path,
                                                                capsys, monkeypatch):
    """`--runs` (or `--run`) takes several runs and patterns: each run's three pictures, in
    the project's order, the checkpoint loaded once; a pattern naming no run is refused
    before anything is drawn."""
    from sparse_det.inference import Picker

    first, second = small_project.runs()
    loads = []
    load = Picker.load.__func__
    monkeypatch.setattr(Picker, "load", classmethod(
        lambda cls, *a, **k: loads.append(1) or load(cls, *a, **k)))
    assert visualize_main(["--project", str(small_project.path), "--run", second,
                           first[:-1] + "*", "--out", str(tmp_path / "pics")]) == 0
    out, err = capsys.readouterr()
    names = [p.split("/")[-1] for p in out.split()]
    assert names == [f"{r}_{k}.png" for r in (first, second) for k in ("xy", "xz", "pr")]
    assert loads == [1] and f"[2/2] {second}" in err, err
    xy = [Path(p).read_bytes() for p in out.split() if p.endswith("_xy.png")]
    assert xy[0] != xy[1]
    assert visualize_main(["--project", str(small_project.path), "--runs", "TS_none*",
                           "--out", str(tmp_path / "none")]) == 2
    assert "no run 'TS_none*'" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_ctrl_c_in_visualize_says_what_is_drawn(small_project, tmp_path, capsys,
                                               monkeypatch):
    """Ctrl-C while the second run is drawn: one line naming the runs drawn, exit 130; the
    first run's pictures are written and listed."""
    from sparse_det import visualize

    drawn_pr = []
    real = visualize.pr_picture

    def pressed_on_the_second(*args, **kw):
        if drawn_pr:
            raise KeyboardInterrupt
        drawn_pr.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(visualize, "pr_picture", pressed_on_the_second)
    out = tmp_path / "pics"
    assert visualize_main(["--project", str(small_project.path), "--runs", "*",
                           "--out", str(out)]) == 130
    printed, err = capsys.readouterr()
    first = small_project.runs()[0]
    assert [Path(p).name for p in printed.split()] == [f"{first}_{k}.png"
                                                       for k in ("xy", "xz", "pr")]
    assert err.strip().endswith(f"interrupted; the pictures of 1 run(s) are in {out}"), err
    assert (out / f"{first}_pr.png").exists()


def test_visualize_says_when_the_submission_has_no_picks_of_the_run(inferred, small_project,
                                                                    tmp_path, capsys):
    """--run given with its trailing '/' (a shell's completion) and a submission of the other
    run only: the pictures are drawn and stderr says why they show no picks."""
    first, second = small_project.runs()
    sub = pd.read_csv(inferred / "sub.csv")
    sub[sub["experiment"] == second].to_csv(tmp_path / "other.csv", index=False)
    assert visualize_main(["--project", str(small_project.path), "--run", f"{first}/",
                           "--submission", str(tmp_path / "other.csv"), "--out",
                           str(tmp_path / "pics")]) == 0
    out, err = capsys.readouterr()
    assert f"no picks of run {first!r} (its runs: {second})" in err, err
    assert len(out.split()) == 3
