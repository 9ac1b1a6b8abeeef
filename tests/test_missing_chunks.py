"""Chunk files absent from a tomogram's store (an interrupted download): zarr reads them as
its fill value without a word. They are counted in every store layout zarr writes, named in
a warning, and a pyramid level with some absent gives way to a whole finer one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import zarr

from data_tools.copick_io import CopickProject
from data_tools.info import project_info
from data_tools.ome_zarr import missing_chunks
from data_tools.particles import DataError
from data_tools.sparsify import plan_input, read_input
from data_tools.sparsify_config import SparsifyConfig
from tests.test_copick_io import make_project

SHAPE, CHUNKS = (8, 12, 16), (4, 6, 8)  # a grid of 2 x 2 x 2 chunks


def _v2_dots(path: Path):
    return zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype="f4", zarr_format=2)


def _v2_slashes(path: Path):
    return zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype="f4", zarr_format=2,
                             chunk_key_encoding={"name": "v2", "separator": "/"})


def _v3_default(path: Path):  # keys c/0/1/1
    return zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype="f4", zarr_format=3)


def _v3_v2_keys(path: Path):
    return zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype="f4", zarr_format=3,
                             chunk_key_encoding={"name": "v2", "separator": "."})


def _v3_five_d(path: Path):  # OME-Zarr 0.5's t, c axes of one each
    return zarr.create_array(str(path), shape=(1, 1, *SHAPE), chunks=(1, 1, *CHUNKS),
                             dtype="f4", zarr_format=3)


def _v3_sharded(path: Path):  # a file per shard of 2 x 2 chunks in y, x: 2 files in all
    return zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, shards=(4, 12, 16),
                             dtype="f4", zarr_format=3)


LAYOUTS = {"v2 .": (_v2_dots, 8), "v2 /": (_v2_slashes, 8), "v3 c/": (_v3_default, 8),
           "v3 v2 keys": (_v3_v2_keys, 8), "v3 t,c,z,y,x": (_v3_five_d, 8),
           "v3 sharded": (_v3_sharded, 2)}


def _chunk_files(path: Path) -> list[Path]:
    return sorted(f for f in path.rglob("*")
                  if f.is_file() and f.name not in (".zarray", ".zattrs", "zarr.json"))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_absent_chunk_files_are_counted_in_every_layout(tmp_path, layout):
    make, n_files = LAYOUTS[layout]
    arr = make(tmp_path / "a.zarr")
    assert missing_chunks(tmp_path / "a.zarr") == (n_files, n_files)  # nothing written yet
    arr[...] = np.arange(arr.size, dtype=np.float32).reshape(arr.shape) + 1
    files = _chunk_files(tmp_path / "a.zarr")
    assert len(files) == n_files
    assert missing_chunks(tmp_path / "a.zarr") == (0, n_files)
    files[-1].unlink()
    (tmp_path / "a.zarr" / "notes.txt").write_text("not a chunk")  # other files do not count
    assert missing_chunks(tmp_path / "a.zarr") == (1, n_files)


def test_the_projects_writer_stores_chunks_of_one_value_too(tmp_path):
    """zarr skips a chunk equal to the fill value unless told not to: the project's own
    tomograms, blank (zero) corners included, must never read as incomplete."""
    proj = make_project(tmp_path)
    vol = np.zeros((16, 32, 32), np.float32)
    vol[8:, 16:, 16:] = 1.0
    path = proj.write_tomogram("TS_1", vol, voxel_size_A=10.0, chunks_zyx=(8, 16, 16))
    assert missing_chunks(path / "0") == (0, 8)
    assert missing_chunks(path / "1") == (0, 1)


@pytest.fixture
def pyramid(tmp_path) -> Path:
    """A 10 Å run in 8 x 16 x 16 chunks: level 1 (20 Å, the working grid) in 2 x 2 x 2."""
    proj = make_project(tmp_path)
    vol = np.random.default_rng(0).normal(size=(32, 64, 64)).astype(np.float32)
    return proj.write_tomogram("TS_1", vol, voxel_size_A=10.0, chunks_zyx=(8, 16, 16))


def test_a_level_with_chunks_absent_gives_way_to_a_whole_finer_one(pyramid, caplog):
    path = pyramid
    proj, cfg = CopickProject(path.parents[4]), SparsifyConfig()
    whole, _ = read_input(proj, "TS_1", cfg)
    assert plan_input(proj, "TS_1", cfg).describe().endswith("level 1 (20.000 Å, 16x32x32) "
                                                             "-> as is")
    (path / "1" / "1.0.1").unlink()
    with caplog.at_level(logging.WARNING):
        plan = plan_input(proj, "TS_1", cfg)
        again, _ = read_input(proj, "TS_1", cfg)
    assert (plan.source.level, plan.how) == (0, "bin 2")
    # Level 1 was written as level 0 binned by 2, which is how level 0 is read: the same bytes.
    np.testing.assert_array_equal(again.data, whole.data)
    levels = project_info(proj)["runs"]["TS_1"]["tomograms"]["denoised"]["levels"]
    assert [lv["chunk_files_absent"] for lv in levels] == [0, 1, 0]
    said = [r.getMessage() for r in caplog.records if "instead" in r.getMessage()]
    assert said == ["denoised VoxelSpacing10.000 level 1 (20.000 Å, 16x32x32, 1 chunk files "
                    "absent): reading denoised VoxelSpacing10.000 level 0 (10.000 Å, "
                    "32x64x64) instead, whose chunk files are all on disk"]


def test_without_a_whole_level_that_serves_the_planned_one_is_read_with_a_warning(pyramid,
                                                                                  caplog):
    """Level 0 incomplete too: level 1 is read as planned (its absent chunk as the fill
    value, 0), and a warning names the array and how many files it lacks; the whole level 2
    (40 Å) would have to be upsampled, and is not read instead."""
    path = pyramid
    proj, cfg = CopickProject(path.parents[4]), SparsifyConfig()
    (path / "1" / "1.0.1").unlink()
    (path / "0" / "0.0.0").unlink()
    with caplog.at_level(logging.WARNING):
        tomo, _ = read_input(proj, "TS_1", cfg)
    plan = plan_input(proj, "TS_1", cfg)
    assert (plan.source.level, plan.how, plan.source.missing_chunks) == (1, "as is", 1)
    assert np.all(tomo.data[8:16, 0:16, 16:32] == 0.0)
    assert np.all(tomo.data[:8] != 0.0)
    said = [r.getMessage() for r in caplog.records if "chunk files are not on disk" in
            r.getMessage()]
    assert said == [f"{path / '1'}: 1 of 8 chunk files are not on disk and read as the fill "
                    f"value (0.0): an incomplete copy (an interrupted download) loses "
                    f"whatever they held; fetch the tomogram again unless its writer "
                    f"skipped chunks of that value on purpose"]


def test_a_damaged_chunk_file_is_named(pyramid):
    """A truncated chunk file fails the whole block zarr was asked for; the error names the
    array, the chunk that fails alone and its voxels, however the level is read."""
    path = pyramid
    proj = CopickProject(path.parents[4])
    f = path / "0" / "2.1.0"  # sections 16..23, rows 16..31, columns 0..15 of level 0
    f.write_bytes(f.read_bytes()[:40])
    expected = (f"{path / '0'}: cannot read array .*; chunk 2.1.0 \\(z, y, x voxels 16..23, "
                f"16..31, 0..15\\) fails to decode: a damaged or truncated chunk file")
    with pytest.raises(DataError, match=expected):
        proj.read_tomogram("TS_1")
    with pytest.raises(DataError, match=expected):
        read_input(proj, "TS_1", SparsifyConfig(voxel_spacing_A=7.0, bin_factor=2))  # resampled
