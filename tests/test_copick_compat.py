"""What we write opens in copick itself (runs only where copick is installed: it is not a
dependency; checked with copick 1.31.0)."""

import numpy as np
import pytest


def test_copick_reads_our_layout(small_project):
    copick = pytest.importorskip("copick")
    root = copick.from_file(str(small_project.path / "copick_config.json"))
    names = sorted(r.name for r in root.runs)
    assert names == small_project.runs(), names
    run = root.get_run(names[0])
    arr = np.asarray(run.get_voxel_spacing(10.0).get_tomograms("denoised")[0].numpy())
    ours = small_project.read_tomogram(names[0]).data
    np.testing.assert_array_equal(arr, ours, err_msg="copick read a different tomogram")
    picks = run.get_picks(object_name="ribosome", user_id="curation")[0].numpy()[0]
    np.testing.assert_allclose(np.sort(picks[:, 0]),
                               np.sort(small_project.read_picks(names[0])["ribosome"][:, 0]),
                               rtol=1e-6, err_msg="copick read different picks")
