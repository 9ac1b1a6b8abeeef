"""Carbon film edges and ice contamination: where they are drawn, and that they leave the
rest of a run exactly as the same seed draws it without them."""

import numpy as np

from data_tools.hard_negatives import draw_hard_negatives, render_carbon, render_contamination
from data_tools.particles import ParticleTable
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_run

TABLE = ParticleTable.competition()


def test_carbon_covers_its_share_on_the_chosen_face():
    slab = (10.0, 30.0)
    for surface, share, thickness_A in [(0, 0.3, 100.0), (1, 0.55, 200.0)]:
        vol = np.zeros((64, 80, 80), np.float32)
        spec = {"angle_rad": 1.0, "area_share": share, "surface": surface,
                "thickness_A": thickness_A, "density": 4.0}
        render_carbon(vol, slab, spec, 10.0)
        covered = vol.max(axis=0) > 2.0
        assert abs(covered.mean() - share) < 0.03, (covered.mean(), share)
        # The film lies outside the ice, against the chosen face, as thick as drawn.
        column = vol[:, covered].mean(axis=1)
        z_in = np.nonzero(column > 2.0)[0]
        assert abs(len(z_in) - thickness_A / 10.0) <= 1, z_in  # the faces are soft
        if surface == 0:
            assert z_in.max() < slab[0] and z_in.min() >= slab[0] - thickness_A / 10 - 1
        else:
            assert z_in.min() >= slab[1] and z_in.max() <= slab[1] + thickness_A / 10 + 1
        assert vol.max() <= 4.0 + 1e-5


def test_contamination_sits_on_the_face_and_is_one_piece_of_ice():
    slab = (20.0, 44.0)
    spec = {"yx_share": [0.5, 0.5], "surface": 1, "radius_A": 150.0, "lobes": 3,
            "density": 2.5, "seed": 4}
    vol = np.zeros((64, 64, 64), np.float32)
    render_contamination(vol, slab, spec, 10.0)
    assert 2.4 < vol.max() <= 2.5 + 1e-5, "overlapping lobes must not add up"
    z, y, x = np.nonzero(vol > 1.25)
    # Mostly outside the slab, on its high-z face.
    assert np.mean(z >= slab[1]) > 0.5 and z.max() > slab[1] + 5, (z.min(), z.max())
    assert abs(np.mean(y) - 31.5) < 8 and abs(np.mean(x) - 31.5) < 8


def test_hard_negatives_are_drawn_from_their_own_stream():
    """A run with hard negatives has the very particles and physics of the same seed
    without; only the tomogram differs, and the draw is deterministic."""
    shape = (40, 96, 96)
    plain = SimRanges(crowding=(2, 2))
    hard = SimRanges(crowding=(2, 2), carbon_edges=(1, 1), contamination=(2, 2))
    a = simulate_run("r", shape, TABLE, plain, [5, 0])
    b = simulate_run("r", shape, TABLE, hard, [5, 0])
    c = simulate_run("r", shape, TABLE, hard, [5, 0])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=f"{k} picks moved")
    assert {k: v for k, v in b[2].items() if k != "hard_negatives"} == a[2]
    drawn = b[2]["hard_negatives"]
    assert len(drawn["carbon"]) == 1 and len(drawn["contamination"]) == 2
    assert "hard_negatives" not in a[2]
    assert not np.allclose(a[0], b[0]), "the hard negatives left no trace"
    np.testing.assert_array_equal(b[0], c[0])
    assert b[2] == c[2]


def test_counts_are_drawn_within_their_ranges():
    rng = np.random.default_rng(0)
    seen = {(len(d["carbon"]), len(d["contamination"])) for d in (
        draw_hard_negatives({"carbon_edges": (0, 1), "contamination": (1, 3)}, rng)
        for _ in range(60))}
    assert {n for n, _ in seen} == {0, 1} and {m for _, m in seen} == {1, 2, 3}



def test_hard_negatives_do_not_change_the_noise():
    """The dose, not the specimen, sets the noise: outside the rows a dense ball touches (the
    tilt axis is y, so its back-projection streaks stay in them) a tomogram with the ball is
    the tomogram without it up to the global contrast scale, in both imaging models.
    Scaling the noise to the total signal, as the SNR rule did at first, drowned the
    particles (60 % of their kept voxels lost at full size)."""
    from data_tools.scene import render_scene
    from data_tools.sim_ranges import draw_run_params
    from data_tools.simulate import image
    from data_tools.tilt_ranges import TiltRanges
    from data_tools.tilt_series import reconstruct

    shape = (48, 96, 96)
    ranges = SimRanges(crowding=(3, 3), snr=(1.0, 1.0), contrast_offset=(0, 0),
                       contrast_scale_log10=(0, 0))
    rng = np.random.default_rng(7)
    p = draw_run_params(ranges, rng)
    density, _, _ = render_scene(shape, TABLE, p, rng, 20.0)
    ball = np.zeros(shape, np.float32)
    zz, yy, xx = np.indices(shape)
    ball[(zz - 6) ** 2 + (yy - 20) ** 2 + (xx - 48) ** 2 <= 64] = 6.0
    away = np.abs(yy - 20) > 16  # rows the ball and its CTF fringes do not reach
    t = TiltRanges().draw(np.random.default_rng(1))
    for form in (lambda e: image(density, p, 20.0, np.random.default_rng(3), e),
                 lambda e: reconstruct(density, 20.0, p, t, np.random.default_rng(3), e)):
        a, b = form(None), form(ball)
        # (0.9997-1.0; with the noise scaled to the total signal 0.86 and 0.98)
        assert np.corrcoef(a[away], b[away])[0, 1] > 0.999
        # ...and the ball is there: its rows differ.
        assert np.corrcoef(a[~away], b[~away])[0, 1] < 0.99
