"""Command-line entry points: info and evaluate JSON, errors as one line and a non-zero exit."""

import importlib
import json
import re

import pytest

from data_tools.info import main as info_main
from sparse_det.evaluate import main as evaluate_main


def test_info_json(small_project, capsys):
    assert info_main([str(small_project.path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    run = small_project.runs()[0]
    tomo = doc["runs"][run]["tomograms"]["denoised"]
    assert tomo["shapes"] == [[64, 192, 192], [32, 96, 96], [16, 48, 48]], tomo
    assert abs(tomo["voxel_spacing"] - 10.012) < 1e-6, tomo
    picks = small_project.read_picks(run)
    assert doc["runs"][run]["picks"] == {k: len(v) for k, v in picks.items()}, doc
    assert doc["runs"][run]["reads"] == ("denoised VoxelSpacing10.000 level 1 (20.024 Å, "
                                         "32x96x96) -> as is (about 1.4 GB to pick)"), \
        doc["runs"][run]["reads"]
    assert [lv["origin_A"] for lv in tomo["levels"]] == [0.0, 5.006, 15.018], tomo["levels"]


def test_info_shows_the_runs_named(small_project, capsys):
    """--runs, by name or pattern: those runs alone; one that names none is one line."""
    first, second = small_project.runs()
    assert info_main([str(small_project.path), "--json", "--runs", f"*{second[-3:]}"]) == 0
    assert list(json.loads(capsys.readouterr().out)["runs"]) == [second]
    assert info_main([str(small_project.path), "--runs", "TS_nope*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {small_project.path}: no run 'TS_nope*'; runs: {first}, {second}"


def test_info_text_shows_what_infer_reads(small_project, capsys):
    assert info_main([str(small_project.path), "--tomo-type", "wbp"]) == 0
    out = capsys.readouterr().out
    assert "reads: nothing:" in out and "tomogram type 'wbp' not found" in out, out


def test_evaluate_solution_against_itself(small_project, capsys):
    sol = small_project.path / "solution.csv"
    assert evaluate_main(["--solution", str(small_project.path), "--submission", str(sol),
                          "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["score"] == 1.0, doc
    assert set(doc["per_class"]["ribosome"]) == {"tp", "fp", "fn", "precision", "recall",
                                                 "fbeta"}, doc


def test_evaluate_a_submission_of_some_runs(small_project, tmp_path, capsys):
    """A submission of one of the two runs: every run the solution scores counts, as in the
    competition, and a line names the run with no rows; `--runs` (a run or a pattern)
    scores that run alone, against a project or a solution CSV; a name that names no run
    is one line."""
    import pandas as pd

    first, second = small_project.runs()
    sol = pd.read_csv(small_project.path / "solution.csv")
    sub = tmp_path / "sub.csv"
    sol[sol["experiment"] == first].to_csv(sub, index=False)
    for solution in (small_project.path, small_project.path / "solution.csv"):
        assert evaluate_main(["--solution", str(solution), "--submission", str(sub),
                              "--json"]) == 0
        captured = capsys.readouterr()
        assert 0.3 < json.loads(captured.out)["score"] < 0.7
        assert captured.err.strip() == (f"{sub}: no rows of 1 of the 2 runs scored ({second});"
                                        " their particles count as missed (--runs scores the "
                                        "runs named alone)"), captured.err
        for runs in (first, f"*{first[-3:]}"):
            assert evaluate_main(["--solution", str(solution), "--submission", str(sub),
                                  "--json", "--runs", runs]) == 0
            captured = capsys.readouterr()
            assert json.loads(captured.out)["score"] == 1.0 and not captured.err, captured
    sol.to_csv(sub, index=False)  # rows of the run left out are not this score's either
    assert evaluate_main(["--solution", str(small_project.path), "--submission", str(sub),
                          "--json", "--runs", second]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["score"] == 1.0 and not captured.err, captured
    assert evaluate_main(["--solution", str(small_project.path), "--submission", str(sub),
                          "--runs", "TS_nope"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {small_project.path}: no run 'TS_nope'")


def test_evaluate_bad_submission_is_one_line(small_project, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,experiment,particle_type,x,y\n0,a,ribosome,1,2\n")
    assert evaluate_main(["--solution", str(small_project.path), "--submission",
                          str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.csv: missing columns ['z']" in err, err


def test_argument_files_expand_with_comments_and_hold_the_shipped_lists(tmp_path):
    """`@FILE`: shell words, several per line, `#` comments; the shipped lists of tuning
    and held-out runs read as the README counts them (27 runs of 4 projects; 7 held-out
    families)."""
    from pathlib import Path

    from sparse_det.argfile import ArgumentFileParser

    ap = ArgumentFileParser()
    ap.add_argument("--project", action="append")
    ap.add_argument("--runs", nargs="*")
    f = tmp_path / "a.args"
    f.write_text("# two projects\n--project 'with space' --project b  # second\n--runs\n"
                 "  r1 r2\n  r3\n")
    a = ap.parse_args([f"@{f}", "--project", "c"])
    assert a.project == ["with space", "b", "c"] and a.runs == ["r1", "r2", "r3"]
    configs = Path(__file__).resolve().parents[1] / "configs"
    earlier = ap.parse_args([f"@{configs / 'tune_runs_27.args'}"])
    assert len(earlier.project) == 4 and len(set(earlier.runs)) == len(earlier.runs) == 27
    with_39 = ap.parse_args([f"@{configs / 'tune_runs_39.args'}"])
    assert len(with_39.project) == 5 and len(set(with_39.runs)) == len(with_39.runs) == 39
    tuning = ap.parse_args([f"@{configs / 'tune_runs_45.args'}"])
    assert len(tuning.project) == 6 and len(set(tuning.runs)) == len(tuning.runs) == 45
    with_51 = ap.parse_args([f"@{configs / 'tune_runs_51.args'}"])
    assert len(with_51.project) == 7 and len(set(with_51.runs)) == len(with_51.runs) == 51
    assert set(earlier.runs) < set(with_39.runs) < set(tuning.runs) < set(with_51.runs)
    with_63 = ap.parse_args([f"@{configs / 'tune_runs_63.args'}"])
    assert len(with_63.project) == 7 and len(set(with_63.runs)) == len(with_63.runs) == 63
    assert set(tuning.runs) < set(with_63.runs)
    held_out = ap.parse_args([f"@{configs / 'heldout_21.args'}"])
    assert len(held_out.project) == 7 and held_out.runs is None
    assert not set(held_out.project) & (set(with_51.project) | set(with_63.project)), \
        "held-out runs never tune"


COUNTS_BELOW_THEIR_MINIMUM = [
    ("sparse_det.train", ["--config", "c.yaml", "--steps", "0"], "--steps: 0: at least 1"),
    ("ray_jobs.train", ["--config", "c.yaml", "--num-workers", "0"],
     "--num-workers: 0: at least 1"),
    ("ray_jobs.train", ["--config", "c.yaml", "--steps", "-1"], "--steps: -1: at least 1"),
    ("ray_jobs.preprocess", ["--project", "p", "--out", "o", "--workers", "0"],
     "--workers: 0: at least 1"),
    ("ray_jobs.finetune", ["--project", "p", "--out", "o", "--cpus-per-fold", "0"],
     "--cpus-per-fold: 0: at least 1"),
    ("sparse_det.rescore_fit", ["--checkpoint", "c", "--project", "p", "--out", "o",
                                "--members", "0"], "--members: 0: at least 1"),
    ("sparse_det.adapt", ["--project", "p", "--out", "o", "--rounds", "0"],
     "--rounds: 0: at least 1"),
    ("sparse_det.demo", ["--shape", "2", "64", "64"], "--shape: 2: at least 4"),
    ("data_tools.n2n", ["--project", "p", "--out", "o", "--steps", "0"],
     "--steps: 0: at least 1"),
]


@pytest.mark.parametrize(("module", "args", "said"), COUNTS_BELOW_THEIR_MINIMUM)
def test_counts_below_their_minimum_are_argument_errors(module, args, said, capsys):
    """Refused as argument errors before anything is read: `train --steps 0` trained the
    config's 3000 steps, `ray_jobs.train --steps -1` none, a Ray cluster of 0 workers."""
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and said in capsys.readouterr().err


def test_device_names_the_picker_cannot_use_are_one_clear_line():
    import torch

    from sparse_det.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for name, said in (("gpu", "not a device name; use auto, cpu, cuda or cuda:N"),
                       ("mps", "the sparse convolutions (spconv) run on 'cpu' or 'cuda' only")):
        with pytest.raises(ValueError, match=re.escape(f"device {name!r}: {said}")):
            resolve_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1' requested but torch sees no CUDA"):
            resolve_device("cuda:1")


def test_info_shows_every_run_when_one_cannot_be_read(small_project, tmp_path, capsys):
    """A run whose tomogram is corrupt, or that has no tomogram or no annotations, is shown
    as such; the other runs still show (info stopped at the first such run)."""
    import shutil

    proj = tmp_path / "p"
    shutil.copytree(small_project.path, proj)
    good, bad = small_project.runs()
    zattrs = proj / f"static/ExperimentRuns/{bad}/VoxelSpacing10.000/denoised.zarr/.zattrs"
    zattrs.write_text("{not json")
    (proj / "static/ExperimentRuns/TS_empty").mkdir()
    assert info_main([str(proj)]) == 0
    out = capsys.readouterr().out
    assert f"{bad}\n  denoised               VoxelSpacing10.000: unreadable: {zattrs}" in out
    assert "TS_empty\n  reads: nothing: " in out and "the run has no tomograms" in out
    assert out.count("picks: none read as truth (not annotated") == 1, out
    assert f"{good}\n  denoised               VoxelSpacing10.000: 10.012 Å" in out


def test_ctrl_c_ends_tune_and_rescore_with_a_line(monkeypatch, tmp_path, capsys):
    """Ctrl-C while tune or the rescorer's fit works: one line, exit 130, and what the same
    command reads back (the rescorer's examples extracted so far), not a traceback."""
    from sparse_det import rescore_fit, tune

    def pressed(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune, "choose_checkpoint", pressed)
    monkeypatch.setattr(rescore_fit, "fit_rescorer", pressed)
    out = str(tmp_path / "o.pt")
    args = ["--checkpoint", "c.pt", "--project", "p", "--out", out]
    assert tune.main(args) == 130
    assert capsys.readouterr().err.strip() == f"interrupted; nothing written to {out}"
    assert rescore_fit.main(args) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted; the same command reads back the runs' examples kept in {out}.examples")


def test_ctrl_c_ends_sparsify_with_a_line(small_project, monkeypatch, tmp_path, capsys):
    from data_tools import sparsify, sparsify_ceiling

    def pressed(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sparsify_ceiling, "ceiling_report", pressed)
    out = tmp_path / "shards"
    assert sparsify.main(["--project", str(small_project.path), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == (
        f"interrupted; the same command reads back the shards kept in {out}")
