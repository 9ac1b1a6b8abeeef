"""Fine-tuning as a Ray job (ray_jobs/finetune.py) on a real local Ray: the folds train as
parallel tasks, and the result has the single-process command's form: out-of-fold
thresholds, every run held out once, a final model."""

from __future__ import annotations

import pytest

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow  # a real local Ray and four trainings


def test_ray_finetune_trains_folds_as_tasks(tmp_path, swapped, capsys):
    import ray

    from ray_jobs.finetune import main

    ranges = SimRanges(snr=(1.5, 2.0), crowding=(2.0, 2.0))
    project = simulate_project(tmp_path / "p", 3, 8, (64, 160, 160), ranges, progress=False)
    out = tmp_path / "ft.pt"
    try:
        # From a base with swapped classes, so that the fine-tune beats it and a final
        # model is trained (from the shipped one, 10 steps do not, and the base is kept).
        assert main(["--project", str(project.path), "--out", str(out), "--steps", "10",
                     "--checkpoint", str(swapped), "--device", "cpu", "--cpus-per-fold", "1",
                     "--quiet"]) == 0
    finally:
        ray.shutdown()
    doc = read_checkpoint(out)
    summary = doc["extra"]["finetune"]
    folds = summary["folds"]
    assert sorted(r for f in folds for r in f["val"]) == project.runs(), folds
    assert all(not set(f["train"]) & set(f["val"]) for f in folds), folds
    assert all(f["best_step"] > 0 for f in folds), folds
    assert doc["thresholds"] == summary["oof"]["thresholds"], "thresholds are not out-of-fold"
    assert "/final_lr" in summary["final"] and summary["final"].endswith("/last.pt"), summary
    assert "out-of-fold weighted F4" in capsys.readouterr().out
    # the driver made every shard before the tasks started: the base ones and the copies
    shards = tmp_path / "ft.work" / "shards"
    assert len(list(shards.glob("TS_*.zarr"))) == 3
