"""bench/families.py: a family's F4 pooled over its runs, with a bootstrap over runs; checked
by hand, and against bench/detector.py's own scores of a real picked project."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.families import families, family_table, main, run_counts
from data_tools.particles import ParticleTable

PARTICLES = ParticleTable.competition()
TOTAL_WEIGHT = sum(p.weight for p in PARTICLES.scored)  # 1+2+1+2+1


def test_pooled_f4_and_its_interval_by_hand():
    # apo-ferritin: one run finds all 4, the other none; nothing else anywhere.
    runs = [{"apo-ferritin": [4, 0, 0]}, {"apo-ferritin": [0, 0, 4]}]
    t = family_table(runs, PARTICLES, draws=2000)
    # pooled tp 4, fp 0, fn 4: F4 = 17·4 / (17·4 + 16·4) = 68 / 132
    assert t["per_class"]["apo-ferritin"] == pytest.approx(68 / 132)
    assert t["score"] == pytest.approx(68 / 132 / TOTAL_WEIGHT)
    assert t["particles"]["apo-ferritin"] == 8 and t["runs"] == 2
    # resampled: both the finding run twice (1.0) and the missing one twice (0.0) come up
    assert t["per_class_interval"]["apo-ferritin"] == pytest.approx([0.0, 1.0])
    assert t["per_class"]["ribosome"] == 0.0  # nothing to find, nothing picked


def test_identical_runs_leave_no_interval():
    run = {"beta-galactosidase": [3, 5, 1], "ribosome": [10, 1, 0]}
    t = family_table([run, run, run], PARTICLES, draws=500)
    # b-gal: 17·9 / (17·9 + 16·3 + 15) = 153 / 216
    assert t["per_class"]["beta-galactosidase"] == pytest.approx(153 / 216)
    lo, hi = t["score_interval"]
    assert lo == pytest.approx(t["score"]) and hi == pytest.approx(t["score"])


def test_unknown_family_projects_are_named():
    with pytest.raises(SystemExit, match="no results for"):
        families({"heldout_in": {}}, [["in range", "heldout_in", "heldout2_in"]])
    assert families({"a": {}, "b": {}, "c": {}}, [["ab", "a", "b"]]) == {"ab": ["a", "b"],
                                                                         "c": ["c"]}
    with pytest.raises(ValueError, match="at least one"):
        family_table([], PARTICLES, draws=10)


@pytest.mark.slow
def test_counts_from_detector_pool_to_its_own_scores(small_project, tmp_path, capsys):
    from bench.detector import bench_project
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    r = bench_project(str(small_project.path), str(DEFAULT_CHECKPOINT), "cpu", precision="fp32")
    assert set(r["per_run_counts"]) == set(r["per_run"])
    for run, counts in r["per_run_counts"].items():  # each run's counts give its score
        assert family_table([counts], PARTICLES, draws=10)["score"] == pytest.approx(
            r["per_run"][run])
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([r]))
    pooled = family_table(list(run_counts([str(path)])["project"].values()), PARTICLES, 100)
    assert pooled["score"] == pytest.approx(r["score"])
    assert pooled["per_class"] == pytest.approx(r["per_class"])
    assert pooled["score"] > 0.3  # an easy project: the default finds most of it
    assert main([str(path), "--family", "both", "project", "--json",
                 str(tmp_path / "f.json")]) == 0
    assert "| both | 2 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "f.json").read_text())["both"]["score"] == pytest.approx(
        r["score"])
