"""The README's first command, `make demo`, run small: every stage for real (the simulator,
Ray preprocessing on 127.0.0.1, the shipped default, the evaluation, the pictures), and all
it writes under --out."""

import re

import pandas as pd
import pytest

from sparse_det import demo

pytestmark = pytest.mark.slow  # a real local Ray


def test_demo_writes_under_out_and_scores_its_own_truth(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--runs", "1", "--shape", "92", "256", "256", "--quiet"]
    try:
        assert demo.main(argv) == 0
        first = capsys.readouterr().out
        assert demo.main(argv) == 0  # the second call reuses the simulated project
        second = capsys.readouterr().out
    finally:
        ray.shutdown()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.columns) == ["id", "experiment", "particle_type", "x", "y", "z"]
    assert set(sub["experiment"]) == {"TS_sim_2024_000"} and len(sub) > 5
    f4 = float(re.search(r"weighted F4\s+([0-9.]+)", first).group(1))
    assert f4 > 0.8, first  # the shipped default on an in-range simulated run
    assert len(list((out / "pictures").glob("*.png"))) == 3
    assert "simulating 1 run(s)" in first and "reusing" in second
    assert re.search(r"weighted F4\s+([0-9.]+)", second).group(1) == f"{f4:.4f}"
