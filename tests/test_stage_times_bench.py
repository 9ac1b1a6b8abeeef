"""bench/stage_times.py: each stage of the picker timed on real runs, the least of repeats."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stage_times():
    sys.path.insert(0, str(ROOT))
    return _load("bench_stage_times", ROOT / "bench" / "stage_times.py")


def test_every_stage_of_every_run_is_timed(stage_times, small_project):
    """The shipped default on two simulated runs: every stage of `infer` is timed and
    adds up to the total; the run is read, sparsified, read by the network and rescored
    (those take time)."""
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT
    from sparse_det.inference import Picker

    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu", precision="fp32")
    once = stage_times.family_stages(picker, str(small_project.path), "cpu", repeat=1)
    assert once["runs"] == 2
    assert set(stage_times.STAGES) <= set(once)
    assert once["total"] == pytest.approx(sum(once[k] for k in stage_times.STAGES))
    for stage in ("read", "sparsify", "network", "rescore"):
        assert once[stage] > 0, stage
    assert all(once[k] >= 0 for k in stage_times.STAGES)
