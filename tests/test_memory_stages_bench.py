"""bench/memory_stages.py: one real pick of a run (real zarr, spconv on the CPU), every stage
recorded in the order the picker runs them, each row's peak at least its ends, and the
stage functions put back afterwards."""

import importlib.util
import json
from pathlib import Path

from data_tools import sparsify as sp

_spec = importlib.util.spec_from_file_location(
    "memory_stages", Path(__file__).resolve().parents[1] / "bench" / "memory_stages.py")
memory_stages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory_stages)


def test_every_stage_of_a_pick_is_recorded_in_order(small_project, tmp_path, capsys):
    original = sp.read_input
    run = small_project.runs()[1]
    out = tmp_path / "stages.json"
    assert memory_stages.main(["--project", str(small_project.path), "--run", run,
                               "--json", str(out)]) == 0
    assert sp.read_input is original, "a stage function was left wrapped"
    res = json.loads(out.read_text())
    stages = [r["stage"] for r in res["stages"]]
    # read, features and selection come before the network; the rescorer reads last
    first = {s: stages.index(s) for s in set(stages)}
    assert (first["read"] < first["blank and shading"] < first["feature volumes"]
            < first["selection"] < first["network passes"] < first["decode"]
            < first["rescorer profiles"]), stages
    assert stages.count("network passes") >= 2, "the shipped default reads two mirrors"
    assert res["run"] == run and res["particles"] > 10
    for r in res["stages"]:
        assert r["peak_gb"] >= max(r["start_gb"], r["end_gb"]) and r["seconds"] >= 0
        assert 0.05 < r["start_gb"] <= res["high_water_gb"] + 0.01
    assert "| feature volumes |" in capsys.readouterr().out
