"""bench/ceiling.py end to end on a tiny simulated run: runs drawn like it, a fine-tune on
them, and the three scores side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ceiling import ceiling, table
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import DEFAULT_CHECKPOINT


@pytest.mark.slow
def test_ceiling_fine_tunes_on_runs_like_the_one_asked(tmp_path):
    src = tmp_path / "src"
    simulate_project(src, 1, 31, (64, 160, 160), SimRanges(snr=(1.5, 2.0), crowding=(1.0, 1.2)),
                     progress=False)
    r = ceiling(str(src), "TS_sim_31_000", checkpoint=str(DEFAULT_CHECKPOINT), n_runs=2,
                seed=32, minutes=0.0, work=tmp_path / "work", device="cpu", steps=2)
    like = json.loads((tmp_path / "work" / "like" / "simulation.json").read_text())
    want = json.loads((src / "simulation.json").read_text())["runs"]["TS_sim_31_000"]
    assert sorted(like["runs"]) == ["TS_like32_32_000", "TS_like32_32_001"]
    assert all(p["snr"] == pytest.approx(want["snr"]) for p in like["runs"].values())
    # Scores are real: the default finds the easy classes of a clean run.
    assert r["on_the_run"]["per_class"]["ribosome"] > 0.8
    for k in ("base", "fine-tune"):
        assert 0.0 < r["out_of_fold"][k]["score"] <= 1.0
    assert len(r["fine_tune_minus_base"]) == 2
    assert (tmp_path / "work" / "finetuned.pt").exists()
    text = table(r)
    assert "TS_sim_31_000" in text and "fine-tune - base" in text
