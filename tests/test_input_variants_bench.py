"""The geometry of bench/input_variants.py's rewritten runs, with known answers: a mark
turned about the tilt axis lands where its pick is turned to, and a thicker copy is padded
with the run's own particle-free slices only, mirrored at each face."""

from __future__ import annotations

import numpy as np
import pytest

from bench.input_variants import PAD_SHARE, inclined, inclined_picks, with_own_vacuum


@pytest.mark.parametrize("angle_deg", [10.0, -7.0])
def test_a_turned_mark_lands_where_its_pick_is_turned_to(angle_deg):
    vol = np.zeros((40, 8, 60), np.float32)
    vol[10:12, 4, 44:46] = 1000.0  # a 2x2 mark centred at z 10.5, x 44.5
    out = inclined(vol, angle_deg)
    pick = inclined_picks(np.array([[44.5 * 10.0, 40.0, 10.5 * 10.0]]), vol.shape, 10.0, 0.0,
                          angle_deg)
    mark = out > vol.mean() + 1  # the corners turned in read the volume's mean
    z, y, x = np.argwhere(mark).T
    w = out[mark] - vol.mean()
    centroid_zx = np.array([(z * w).sum(), (x * w).sum()]) / w.sum()
    np.testing.assert_allclose(centroid_zx, [pick[0, 2] / 10, pick[0, 0] / 10], atol=0.05)
    assert set(y) == {4}
    # a pick on the bottom face at the end of x the turn lowers leaves the volume: dropped
    x_end = 50 if angle_deg > 0 else 9
    ends = np.array([[x_end * 10.0, 40.0, 0.0], [(59 - x_end) * 10.0, 40.0, 0.0]])
    assert len(inclined_picks(ends, vol.shape, 10.0, 0.0, angle_deg)) == 1


def test_a_thicker_copy_is_the_runs_own_vacuum_mirrored():
    z = np.arange(20, dtype=np.float32)
    vol = np.broadcast_to(z[:, None, None], (20, 3, 3)).copy()
    free = np.ones(20, bool)
    free[3:17] = False  # particles reach slices 3..16: 3 free below, 3 above
    thick = with_own_vacuum(vol, free)
    pad = 20 // PAD_SHARE
    assert thick.shape == (20 + 2 * pad, 3, 3)
    np.testing.assert_array_equal(thick[pad:pad + 20], vol)
    # below: ... 2 1 0 | 0 1 2 ...; above: ... 19 | 19 18 17 17 18
    np.testing.assert_array_equal(thick[:pad, 0, 0], [1, 2, 2, 1, 0])
    np.testing.assert_array_equal(thick[-pad:, 0, 0], [19, 18, 17, 17, 18])
    with pytest.raises(ValueError, match="particle-free"):
        with_own_vacuum(vol, np.zeros(20, bool))


def test_a_variant_keeps_the_runs_folder_and_origin(tmp_path):
    """A tilt-series project's tomograms sit in VoxelSpacing20.024 with voxel 0's centre at
    5.006 Å (2x binned from 10 Å): a rewritten copy keeps both, so its picks stay where
    they were (without the origin every pick moved 5 Å and two runs lost 0.01-0.02)."""
    from bench.input_variants import THICKER_NOISE, write_variant
    from data_tools.copick_io import copy_without_tomograms
    from data_tools.simulate import simulate_project

    sim = simulate_project(tmp_path / "sim", 1, 3, (16, 24, 24), progress=False)
    run = sim.runs()[0]
    vol = np.asarray(sim.read_tomogram(run).data)
    src = copy_without_tomograms(sim, tmp_path / "src20")
    src.write_tomogram(run, vol, 20.024, voxel_spacing_A=20.024, n_levels=2, origin_A=5.006)
    for name, depth in (("unchanged", 16), (THICKER_NOISE, 16 + 2 * (16 // PAD_SHARE))):
        out = write_variant(src, tmp_path / name.split()[0], name)
        assert out.voxel_spacings(run) == [20.024]
        t = out.read_tomogram(run, 20.024)
        assert (t.voxel_size_A, t.origin_A, t.data.shape[0]) == (20.024, 5.006, depth)
    np.testing.assert_array_equal(np.asarray(
        write_variant(src, tmp_path / "again", "unchanged").read_tomogram(run, 20.024).data), vol)
