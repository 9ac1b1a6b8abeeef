"""Picks that cannot be in Å of their tomogram (saved in pixels or nm, or in another frame):
said once per run, with the unit they fit as, wherever the ground truth is read."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from data_tools import project_picks
from data_tools.copick_io import CopickProject
from data_tools.info import project_info
from data_tools.picks_placement import MISPLACED_MIN_PICKS, picks_misplaced, picks_outside
from tests.test_copick_io import make_project

VOXEL_A = 10.012
SHAPE = (46, 158, 158)  # z, y, x: 460 x 1582 x 1582 Å


@pytest.fixture
def project(tmp_path, monkeypatch) -> CopickProject:
    monkeypatch.setattr(project_picks, "_SAID_OUTSIDE", set())
    proj = make_project(tmp_path)
    proj.write_tomogram("TS_1", np.zeros(SHAPE, np.float32), voxel_size_A=VOXEL_A, n_levels=1)
    return proj


def _spread_A(n: int, seed: int = 0) -> np.ndarray:
    """n x, y, z points in Å spread through the whole tomogram."""
    size_A = np.array(SHAPE[::-1]) * VOXEL_A
    return np.random.default_rng(seed).uniform(0.05, 0.95, (n, 3)) * size_A


def test_picks_in_angstrom_are_not_questioned(project, caplog):
    project.write_picks("TS_1", "ribosome", _spread_A(20))
    with caplog.at_level(logging.WARNING):
        project.training_truth("TS_1")
    assert picks_misplaced(project, "TS_1", project.read_picks("TS_1")) is None
    assert not caplog.records


def test_picks_in_pixels_are_said_once_with_the_factor(project, caplog):
    project.write_picks("TS_1", "ribosome", _spread_A(12) / VOXEL_A)
    project.write_picks("TS_1", "thyroglobulin", _spread_A(3, seed=1) / VOXEL_A)
    with caplog.at_level(logging.WARNING):
        project.training_truth("TS_1")
        project.read_truth("TS_1")  # a second read says nothing more
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "run 'TS_1': all 15 picks lie in the first 1/10.012 of its tomogram (x, y, z from "
        "[-5, -5, -5] to [1577, 1577, 456] Å) along every axis (a voxel's slack), where "
        "pixels of its 10.012 Å "
        "voxels or nm read as Å would put them; copick picks are in Å: × 10.012 if they are "
        "pixels of its 10.012 Å voxels, × 10 if they are nm"]
    info = project_info(project)["runs"]["TS_1"]
    assert info["misplaced"] == said[0].removeprefix("run 'TS_1': ")


def test_a_few_picks_in_a_corner_are_an_annotation_of_it(project):
    """Fewer than MISPLACED_MIN_PICKS picks in a corner can be what a person picked there."""
    project.write_picks("TS_1", "ribosome", _spread_A(MISPLACED_MIN_PICKS - 1)
                        / VOXEL_A)
    assert picks_misplaced(project, "TS_1", project.read_picks("TS_1")) is None


def test_picks_beyond_the_tomogram_are_counted_per_particle(project):
    """Beyond by more than the particle's radius (ribosome 150 Å): 152 Å beyond x's far edge
    counts, 148 Å does not."""
    pts = _spread_A(10)
    pts[:2, 0] = SHAPE[2] * VOXEL_A - VOXEL_A / 2 + 152.0
    pts[2, 0] = SHAPE[2] * VOXEL_A - VOXEL_A / 2 + 148.0
    pts[3, 2] = -VOXEL_A / 2 - 151.0  # below z's first voxel edge
    project.write_picks("TS_1", "ribosome", pts)
    truth = project.read_picks("TS_1")
    assert picks_outside(project, "TS_1", truth) == {"ribosome": 3}
    assert picks_misplaced(project, "TS_1", truth) == (
        "picks beyond its tomogram (x, y, z from [-5, -5, -5] to [1577, 1577, 456] Å) by more "
        "than the particle's radius: 3 of 10 ribosome; copick picks are in Å")
