"""bench/rescorers.py: rescorers compared on one pass of their shared network give each
run the F4 that `infer` gives it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rescorers():
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("bench_rescorers",
                                                  ROOT / "bench" / "rescorers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_rescorer_scores_a_run_as_infer_does(rescorers, small_project):
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT
    from sparse_det.inference import Picker
    from sparse_det.metric import score_tables
    from sparse_det.stream import infer_project
    from sparse_det.writers import project_solution, to_submission

    pickers = [Picker.load(DEFAULT_CHECKPOINT, "cpu", precision="fp32") for _ in range(2)]
    assert rescorers.same_network(pickers)
    run = small_project.runs()[0]
    solution = project_solution(small_project)
    a, b = rescorers.run_scores(pickers, small_project, run, solution)
    rows = infer_project(small_project, DEFAULT_CHECKPOINT, runs=[run], device="cpu",
                         precision="fp32")
    expected = score_tables(solution[solution["experiment"] == run], to_submission(rows),
                            small_project.particles).score
    assert a == b == pytest.approx(expected, abs=1e-12)
    assert expected > 0.3  # the run was picked, not scored empty against empty
    with torch.no_grad():
        next(pickers[1].ckpt.model.parameters()).add_(1.0)
    assert not rescorers.same_network(pickers)  # another network: refused by main
