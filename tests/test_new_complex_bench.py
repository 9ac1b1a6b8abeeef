"""bench/new_complex.py's projects: copick configs over a simulated project's tomograms that
list the new complex alone, or every class with the new complex's picks alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from data_tools.copick_io import CopickProject
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project

_spec = importlib.util.spec_from_file_location(
    "new_complex", Path(__file__).resolve().parents[1] / "bench" / "new_complex.py")
new_complex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(new_complex)


def test_projects_over_the_same_tomograms(tmp_path):
    full = simulate_project(tmp_path / "full", 1, 3, (40, 96, 96), SimRanges(crowding=(3, 3)),
                            progress=False, extra_particles=("proteasome",))
    run = full.runs()[0]
    picks = full.read_picks(run)
    alone = new_complex.only_new(full, tmp_path / "alone")
    assert alone.particles.names == ["proteasome"]
    assert alone.runs() == [run] and alone.annotated_runs() == [run]
    np.testing.assert_array_equal(alone.read_truth(run)["proteasome"], picks["proteasome"])
    # The tomograms are the full project's, read through the config's static root.
    np.testing.assert_array_equal(alone.read_tomogram(run).data, full.read_tomogram(run).data)
    assert not any((tmp_path / "alone" / "overlay").rglob("*.zarr"))

    listed = new_complex.only_new(full, tmp_path / "listed", full.particles)
    assert listed.particles.names == full.particles.names
    assert list(listed.read_truth(run)) == ["proteasome"]
    assert set(listed.unannotated_particles(run)) == set(full.particles.names) - {"proteasome"}
    # Made once: a second call reads what is there.
    again = new_complex.only_new(full, tmp_path / "listed")
    assert isinstance(again, CopickProject) and again.particles.names == listed.particles.names
