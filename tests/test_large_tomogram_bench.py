"""bench/large_tomogram.py: a tiled run is the run repeated, with every pick in every copy
on the same density as the original's (real zarr files)."""

import importlib.util
from pathlib import Path

import numpy as np

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject

_spec = importlib.util.spec_from_file_location(
    "large_tomogram", Path(__file__).resolve().parents[1] / "bench" / "large_tomogram.py")
large_tomogram = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(large_tomogram)


def test_tiles_repeat_the_run_and_its_picks(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "src" / "static").mkdir(parents=True)
    src = CopickProject(tmp_path / "src")
    vol = rng.normal(size=(8, 12, 10)).astype(np.float32)
    src.write_tomogram("TS_a", vol, 10.0, n_levels=1)
    pts_A = np.array([[15.0, 25.0, 35.0], [85.0, 105.0, 65.0]])  # x, y, z: voxels 1.5..8.5
    src.write_picks("TS_a", "ribosome", pts_A)
    name = large_tomogram.tiled_project(src, "TS_a", (2, 1, 3), tmp_path / "big")
    big = CopickProject(tmp_path / "big")
    assert big.runs() == [name] == ["TS_a_x213"]
    data = big.read_tomogram(name, 10.0, "denoised").data
    assert data.shape == (16, 12, 30)
    np.testing.assert_array_equal(data[8:, :, 20:], vol)
    picks = big.read_picks(name)["ribosome"]
    assert len(picks) == 2 * 3 * 2 and len(big.read_picks(name)["apo-ferritin"]) == 0
    # every copy's pick sits on the voxel its original sits on, one tile further on
    orig = np.floor(xyz_A_to_zyx_vox(pts_A, 10.0)).astype(int)
    vox = np.floor(xyz_A_to_zyx_vox(picks, 10.0)).astype(int)
    assert {tuple(v % (8, 12, 10)) for v in vox} == {tuple(v) for v in orig}
    np.testing.assert_array_equal(data[tuple(vox.T)], vol[tuple((vox % (8, 12, 10)).T)])
    assert {tuple(v // (8, 12, 10)) for v in vox} == {
        (z, 0, x) for z in range(2) for x in range(3)}
    # made once: a second call reads the project it made
    assert large_tomogram.tiled_project(src, "TS_a", (2, 1, 3), tmp_path / "big") == name
