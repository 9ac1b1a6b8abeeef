"""Ray preprocessing on a real local Ray (127.0.0.1): all runs, skip, failure by name, resume."""

import shutil

import numpy as np
import pytest

from data_tools.copick_io import CopickProject
from data_tools.shards import list_shards, read_shard, shard_path
from data_tools.sparsify import keep_share, sparsify
from data_tools.sparsify_ceiling import ceiling_report
from data_tools.sparsify_config import SparsifyConfig
from ray_jobs.preprocess import preprocess_project

pytestmark = pytest.mark.slow  # a real local Ray


@pytest.fixture(scope="module")
def ray_local():
    from ray_jobs.cluster import init_ray

    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_preprocess_skip_fail_and_resume(ray_local, small_project, tmp_path):
    proj_dir = tmp_path / "proj"
    shutil.copytree(small_project.path, proj_dir)
    proj = CopickProject(proj_dir)
    # A third run whose tomogram has NaNs: it must fail by name while the others finish.
    bad = proj.read_tomogram(proj.runs()[0]).data.copy()
    bad[3, 4, 5] = np.nan
    proj.write_tomogram("TS_bad", bad)
    out = tmp_path / "shards"
    cfg = SparsifyConfig()
    res = {r["run"]: r for r in preprocess_project(proj_dir, out, cfg, progress=False)}
    good = [r for r in proj.runs() if r != "TS_bad"]
    assert all(res[r]["status"] == "done" for r in good), res
    assert res["TS_bad"]["status"] == "failed" and "NaN" in res["TS_bad"]["error"], res
    assert list_shards(out) == good, list_shards(out)

    again = {r["run"]: r["status"] for r in preprocess_project(proj_dir, out, cfg,
                                                                runs=good, progress=False)}
    assert set(again.values()) == {"skipped"}, again

    # A half-written shard (a killed task: arrays, no completion mark) is redone.
    first = shard_path(out, good[0])
    shutil.rmtree(first)
    import zarr
    g = zarr.open_group(str(first), mode="w")
    g.create_array("coords_zyx", data=np.zeros((3, 3), np.int32))
    res3 = {r["run"]: r["status"] for r in preprocess_project(proj_dir, out, cfg, runs=good,
                                                              progress=False)}
    assert res3 == {good[0]: "done", good[1]: "skipped"}, res3
    assert len(read_shard(first)) > 100, "redone shard is not complete"


def test_shard_round_trip_and_ceiling(small_project, tmp_path):
    cfg = SparsifyConfig(keep_fraction=0.03)
    rep = ceiling_report(small_project, cfg, tmp_path, progress=False)
    run = small_project.runs()[0]
    sv = read_shard(shard_path(tmp_path, run))
    t = small_project.read_tomogram(run, scale=1)
    ref = sparsify(t.data, t.voxel_size_A, cfg, run, origin_A=t.origin_A)
    np.testing.assert_array_equal(sv.coords_zyx, ref.coords_zyx, err_msg="coords round trip")
    np.testing.assert_array_equal(sv.feats, ref.feats, err_msg="feats round trip")
    assert sv.feature_names == cfg.feature_names and sv.origin_A == pytest.approx(5.006)
    kept = [r["kept_fraction"] for r in rep["runs"]]
    # 32 slices of 20 Å: the thin-slab rule keeps 40 Å per column, 6.25 %, not 3 %
    want = keep_share(cfg, sv.shape_zyx[0], sv.voxel_size_A)
    assert want == pytest.approx(40 / (32 * sv.voxel_size_A))
    assert all(0.67 * want < k < 1.5 * want for k in kept), f"kept fractions {kept}"
    # Easy SNR: the darkest 3 % must hold every solid particle.
    for name in ("ribosome", "thyroglobulin", "beta-galactosidase", "virus-like-particle"):
        r = rep["retained"][name]
        assert r["total"] > 0 and r["fraction"] == 1.0, f"{name}: {r}"
    # Called again (after an interruption), the shards made with this config are read back,
    # not written again; another config's are made anew.
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = ceiling_report(small_project, cfg, tmp_path, progress=False)
    assert again["retained"] == rep["retained"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == written
    other = ceiling_report(small_project, SparsifyConfig(keep_fraction=0.1), tmp_path,
                           runs=[run], progress=False)
    assert len(read_shard(shard_path(tmp_path, run))) == other["runs"][0]["n_voxels"] > len(sv)


def test_constant_and_empty_inputs_fail_by_run():
    from data_tools.particles import DataError

    with pytest.raises(DataError, match="run 'TS_c': tomogram is constant"):
        sparsify(np.ones((8, 16, 16), np.float32), 20.0, SparsifyConfig(), "TS_c")
    with pytest.raises(DataError, match="run 'TS_n': tomogram has NaN"):
        v = np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32)
        v[0, 0, 0] = np.nan
        sparsify(v, 20.0, SparsifyConfig(), "TS_n")
