"""The copick layout: round trips, the competition's own files, both picks namings, bad input."""

import json
import os
import shutil
import threading
from dataclasses import replace

import numpy as np
import pytest
import zarr

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from data_tools.run_names import validate_run_name


def make_project(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "overlay").mkdir()
    return CopickProject(tmp_path)


def test_round_trip(tmp_path):
    proj = make_project(tmp_path)
    vol = np.random.default_rng(0).normal(size=(20, 34, 30)).astype(np.float32)
    proj.write_tomogram("TS_1", vol, voxel_size_A=10.012)
    pts = np.array([[100.5, 200.25, 50.0], [10.0, 20.0, 30.0]])
    proj.write_picks("TS_1", "ribosome", pts)
    proj.write_config()

    again = CopickProject(tmp_path / "copick_config.json")
    assert again.runs() == ["TS_1"], f"runs {again.runs()}"
    t = again.read_tomogram("TS_1")
    np.testing.assert_array_equal(t.data, vol, err_msg="level 0 differs after round trip")
    assert t.voxel_size_A == pytest.approx(10.012), f"voxel size {t.voxel_size_A}"
    levels = again.tomogram_scales("TS_1")
    assert [lv[2] for lv in levels] == [(20, 34, 30), (10, 17, 15), (5, 8, 7)], levels
    assert [lv[1] for lv in levels] == pytest.approx([10.012, 20.024, 40.048]), levels
    assert [lv[3] for lv in levels] == pytest.approx([0, 5.006, 15.018]), "binning shift"
    t1 = again.read_tomogram("TS_1", scale=1)
    np.testing.assert_allclose(t1.data[0, 0, 0], vol[:2, :2, :2].mean(), rtol=1e-5,
                               err_msg="scale 1 is not a 2x mean binning")
    picks = again.read_picks("TS_1")
    np.testing.assert_allclose(picks["ribosome"], pts, err_msg="picks differ after round trip")
    assert len(picks["apo-ferritin"]) == 0, "absent classes read as empty"
    assert (tmp_path / "overlay/ExperimentRuns/TS_1/Picks/curation_0_ribosome.json").is_file(), \
        "picks must be written with copick's naming"
    assert not list(tmp_path.rglob("*.tmp-*")), "temporary files left behind"


def write_competition_run(root, run="TS_5_4", spacing_scale=10.012):
    """A run exactly as the competition shipped it, written with plain zarr calls."""
    d = root / "static/ExperimentRuns" / run / "VoxelSpacing10.000"
    d.mkdir(parents=True)
    g = zarr.open_group(str(d / "denoised.zarr"), mode="w", zarr_format=2)
    vol = np.arange(8 * 12 * 16, dtype=np.float32).reshape(8, 12, 16)
    datasets = []
    for i in range(3):
        g.create_array(str(i), data=vol[:: 2**i, :: 2**i, :: 2**i].copy(), chunks=(4, 6, 8))
        s = spacing_scale * 2**i
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [s, s, s]}]})
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"], "datasets": datasets}]
    picks = root / "overlay/ExperimentRuns" / run / "Picks"
    picks.mkdir(parents=True)
    doc = {"pickable_object_name": "ribosome", "user_id": "curation", "session_id": "0",
           "run_name": run, "voxel_spacing": None, "unit": "angstrom",
           "points": [{"location": {"x": 5274.903, "y": 5288.121, "z": 619.798},
                       "transformation_": np.eye(4).tolist(), "instance_id": 0, "score": 1.0}],
           "trust_orientation": True}
    (picks / "ribosome.json").write_text(json.dumps(doc))
    return vol


def write_ome_zarr_v05(path, vol, voxel_A, origin_A=0.0, unit="nanometer", n_levels=3,
                       bin_z=True, sharded=False):
    """OME-Zarr 0.5 as ome-zarr-py and zarr-python 3 write it by default: a zarr v3 group
    (`zarr.json`, metadata under attributes.ome), 5-D t,c,z,y,x arrays of one time point and
    one channel, scales in `unit`; written with plain zarr calls, not the project's writer.
    bin_z=False: the pyramid bins y and x only (ome-zarr-py's default scale_factors).
    sharded: chunks of 8 sections inside shards of 32 (zarr v3's sharding codec, as large
    OME-Zarr 0.5 images are written)."""
    per_A = {"nanometer": 0.1, "angstrom": 1.0, "micrometer": 1e-4}[unit]
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets, level = [], np.asarray(vol, dtype=np.float32)
    for i in range(n_levels):
        k = 2**i
        if sharded:
            g.create_array(str(i), data=level[None, None], chunks=(1, 1, 8, 32, 32),
                           shards=(1, 1, 32, 64, 64))
        else:
            g.create_array(str(i), data=level[None, None], chunks=(1, 1, 32, 64, 64))
        kz = 2 if bin_z else 1
        z, y, x = level.shape[0] // kz, level.shape[1] // 2, level.shape[2] // 2
        level = level[:kz * z, :2 * y, :2 * x].reshape(z, kz, y, 2, x, 2).mean(axis=(1, 3, 5))
        s, t = voxel_A * k * per_A, (origin_A + voxel_A * (k - 1) / 2) * per_A
        sz, tz = (s, t) if bin_z else (voxel_A * per_A, origin_A * per_A)
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, sz, s, s]},
            {"type": "translation", "translation": [0.0, 0.0, tz, t, t]}]})
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": unit} for a in "zyx"]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}


def test_reads_ome_zarr_05_in_zarr_v3(tmp_path):
    """A tomogram in OME-Zarr 0.5 (zarr v3, 5-D, nanometres) reads as its 0.4 twin: voxel size
    and origin in Å, the z, y, x volume; a unit it does not know is an error naming it."""
    write_competition_run(tmp_path)
    d = tmp_path / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000"
    shutil.rmtree(d / "denoised.zarr")
    vol = np.arange(8 * 12 * 16, dtype=np.float32).reshape(8, 12, 16)
    write_ome_zarr_v05(d / "denoised.zarr", vol, 10.012, origin_A=5.006)
    assert (d / "denoised.zarr/zarr.json").is_file() and not (d / "denoised.zarr/.zattrs").exists()
    proj = CopickProject(tmp_path)
    scales = proj.tomogram_scales("TS_5_4")
    assert [(p, shape) for p, _, shape, _ in scales] == [
        ("0", (8, 12, 16)), ("1", (4, 6, 8)), ("2", (2, 3, 4))], scales
    np.testing.assert_allclose([v for _, v, _, _ in scales], [10.012, 20.024, 40.048])
    np.testing.assert_allclose([o for *_, o in scales], [5.006, 10.012, 20.024])
    tomo = proj.read_tomogram("TS_5_4", scale=1)
    np.testing.assert_allclose(tomo.data, vol.reshape(4, 2, 6, 2, 8, 2).mean(axis=(1, 3, 5)))
    assert tomo.voxel_size_A == pytest.approx(20.024) and tomo.origin_A == pytest.approx(10.012)
    meta = json.loads((d / "denoised.zarr/zarr.json").read_text())
    for unit, voxel_A in (("Å", 2.0024), ("nm", 20.024), ("parsec", None)):
        for axis in meta["attributes"]["ome"]["multiscales"][0]["axes"][2:]:
            axis["unit"] = unit
        (d / "denoised.zarr/zarr.json").write_text(json.dumps(meta))
        if voxel_A:  # the spellings outside the spec; 1.0012 in Å is 10× too fine
            assert proj.tomogram_scales("TS_5_4")[1][1] == pytest.approx(voxel_A)
    with pytest.raises(DataError, match=r"denoised.zarr: axis units \['parsec'\] are not one of"):
        proj.read_tomogram("TS_5_4")


def test_transformations_of_the_whole_multiscale(comp):
    """OME-Zarr's multiscale-wide scale and translation apply after each level's own:
    levels in voxel units times 10.012 Å, shifted 5.006 Å."""
    group = comp / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/denoised.zarr"
    attrs = json.loads((group / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    for i, ds in enumerate(ms["datasets"]):
        ds["coordinateTransformations"] = [
            {"type": "scale", "scale": [2.0**i] * 3},
            {"type": "translation", "translation": [(2.0**i - 1) / 2] * 3}]
    ms["coordinateTransformations"] = [{"type": "scale", "scale": [10.012] * 3},
                                       {"type": "translation", "translation": [5.006] * 3}]
    (group / ".zattrs").write_text(json.dumps(attrs))
    scales = CopickProject(comp).tomogram_scales("TS_5_4")
    np.testing.assert_allclose([v for _, v, _, _ in scales], [10.012, 20.024, 40.048])
    np.testing.assert_allclose([o for *_, o in scales], [5.006, 10.012, 20.024])
    ms["coordinateTransformations"] = [{"type": "scale"}]
    (group / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(DataError, match="denoised.zarr: level 'every level' has a malformed "
                                        "coordinate transformation"):
        CopickProject(comp).tomogram_scales("TS_5_4")


def test_levels_binned_in_y_and_x_only_are_skipped(tmp_path, caplog):
    """ome-zarr-py's default pyramid leaves z unbinned: those levels cannot be read as
    isotropic voxels, so they are skipped with a warning and level 0 serves (binned by the
    input step); an anisotropic level 0 is still an error."""
    write_competition_run(tmp_path)
    d = tmp_path / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000"
    shutil.rmtree(d / "denoised.zarr")
    vol = np.arange(8 * 12 * 16, dtype=np.float32).reshape(8, 12, 16)
    write_ome_zarr_v05(d / "denoised.zarr", vol, 10.012, bin_z=False)
    proj = CopickProject(tmp_path)
    assert [(p, v) for p, v, _, _ in proj.tomogram_scales("TS_5_4")] == [("0", 10.012)]
    assert "levels skipped: level '1' has per-axis scale" in caplog.text, caplog.text
    np.testing.assert_array_equal(proj.read_tomogram("TS_5_4").data, vol)
    from data_tools.tomo_input import list_sources, plan_source
    assert plan_source(list_sources(proj, "TS_5_4", "denoised"), 20.0).how == "bin 2"


def test_reads_competition_layout_written_by_plain_zarr(tmp_path):
    vol = write_competition_run(tmp_path)
    proj = CopickProject(tmp_path)
    np.testing.assert_array_equal(proj.read_tomogram("TS_5_4").data, vol,
                                  err_msg="plain-zarr OME-Zarr read back differently")
    assert proj.read_tomogram("TS_5_4", scale=2).data.shape == (2, 3, 4)
    picks = proj.read_picks("TS_5_4")
    np.testing.assert_allclose(picks["ribosome"], [[5274.903, 5288.121, 619.798]],
                               err_msg="bare-named competition picks not read")
    # Both namings side by side: ground truth plus a copick-named prediction file.
    proj.write_picks("TS_5_4", "ribosome", [[1.0, 2.0, 3.0]], user_id="sparsedet", session_id="1")
    assert len(proj.read_picks("TS_5_4")["ribosome"]) == 1, "predictions leaked into ground truth"
    pred = proj.read_picks("TS_5_4", user_id="sparsedet")["ribosome"]
    np.testing.assert_allclose(pred, [[1.0, 2.0, 3.0]], err_msg="copick-named picks not read")


@pytest.mark.parametrize("k,slab", [(2, 2), (3, 4), (2, 32)])
def test_binned_as_read_equals_binning_the_whole_level(tmp_path, monkeypatch, k, slab):
    """Binning slab by slab (SLAB_SECTIONS sections at a time) gives the whole level binned,
    with the binned voxel size and the centre of the first bin as origin; a NaN in any slab
    is still found."""
    from data_tools import zarr_levels
    from data_tools.zarr_levels import bin_mean

    monkeypatch.setattr(zarr_levels, "SLAB_SECTIONS", slab)
    monkeypatch.setattr(zarr_levels, "SLAB_BYTES", 0)  # slabs never grow to the z-chunk
    vol = write_competition_run(tmp_path)
    proj = CopickProject(tmp_path)
    tomo = proj.read_tomogram("TS_5_4", bin_factor=k)
    np.testing.assert_array_equal(tomo.data, bin_mean(vol, k))
    assert tomo.voxel_size_A == pytest.approx(10.012 * k)
    assert tomo.origin_A == pytest.approx(10.012 * (k - 1) / 2)
    arr = zarr.open_array(str(tmp_path / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/"
                                         "denoised.zarr/0"), mode="r+")
    arr[5, 0, 0] = np.nan  # in the last slab read whenever slabs are smaller than the level
    with pytest.raises(DataError, match="1 NaN/inf voxels"):
        proj.read_tomogram("TS_5_4", bin_factor=k)


def test_slabs_grow_to_whole_chunk_rows_that_fit(tmp_path, monkeypatch):
    """zarr decodes whole chunks: a slab is the array's z-chunk where a chunk row fits
    SLAB_BYTES (each chunk decoded once), else SLAB_SECTIONS; in whole bins either way."""
    from data_tools import zarr_levels

    proj = make_project(tmp_path)
    proj.write_tomogram("TS_1", np.zeros((130, 40, 40), np.float32), 10.0, n_levels=1)
    level = proj.open_level("TS_1")  # written in chunks of 64 sections
    assert level.array.chunks[0] == 64
    assert level.slab_sections() == 64 and level.slab_sections(3) == 21
    monkeypatch.setattr(zarr_levels, "SLAB_BYTES", 64 * 40 * 40 * 4 - 1)
    assert level.slab_sections() == zarr_levels.SLAB_SECTIONS == 32
    assert level.slab_sections(3) == 10


class _Reads:
    """A zarr array that records the region each read asked for."""

    def __init__(self, array):
        self.array, self.shape, self.chunks, self.reads = array, array.shape, array.chunks, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_blocks_of_whole_chunks_decode_each_chunk_once(tmp_path, k):
    """read_binned reads blocks of whole chunks' sections in bands of whole chunks' rows
    (and whole bins), two at a time: every chunk the binned level needs is read exactly once,
    and the result is the whole level binned."""
    from data_tools.zarr_levels import bin_mean, read_block

    rng = np.random.default_rng(k)
    vol = rng.normal(size=(70, 45, 50)).astype(np.float32)
    proj = make_project(tmp_path)
    proj.write_tomogram("TS_1", vol, 10.0, n_levels=1, chunks_zyx=(32, 8, 16))
    level = proj.open_level("TS_1")
    recorded = _Reads(level.array)
    sections, rows = read_block(level.shape_zyx, level.chunks_zyx, k)
    assert (sections * k, rows * k) == {1: (32, 8), 2: (32, 8), 3: (96, 24)}[k]
    data = replace(level, array=recorded).read_binned(k)
    np.testing.assert_array_equal(data, bin_mean(vol, k))
    reads = [(z.start, z.stop, y.start, y.stop) for z, y in recorded.reads]
    used = tuple(n // k * k for n in vol.shape[:2])
    assert len(reads) == -(-used[0] // (sections * k)) * -(-used[1] // (rows * k))
    hits = np.zeros(used, int)
    for z0, z1, y0, y1 in reads:
        hits[z0:z1, y0:y1] += 1
    assert (hits == 1).all(), "a voxel read twice or not at all"
    # whole chunks: every read starts on a chunk's edge
    assert all(z0 % 32 == 0 and y0 % 8 == 0 for z0, _, y0, _ in reads), reads
    # a caller with one core (a one-CPU Ray task) reads the blocks one after the other
    from data_tools.zarr_levels import read_threads

    assert read_threads(1) == 1 and read_threads() == min(2, os.cpu_count())
    threads = set()

    class _Thread(_Reads):
        def __getitem__(self, key):
            threads.add(threading.get_ident())
            return super().__getitem__(key)

    np.testing.assert_array_equal(replace(level, array=_Thread(level.array)).read_binned(
        k, threads=1), data)
    assert len(threads) == 1


def test_chunks_read_from_metadata_are_the_arrays_own(tmp_path):
    """array_chunks reads from metadata alone the (z, y, x) chunks zarr decodes: zarr v2's,
    clipped to the level as written; zarr v3's chunk grid of a 5-D array; a shard's inner
    chunks, as the opened array reports them. The reader's slabs and the planner's agree."""
    from data_tools.ome_zarr import array_chunks
    from data_tools.zarr_levels import slab_sections

    proj = make_project(tmp_path)
    path = proj.write_tomogram("TS_1", np.zeros((130, 40, 70), np.float32), 10.0, n_levels=1,
                               chunks_zyx=(48, 16, 128))
    assert array_chunks(path / "0") == (48, 16, 70)
    level = proj.open_level("TS_1")
    assert level.array.chunks == (48, 16, 70)
    for k in (1, 2, 3):
        assert level.slab_sections(k) == slab_sections(level.shape_zyx, 48, k) == 48 // k
    assert slab_sections((130, 40, 70), 0) == 32  # chunks not known: SLAB_SECTIONS
    for sharded, inner in ((False, (32, 64, 64)), (True, (8, 32, 32))):
        where = tmp_path / f"v3_{sharded}.zarr"
        write_ome_zarr_v05(where, np.zeros((40, 64, 64), np.float32), 7.3, n_levels=1,
                           sharded=sharded)
        assert array_chunks(where / "0") == inner
        assert zarr.open_array(str(where / "0"), mode="r").chunks[2:] == inner
    assert array_chunks(tmp_path / "nowhere") == ()


def test_test_folder_with_experiment_runs_at_root(tmp_path):
    write_competition_run(tmp_path)
    proj = CopickProject(tmp_path / "static")  # like the competition's test/static
    assert proj.runs() == ["TS_5_4"], proj.runs()
    assert proj.read_tomogram("TS_5_4").data.shape == (8, 12, 16)


def test_particle_table_from_copick_config(tmp_path):
    cfg = {"config_type": "filesystem", "overlay_root": "local:///x", "pickable_objects": [
        {"name": "ribosome", "is_particle": True, "label": 4, "radius": 150},
        {"name": "membrane", "is_particle": False, "label": 8, "radius": 0}]}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    t = ParticleTable.from_copick_config(p)
    assert t.names == ["ribosome"] and t["ribosome"].weight == 1.0, t.to_list()


# ---- bad input: one clear error naming the path and the problem -----------------------------
@pytest.fixture
def comp(tmp_path):
    write_competition_run(tmp_path)
    return tmp_path


def test_missing_run(comp):
    with pytest.raises(DataError, match="run 'TS_9_9' not found"):
        CopickProject(comp).read_tomogram("TS_9_9")


def test_missing_tomogram_type(comp):
    with pytest.raises(DataError, match=r"wbp.zarr: tomogram type 'wbp' not found"):
        CopickProject(comp).read_tomogram("TS_5_4", tomo_type="wbp")


def test_feature_maps_beside_a_tomogram_are_not_tomograms(comp):
    """copick writes a tomogram's feature maps as <type>_<feature>_features.zarr in the same
    folder (4-D, one channel per feature); they are neither listed nor chosen."""
    d = comp / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000"
    shutil.copytree(d / "denoised.zarr", d / "denoised_dino_features.zarr")
    (d / "denoised.zarr").rename(d / "sart.zarr")
    proj = CopickProject(comp)
    assert proj.tomogram_types("TS_5_4") == ["sart"]
    from data_tools.tomo_input import choose_type
    assert choose_type(proj, "TS_5_4", "denoised", fallback=True) == "sart"


def test_spacing_folders_however_the_number_is_written(comp, caplog):
    """`VoxelSpacing10` is the 10 Å folder as `VoxelSpacing10.000` is; a folder whose suffix
    is no number is skipped with a warning, not a crash."""
    run_dir = comp / "static/ExperimentRuns/TS_5_4"
    (run_dir / "VoxelSpacing10.000").rename(run_dir / "VoxelSpacing10")
    (run_dir / "VoxelSpacing_old").mkdir()
    proj = CopickProject(comp)
    assert proj.voxel_spacings("TS_5_4") == [10.0]
    assert proj.tomogram_types("TS_5_4", 10.0) == ["denoised"]
    assert proj.read_tomogram("TS_5_4").path.parent.name == "VoxelSpacing10"
    assert "VoxelSpacing_old: not a VoxelSpacing<Å> folder name" in caplog.text


def test_missing_voxel_spacing_folder(comp):
    with pytest.raises(DataError, match="VoxelSpacing20.000: voxel spacing folder does not exist"):
        CopickProject(comp).read_tomogram("TS_5_4", voxel_spacing_A=20.0)


def test_wrong_voxel_spacing_in_zattrs(tmp_path):
    write_competition_run(tmp_path, spacing_scale=13.5)
    with pytest.raises(DataError, match="denoised.zarr: wrong voxel spacing"):
        CopickProject(tmp_path).read_tomogram("TS_5_4")


def test_a_scale_of_one_without_unit_reads_at_the_folders_spacing(tmp_path, caplog):
    """What writers leave when no voxel size was given (scale 1, 2, 4, no unit): read at the
    folder's 10 Å, with a warning, not refused and not binned as 1 Å voxels; a scale of 1 in
    ångström stays an error."""
    vol = write_competition_run(tmp_path, spacing_scale=1.0)
    zattrs = tmp_path / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/denoised.zarr/.zattrs"
    doc = json.loads(zattrs.read_text())
    for axis in doc["multiscales"][0]["axes"]:
        axis.pop("unit")
    zattrs.write_text(json.dumps(doc))
    project = CopickProject(tmp_path)
    t = project.read_tomogram("TS_5_4")
    assert t.voxel_size_A == 10.0 and np.array_equal(t.data, vol)
    assert [lv[1] for lv in project.tomogram_scales("TS_5_4")] == [10.0, 20.0, 40.0]
    assert "scale is 1 with no unit" in caplog.text
    for axis in doc["multiscales"][0]["axes"]:
        axis["unit"] = "angstrom"
    zattrs.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="wrong voxel spacing: level 0 has 1 Å"):
        CopickProject(tmp_path).read_tomogram("TS_5_4")


def test_not_an_ome_zarr(comp):
    group = comp / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/denoised.zarr"
    (group / ".zattrs").write_text("{}")
    with pytest.raises(DataError, match="denoised.zarr: not an OME-Zarr multiscale"):
        CopickProject(comp).read_tomogram("TS_5_4")
    (group / ".zattrs").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"denoised.zarr/.zattrs: unreadable zarr metadata"):
        CopickProject(comp).read_tomogram("TS_5_4")
    (group / ".zattrs").unlink()  # a zarr v3 group with attributes but no multiscales
    (group / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"ome": ["not", "a", "dict"]}}))
    with pytest.raises(DataError, match=r"denoised.zarr: not an OME-Zarr multiscale \(no "
                                        r"readable multiscales in zarr.json\)"):
        CopickProject(comp).read_tomogram("TS_5_4")


def test_corrupt_array_metadata(comp):
    level0 = comp / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/denoised.zarr/0"
    (level0 / ".zarray").write_text("{not json")
    with pytest.raises(DataError, match=r"denoised.zarr/0/.zarray: unreadable zarr metadata"):
        CopickProject(comp).read_tomogram("TS_5_4")
    (level0 / ".zarray").unlink()
    with pytest.raises(DataError, match=r"denoised.zarr/0: level '0' is listed in the "
                                        r"multiscales but its array metadata"):
        CopickProject(comp).read_tomogram("TS_5_4")


def test_array_on_disk_but_not_listed(comp):
    zarr_dir = comp / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/denoised.zarr"
    attrs = json.loads((zarr_dir / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"] = attrs["multiscales"][0]["datasets"][:2]
    (zarr_dir / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(DataError, match=r"denoised.zarr: arrays \['2'\] are on disk but not "
                                        r"listed in its multiscales"):
        CopickProject(comp).read_tomogram("TS_5_4")


def test_malformed_picks(comp):
    (comp / "overlay/ExperimentRuns/TS_5_4/Picks/ribosome.json").write_text('{"points": [{"lo')
    with pytest.raises(DataError, match="ribosome.json: malformed picks JSON"):
        CopickProject(comp).read_picks("TS_5_4")


def test_unknown_particle_in_picks(comp):
    src = comp / "overlay/ExperimentRuns/TS_5_4/Picks/ribosome.json"
    doc = json.loads(src.read_text())
    doc["pickable_object_name"] = "tubulin"
    (src.parent / "tubulin.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="tubulin.json: unknown particle 'tubulin'"):
        CopickProject(comp).read_picks("TS_5_4")


def test_nan_voxels(tmp_path):
    proj = make_project(tmp_path)
    vol = np.zeros((8, 8, 8), np.float32)
    vol[1, 2, 3] = np.nan
    vol[2, 2, 2] = np.inf
    proj.write_tomogram("TS_nan", vol)
    with pytest.raises(DataError, match=r"2 NaN/inf voxels in run 'TS_nan'"):
        proj.read_tomogram("TS_nan")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "", "/abs", "a\\b", "x..y"])
def test_run_names_never_escape(bad, comp):
    with pytest.raises(DataError, match="invalid run name"):
        validate_run_name(bad)
    with pytest.raises(DataError, match="invalid run name"):
        CopickProject(comp).read_tomogram(bad)


def test_not_a_project(tmp_path):
    with pytest.raises(DataError, match="not a copick project"):
        CopickProject(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        CopickProject(tmp_path / "nope")


def test_a_folder_inside_a_project_names_the_project_and_run(comp):
    """--project pointed at a run's folder, its tomogram, ExperimentRuns or the overlay:
    the error says which --project (and --runs) to pass."""
    runs = comp / "static/ExperimentRuns"
    for inside, hint in (
            (runs / "TS_5_4", f"pass --project {comp} --runs TS_5_4"),
            (runs / "TS_5_4/VoxelSpacing10.000/denoised.zarr", f"--project {comp} --runs TS_5_4"),
            (runs, f"pass --project {comp}"),
            (comp / "overlay/ExperimentRuns/TS_5_4", f"pass --project {comp} --runs TS_5_4"),
            (comp / "overlay", f"the overlay (picks) of the project {comp}")):
        with pytest.raises(DataError) as err:
            CopickProject(inside)
        assert hint in str(err.value), (inside, err.value)
    assert CopickProject(comp / "static").runs() == ["TS_5_4"]  # the competition's test/static


def test_folder_holding_only_a_config(tmp_path):
    """copick keeps a config apart from its data as often as beside it: a folder with
    copick_config.json alone is read through it; a root the config mistypes is an error
    naming the config and the missing folder, not a project of no runs."""
    vol = write_competition_run(tmp_path / "data")
    objects = [{"name": "ribosome", "is_particle": True, "label": 1, "radius": 150.0}]
    cfg = {"config_type": "filesystem", "pickable_objects": objects,
           "static_root": f"local://{tmp_path / 'data/static'}",
           "overlay_root": f"local://{tmp_path / 'data/overlay'}"}
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/copick_config.json").write_text(json.dumps(cfg))
    proj = CopickProject(tmp_path / "cfg")
    assert proj.config_path == tmp_path / "cfg/copick_config.json", proj.config_path
    assert proj.require_runs() == ["TS_5_4"], proj.runs()
    np.testing.assert_array_equal(proj.read_tomogram("TS_5_4").data, vol)
    assert proj.particles.names == ["ribosome"], proj.particles.names

    cfg["static_root"] = cfg["overlay_root"] = f"local://{tmp_path / 'dta/static'}"
    (tmp_path / "cfg/copick_config.json").write_text(json.dumps(cfg))
    typo = CopickProject(tmp_path / "cfg")
    assert typo.runs() == [], typo.runs()
    with pytest.raises(DataError, match=r"cfg/copick_config.json: no runs in "
                                        r".*dta/static/ExperimentRuns \(missing\)"):
        typo.require_runs()


def test_config_roots_from_home_and_working_directory(tmp_path, monkeypatch):
    """`local://~/…` is the user's home, as fsspec reads it for copick; a relative root is
    the config's folder's where that exists, else the working directory's (copick's)."""
    vol = write_competition_run(tmp_path / "home/data")
    objects = [{"name": "ribosome", "is_particle": True, "label": 1, "radius": 150.0}]
    cfg_path = tmp_path / "configs/copick_config.json"
    cfg_path.parent.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for static, cwd in [("~/data/static", tmp_path), ("home/data/static", tmp_path),
                        ("../home/data/static", tmp_path / "home")]:
        cfg_path.write_text(json.dumps({"config_type": "filesystem", "pickable_objects": objects,
                                        "static_root": f"local://{static}",
                                        "overlay_root": f"local://{static}"}))
        monkeypatch.chdir(cwd)
        proj = CopickProject(cfg_path)
        np.testing.assert_array_equal(proj.read_tomogram("TS_5_4").data, vol, err_msg=static)
        assert proj.static_root.resolve() == (tmp_path / "home/data/static").resolve(), static


def test_other_tools_hidden_files_are_not_runs_tomograms_or_picks(comp):
    """Jupyter leaves .ipynb_checkpoints in every folder it browses, and macOS a ._<name>
    beside each file it copies to a shared drive: infer had stopped on the first ("invalid
    run name") and would have read the second as picks."""
    proj = CopickProject(comp)
    run_dir = comp / "static/ExperimentRuns/TS_5_4"
    picks = comp / "overlay/ExperimentRuns/TS_5_4/Picks"
    for d in (comp / "static/ExperimentRuns/.ipynb_checkpoints", run_dir / ".ipynb_checkpoints",
              run_dir / "VoxelSpacing10.000/.ipynb_checkpoints", picks / ".ipynb_checkpoints",
              run_dir / "VoxelSpacing10.000/._denoised.zarr"):
        d.mkdir(parents=True)
    (picks / "._ribosome.json").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    assert proj.require_runs() == ["TS_5_4"], proj.runs()
    assert proj.tomogram_types("TS_5_4") == ["denoised"], proj.tomogram_types("TS_5_4")
    assert [f[0].name for f in proj.picks_files("TS_5_4")] == ["ribosome.json"], \
        proj.picks_files("TS_5_4")
    assert len(proj.read_truth("TS_5_4")["ribosome"]) == 1, proj.read_truth("TS_5_4")


def test_config_without_particles(tmp_path):
    """A config listing segmentation objects only: an error naming it, before any work."""
    cfg = {"config_type": "filesystem", "overlay_root": "local:///x", "pickable_objects": [
        {"name": "membrane", "is_particle": False, "label": 1}]}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"c.json: its pickable_objects list no particle"):
        ParticleTable.from_copick_config(tmp_path / "c.json")


def test_data_portal_config(tmp_path):
    """A copick config of the CryoET Data Portal: its tomograms are remote, so with nothing
    in its overlay the error says so; runs copied into the overlay are read from there."""
    cfg = tmp_path / "portal.json"
    cfg.write_text(json.dumps({"config_type": "cryoet_data_portal", "dataset_ids": [10440],
                               "overlay_root": "local://overlay", "pickable_objects": [
        {"name": "ribosome", "is_particle": True, "radius": 150.0, "label": 1}]}))
    with pytest.raises(DataError, match=r"portal.json: a copick config of the CryoET Data "
                                        r"Portal \(datasets \[10440\]\).*reads local files"):
        CopickProject(cfg)
    vol = write_competition_run(tmp_path / "copied")
    shutil.move(tmp_path / "copied/static/ExperimentRuns", tmp_path / "overlay/ExperimentRuns")
    np.testing.assert_array_equal(CopickProject(cfg).read_tomogram("TS_5_4").data, vol)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from data_tools.atomic import atomic_path

    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old", "failed write replaced the file"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"], "temporary left behind"


@pytest.mark.parametrize("kind,values,message", [
    ("scale", [10.0, 14.0, 10.0], r"per-axis scale \[10.0, 14.0, 10.0\]"),
    ("translation", [0.0, 0.0, 5.0], r"per-axis translation \[0.0, 0.0, 5.0\]")])
def test_anisotropic_levels_are_refused(comp, kind, values, message):
    zarr_dir = comp / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000/denoised.zarr"
    attrs = json.loads((zarr_dir / ".zattrs").read_text())
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    transforms[:] = [t for t in transforms if t["type"] == "scale"]
    if kind == "scale":
        transforms[0]["scale"] = values
    else:
        transforms.append({"type": "translation", "translation": values})
    (zarr_dir / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(DataError, match=f"denoised.zarr: level '0' has {message}"):
        CopickProject(comp).read_tomogram("TS_5_4")


def test_non_finite_count_counts_what_a_mask_counts():
    """The sum's shortcut: finite values whose sum overflows are not counted, and a +inf
    and a -inf that cancel to NaN in the sum are both counted."""
    import warnings

    from data_tools.zarr_levels import non_finite_count

    vol = np.random.default_rng(0).normal(size=(4, 30, 30)).astype(np.float32)
    assert non_finite_count(vol) == 0
    vol[1, 2, 3], vol[2, 3, 4], vol[3, 4, 5] = np.nan, np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shortcut's overflow and NaN stay quiet
        assert non_finite_count(vol) == 3
        assert non_finite_count(np.full((3, 4, 5), 3e38, np.float32)) == 0


def test_runs_are_named_by_name_or_by_pattern(tmp_path):
    """--runs and --exclude take runs or shell-style patterns, each run once in the
    project's order; a name or pattern of --runs that names no run, or an unsafe name, is
    an error; one of --exclude that names none leaves nothing out."""
    from data_tools.run_names import runs_named

    for run in ("TS_5_4", "TS_69_2", "TS_6_4", "TS_6_6", "TS_73_6"):
        (tmp_path / "static/ExperimentRuns" / run).mkdir(parents=True)
    project = CopickProject(tmp_path)
    assert runs_named([project], ["TS_6_*"]) == [["TS_6_4", "TS_6_6"]]
    assert runs_named([project], ["TS_6*", "TS_6_4"]) == [["TS_69_2", "TS_6_4", "TS_6_6"]]
    assert runs_named([project], ["TS_[57]*"]) == [["TS_5_4", "TS_73_6"]]
    assert runs_named([project], None, ["TS_6*"]) == [["TS_5_4", "TS_73_6"]]
    assert runs_named([project], ["TS_6?_*", "TS_5_4"], ["TS_5_4"]) == [["TS_69_2"]]
    with pytest.raises(DataError, match=r"no run 'TS_8\*', 'TS_x'; runs: TS_5_4, "):
        runs_named([project], ["TS_8*", "TS_5_4", "TS_x"])
    # what an argument file leaves out may be absent from this checkout
    assert runs_named([project], ["TS_5*"], ["TS_9*", "TS_99_1"]) == [["TS_5_4"]]
    with pytest.raises(DataError, match="invalid run name '../x'"):
        runs_named([project], ["../x"])
