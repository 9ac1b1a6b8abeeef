"""Shared fixtures: small simulated projects written once per session (real zarr files), and
a base checkpoint that is wrong by construction."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project

SMALL_SHAPE = (64, 192, 192)
# A full run writes about 1.1 GB of simulated tomograms and checkpoints under the temp
# folder; with less free, dozens of tests fail with ENOSPC deep inside zarr.
NEEDS_FREE_GB = 1.5


def pytest_sessionstart(session):
    free_gb = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if free_gb < NEEDS_FREE_GB and reporter is not None:
        reporter.write_line(f"WARNING: only {free_gb:.1f} GB free in {tempfile.gettempdir()}; "
                            f"the tests write about {NEEDS_FREE_GB} GB there and will fail "
                            f"with 'No space left on device'", yellow=True, bold=True)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        if torch.cuda.is_available():
            return
    except ImportError:
        pass
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_project(tmp_path_factory):
    """Two small runs with easy physics, crowded so that every class appears."""
    out = tmp_path_factory.mktemp("sim") / "project"
    ranges = SimRanges(snr=(1.5, 2.0), crowding=(3.0, 3.0), membranes=(0, 1), gold=(0, 1),
                       blur_vox=(0.3, 0.8), bfactor_A2=(100.0, 800.0), ctf_floor=(0.4, 0.7),
                       tilt_max_deg=(55.0, 65.0))
    return simulate_project(out, n_runs=2, seed=7, shape_zyx=SMALL_SHAPE, ranges=ranges,
                            progress=False)


@pytest.fixture(scope="session")
def swapped(tmp_path_factory):
    """The shipped checkpoint, its apo-ferritin ↔ ribosome and beta-galactosidase ↔ VLP
    outputs swapped (network classes 1 ↔ 4 and 3 ↔ 6; 0 is background): a base that is
    wrong by construction, as one whose classes mean something else in the user's data
    would be, so that fine-tuning has something to fix."""
    import torch

    from sparse_det.checkpoint import DEFAULT_CHECKPOINT, strip_rescorer

    # The network alone, at its own thresholds: the rescorer would read the swapped scores.
    doc = strip_rescorer(torch.load(DEFAULT_CHECKPOINT, weights_only=True), DEFAULT_CHECKPOINT)
    order = [0, 4, 2, 6, 1, 5, 3]
    for name in ("cls_head.2.weight", "cls_head.2.bias"):
        doc["model"][name] = doc["model"][name][order].clone()
    path = tmp_path_factory.mktemp("base") / "swapped.pt"
    torch.save(doc, path)
    return path
