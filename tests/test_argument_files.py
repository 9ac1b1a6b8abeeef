"""Argument files declare the sets of configs/datasets.yaml that make their runs (`# sets:`),
and a command reading one names those sets where a project, or a set's runs in it, is not
made: a recipe that reads a project whole would otherwise read fewer runs without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools import datasets
from data_tools.particles import DataError
from data_tools.run_names import naming_none
from sparse_det.argfile import ArgumentFileParser

ROOT = Path(__file__).resolve().parents[1]
# families_44.args names result files' families, not projects: it reads no runs.
SHIPPED = sorted(p for p in (ROOT / "configs").glob("*.args")
                 if p.name != "families_44.args")


def _parser() -> ArgumentFileParser:
    ap = ArgumentFileParser()
    ap.add_argument("--project", action="append", default=[])
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--exclude", nargs="*", default=[])
    return ap


@pytest.mark.parametrize("args_file", SHIPPED, ids=lambda p: p.name)
def test_every_argument_file_names_the_sets_that_make_its_runs(args_file, monkeypatch):
    """Each set it names exists and writes one of its projects; each project is written by
    one of them, and each run it names by one of them into one of its projects."""
    monkeypatch.chdir(ROOT)
    a, _ = _parser().parse_known_args([f"@{args_file}"])
    assert a.project, f"{args_file} names no project"
    manifest = datasets.load_manifest(ROOT / datasets.DEFAULT_MANIFEST, ROOT, ranges=False)
    assert a.dataset_sets and set(a.dataset_sets) <= set(manifest), a.dataset_sets
    calls = [c for s in a.dataset_sets for c in manifest[s] if c.out in a.project]
    for s in a.dataset_sets:
        assert any(c.out in a.project for c in manifest[s]), f"{s} writes none of its projects"
    assert {c.out for c in calls} == set(a.project)
    made = sorted({r for c in calls for r in c.run_names})
    assert not naming_none(a.runs, made), naming_none(a.runs, made)


def _record(project: Path, runs: list[str]) -> None:
    project.mkdir(parents=True, exist_ok=True)
    (project / "simulation.json").write_text(json.dumps({"runs": {r: {} for r in runs}}))


def test_a_set_not_made_in_full_is_named_with_the_command(tmp_path, monkeypatch):
    """Two declared sets writing into data/a, one of them into data/b too: data/b missing
    and the second set's run in data/a not recorded name the second set alone; made, the
    same call passes; a set the manifest has not is named as such."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/datasets.yaml").write_text(
        "first:\n  - {out: data/a, seed: 1, runs: 2}\n"
        "second:\n  - {out: data/a, seed: 2, runs: 1, prefix: TS_b}\n"
        "  - {out: data/b, seed: 3, runs: 1}\n")
    monkeypatch.setattr(datasets, "CHECKOUT", tmp_path)
    a, b = tmp_path / "data/a", tmp_path / "data/b"
    _record(a, ["TS_sim_1_000", "TS_sim_1_001"])
    with pytest.raises(DataError) as err:
        datasets.require_projects([a, b], ["first", "second"])
    assert str(err.value) == (f"{b}: project does not exist; the runs of set second are not "
                              "all made; python -m data_tools.datasets make second --root "
                              f"{tmp_path} makes them (the sets the argument file names)")
    _record(b, ["TS_sim_3_000"])
    with pytest.raises(DataError, match="the runs of set second are not all made; "):
        datasets.require_projects([a, b], ["first", "second"])
    _record(a, ["TS_sim_1_000", "TS_sim_1_001", "TS_b_2_000"])
    datasets.require_projects([a, b], ["first", "second"])
    datasets.require_projects([a], ["first"])
    _record(a, ["TS_sim_1_000", "TS_b_2_000"])  # an interrupted make
    with pytest.raises(DataError, match="of set first are not all made; python -m "
                                        "data_tools.datasets make first --root "):
        datasets.require_projects([a, b], ["first", "second"])
    with pytest.raises(DataError, match="names third, which .*datasets.yaml has not"):
        datasets.require_projects([a], ["first", "third"])


def test_the_sets_lines_of_included_files_are_read_in_order(tmp_path):
    inner = tmp_path / "inner.args"
    inner.write_text("# sets: heldout_21\n--project data/heldout_in\n")
    outer = tmp_path / "outer.args"
    outer.write_text(f"# some words\n#sets: heldout_second  heldout_21\n@{inner}\n"
                     "--project data/heldout2_in  # sets: not_a_declaration\n")
    a = _parser().parse_args([f"@{outer}", "--project", "x"])
    assert a.project == ["data/heldout_in", "data/heldout2_in", "x"]
    assert a.dataset_sets == ["heldout_second", "heldout_21"]
    assert _parser().parse_args(["--project", "x"]).dataset_sets == []
