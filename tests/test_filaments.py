"""Microtubules and actin filaments as hard negatives: their geometry, and that a run drawn
with them is the same seed's run without them plus the filaments."""

import numpy as np

from data_tools.filaments import KINDS, draw_filaments, filament_path_A, render_filament
from data_tools.hard_negatives import draw_hard_negatives
from data_tools.particles import ParticleTable
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_run

TABLE = ParticleTable.competition()


def _straight(kind: str, **kw) -> dict:
    spec = {"kind": kind, "bundle": 1, "start_yx_share": [0.5, 0.5], "z_share": 0.5,
            "azimuth_rad": 0.0, "elevation_rad": 0.0, "length_A": 800.0, "density": 1.0,
            "seed": 0}
    return spec | kw


def test_a_microtubule_is_a_hollow_tube_of_its_radii():
    """Along x through the field's middle: the lumen empty, the wall protein, nothing
    beyond 125 Å (a 250 Å ring end-on, a VLP's size: why it is a hard negative)."""
    vol = np.zeros((60, 80, 100), np.float32)
    spec = _straight("microtubule")
    render_filament(vol, (0.0, 59.0), spec, 10.0)
    r_out, r_in = KINDS["microtubule"][:2]
    section = vol[:, :, 50]  # a cross-section half-way along
    zz, yy = np.indices(section.shape)
    axis = np.array([29.5, 39.5])  # the slab's middle, the field's middle (voxels)
    r_A = 10.0 * np.hypot(zz - axis[0], yy - axis[1])
    assert section[r_A < r_in - 10].max() < 0.05, "the lumen is not empty"
    wall = (r_A > r_in + 10) & (r_A < r_out - 10)
    assert section[wall].min() > 0.9
    assert section[r_A > r_out + 10].max() < 0.05
    assert vol.max() <= 1.0 + 1e-6


def test_actin_is_solid_and_a_bundle_is_side_by_side_in_the_slab():
    vol = np.zeros((40, 80, 100), np.float32)
    render_filament(vol, (0.0, 39.0), _straight("actin", bundle=3, length_A=600.0),
                    10.0)
    section = vol[:, :, 50]
    # Three solid 70 Å rods 110 Å apart along y, all at the slab's mid-depth.
    profile_y = section[19:21].mean(axis=0)
    peaks = np.nonzero(profile_y > 0.9)[0]
    runs = np.split(peaks, np.nonzero(np.diff(peaks) > 1)[0] + 1)
    assert len(runs) == 3, runs
    centres = [r.mean() for r in runs]
    np.testing.assert_allclose(np.diff(centres), 11.0, atol=0.6)
    assert np.all(section.max(axis=1)[np.r_[0:12, 28:40]] < 0.05), "left the slab's middle"


def test_crossings_are_protein_not_twice_protein_and_paths_stay_in_the_slab():
    vol = np.zeros((50, 128, 128), np.float32)
    slab = (10.0, 40.0)
    rng = np.random.default_rng(2)
    specs = draw_filaments(6, rng)
    for spec in specs:
        render_filament(vol, slab, spec, 10.0)
        path = filament_path_A(spec, slab, vol.shape, 10.0)
        r_out = KINDS[spec["kind"]][0]
        assert path[:, 0].min() >= slab[0] * 10 + r_out - 1e-6
        assert path[:, 0].max() <= slab[1] * 10 - r_out + 1e-6
        # At least the drawn length, less what holding it inside the ice takes off.
        assert np.linalg.norm(np.diff(path, axis=0), axis=1).sum() >= 0.95 * spec["length_A"]
    assert vol.max() <= max(s["density"] for s in specs) + 1e-6
    assert (vol > 0.5).mean() > 0.01


def test_filaments_are_drawn_last_from_the_hard_negatives_stream():
    """A run drawn with filaments: the seed's particles, physics, carbon and contamination,
    and a tomogram that differs; deterministic."""
    without = draw_hard_negatives({"carbon_edges": (1, 1), "contamination": (1, 3)},
                                  np.random.default_rng(9))
    with_ = draw_hard_negatives({"carbon_edges": (1, 1), "contamination": (1, 3),
                                 "filaments": (2, 5)}, np.random.default_rng(9))
    assert with_["carbon"] == without["carbon"]
    assert with_["contamination"] == without["contamination"]
    assert 2 <= len(with_["filaments"]) <= 5 and "filaments" not in without
    shape = (40, 96, 96)
    a = simulate_run("r", shape, TABLE, SimRanges(crowding=(2, 2)), [5, 0])
    b = simulate_run("r", shape, TABLE, SimRanges(crowding=(2, 2), filaments=(3, 3)), [5, 0])
    c = simulate_run("r", shape, TABLE, SimRanges(crowding=(2, 2), filaments=(3, 3)), [5, 0])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=f"{k} picks moved")
    assert {k: v for k, v in b[2].items() if k != "hard_negatives"} == a[2]
    assert len(b[2]["hard_negatives"]["filaments"]) == 3
    assert not np.allclose(a[0], b[0]), "the filaments left no trace"
    np.testing.assert_array_equal(b[0], c[0])


def test_filaments_pass_around_the_other_objects():
    """Where a particle is, a filament is absent (not protein on protein); elsewhere it is
    as rendered alone, and carbon is added as before."""
    from data_tools.hard_negatives import render_hard_negatives

    shape = (40, 80, 100)
    slab = (0.0, 39.0)
    drawn = {"carbon": [], "contamination": [], "filaments": [_straight("actin")]}
    alone = np.zeros(shape, np.float32)
    render_hard_negatives(alone, slab, drawn, 10.0)
    occupied = np.zeros(shape, np.float32)
    zz, yy, xx = np.indices(shape)
    ball = (zz - 19.5) ** 2 + (yy - 39.5) ** 2 + (xx - 50) ** 2 <= 36  # on the rod's axis
    occupied[ball] = 1.0
    around = np.zeros(shape, np.float32)
    render_hard_negatives(around, slab, drawn, 10.0, occupied)
    assert alone[ball].max() > 0.9 and around[ball].max() == 0.0
    np.testing.assert_array_equal(around[occupied == 0], alone[occupied == 0])
