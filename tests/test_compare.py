"""bench/compare.py: run-by-run differences between two benched checkpoints, by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_compare", Path(__file__).resolve().parents[1] / "bench" / "compare.py")
bench_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_compare)
compare, per_run = bench_compare.compare, bench_compare.per_run


def _bench(tmp_path: Path, name: str, scores: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps([{"project": f"data/{p}", "per_run": r}
                                for p, r in scores.items()]))
    return str(path)


def test_paired_differences_per_project_and_pooled(tmp_path):
    ref = per_run(_bench(tmp_path, "a.json", {"tilt": {"r1": 0.5, "r2": 0.7},
                                             "lowsnr": {"s1": 0.9, "s2": 0.8}}))
    new = per_run(_bench(tmp_path, "b.json", {"tilt": {"r1": 0.6, "r2": 0.7},
                                             "lowsnr": {"s1": 0.9, "s2": 0.9},
                                             "crowded": {"c1": 1.0}}))
    rows = {name: (n, mean, se) for name, n, mean, se in compare(ref, new)}
    assert set(rows) == {"tilt", "lowsnr", "all"}  # only projects both benched
    # tilt: differences 0.1 and 0.0 -> mean 0.05, sd 0.0707, se 0.05
    assert rows["tilt"][0] == 2
    assert rows["tilt"][1] == pytest.approx(0.05)
    assert rows["tilt"][2] == pytest.approx(0.05)
    # pooled: 0.1, 0, 0, 0.1 -> mean 0.05, sd 0.0577, se 0.0289
    assert rows["all"][0] == 4
    assert rows["all"][1] == pytest.approx(0.05)
    assert rows["all"][2] == pytest.approx(0.057735 / 2, rel=1e-4)


def test_a_bench_without_per_run_scores_is_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"project": "data/tilt", "score": 0.7}]))
    with pytest.raises(SystemExit, match="no per-run scores"):
        per_run(str(path))


def test_tuned_checkpoints_compare_on_their_tuning_runs(tmp_path):
    import torch

    from data_tools.particles import ParticleTable
    from sparse_det.checkpoint import save_checkpoint
    from sparse_det.config import Config
    from sparse_det.model import build_model

    particles = ParticleTable.competition()
    model = build_model(in_channels=5, num_classes=len(particles), channels=[8, 16],
                        blocks_per_level=1, device="cpu")
    cfg = Config()
    cfg.model.channels = [8, 16]
    paths = []
    for name, scores in (("a", {"t1": 0.8, "t2": 0.6}), ("b", {"t1": 0.9, "t2": 0.6})):
        paths.append(str(save_checkpoint(
            tmp_path / f"{name}.pt", model=model, config=cfg, particles=particles,
            feature_names=[f"f{i}" for i in range(5)], thresholds={},
            extra={"tuned_per_run": {"tune2": scores}})))
    rows = {n: (k, m, se) for n, k, m, se in compare(per_run(paths[0]), per_run(paths[1]))}
    assert rows["tune2"][:2] == (2, pytest.approx(0.05))
    assert rows["all"][1] == pytest.approx(0.05)
    torch.save({"format": "sparse-det-checkpoint-v1", "extra": {}}, tmp_path / "old.pt")
    with pytest.raises(SystemExit, match="tune it again"):
        per_run(str(tmp_path / "old.pt"))


def test_runs_matched_by_name_across_projects(tmp_path):
    """The same scenes written another way (another project name) pair run by run."""
    ref = per_run(_bench(tmp_path, "a.json", {"tilt": {"r1": 0.5, "r2": 0.7},
                                             "wide": {"w1": 0.9}}))
    new = per_run(_bench(tmp_path, "b.json", {"tilt_sirt": {"r1": 0.4, "r2": 0.5},
                                             "wide_sirt": {"w1": 0.6, "w9": 1.0}}))
    assert compare(ref, new)[-1][1] == 0  # by project name nothing pairs
    rows = {n: (k, m) for n, k, m, _ in compare(bench_compare.match_runs(ref, new), new)}
    assert rows["tilt_sirt"] == (2, pytest.approx(-0.15))
    assert rows["wide_sirt"] == (1, pytest.approx(-0.3))  # w9 has no reference
    assert rows["all"] == (3, pytest.approx(-0.2))
    twice = {"a": {"r1": 0.5}, "b": {"r1": 0.6}}
    with pytest.raises(SystemExit, match="r1 is in two"):
        bench_compare.match_runs(twice, new)


def test_family_rows_pool_both_draws(tmp_path, capsys):
    """`--family` pools the runs of a family's projects (its two draws) into one row."""
    ref = _bench(tmp_path, "a.json", {"tilt": {"r1": 0.5, "r2": 0.7}, "tilt2": {"s1": 0.4},
                                      "lowsnr": {"l1": 0.6}})
    new = _bench(tmp_path, "b.json", {"tilt": {"r1": 0.6, "r2": 0.7}, "tilt2": {"s1": 0.7},
                                      "lowsnr": {"l1": 0.5}})
    assert bench_compare.main([ref, new, "--family", "tilt series", "tilt", "tilt2"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:4]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    # differences 0.1, 0.0, 0.3: mean 0.133, sd 0.1528, se 0.088
    assert rows["tilt series"] == [" 3 ", " +0.133 ± 0.088 "]
    assert rows["lowsnr"][0] == " 1 " and "tilt" not in rows and "tilt2" not in rows
    assert rows["all"][1] == " +0.075 ± 0.085 "  # 0.1, 0, 0.3, -0.1
    with pytest.raises(SystemExit, match="no results for"):
        bench_compare.main([ref, new, "--family", "x", "tilt", "nope"])
