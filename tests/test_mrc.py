"""MRC volumes: read by hand-built headers' known answers (byte order, permuted axes), written
and read back, refused with the file named; imported into a copick project the shipped
picker picks exactly as it picks the original."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data_tools.copick_io import CopickProject
from data_tools.import_mrc import binned, main, rotated_about_x, run_name
from data_tools.mrc import read_mrc, write_mrc
from data_tools.particles import DataError
from data_tools.zarr_levels import bin2
from tests.test_device_picks import assert_same_picks


def _hand_made(path, n_crs, mode_dtype, voxels, order="<", stamp=True, crs=(1, 2, 3),
               cell=None, mode=2, nsymbt=0, imod_flags=None):
    """An MRC file built field by field, independent of write_mrc."""
    ints = np.zeros(256, dtype=f"{order}i4")
    ints[0:3] = n_crs
    ints[3] = mode
    ints[7:10] = n_crs
    ints[16:19] = crs
    ints[23] = nsymbt
    if imod_flags is not None:
        ints[38:40] = 1146047817, imod_flags
    floats = ints.view(f"{order}f4")
    floats[10:13] = cell if cell is not None else [n * 5.0 for n in n_crs]
    header = bytearray(ints.tobytes())
    if stamp:
        header[208:212] = b"MAP "
        header[212:214] = b"\x44\x44" if order == "<" else b"\x11\x11"
    path.write_bytes(bytes(header) + b"\0" * nsymbt
                     + np.asarray(voxels, dtype=f"{order}{mode_dtype}").tobytes())
    return path


@pytest.mark.parametrize("order,stamp", [("<", True), (">", True), (">", False)])
def test_a_hand_made_file_reads_as_z_y_x_in_either_byte_order(tmp_path, order, stamp):
    """Voxel (z, y, x) holds 100 z + 10 y + x, x fastest on disk, after an extended header."""
    z, y, x = np.meshgrid(np.arange(2), np.arange(3), np.arange(4), indexing="ij")
    value = (100 * z + 10 * y + x).astype(np.float32)
    vol = read_mrc(_hand_made(tmp_path / "a.mrc", (4, 3, 2), "f4", value.ravel(), order,
                              stamp, nsymbt=96))
    np.testing.assert_array_equal(vol.data_zyx, value)
    np.testing.assert_array_equal(vol.read_z(1, 2), value[1:])  # past the extended header
    assert vol.voxel_size_A == pytest.approx(5.0)


@pytest.mark.parametrize("imod_flags,expected", [(None, -56), (1, -56), (0, 200)])
def test_bytes_are_signed_unless_imod_says_otherwise(tmp_path, imod_flags, expected):
    """Byte 0xC8: -56 as MRC2014's signed mode 0, 200 where IMOD stamps the file without
    its signed-bytes flag."""
    vol = read_mrc(_hand_made(tmp_path / "b.mrc", (2, 1, 1), "u1", [0xC8, 3], mode=0,
                              imod_flags=imod_flags))
    assert vol.data_zyx[0, 0, 0] == expected and vol.data_zyx[0, 0, 1] == 3


def test_permuted_axes_are_put_back_as_z_y_x(tmp_path):
    """Columns along z, rows along x, sections along y (MAPC 3, MAPR 1, MAPS 2)."""
    n_x, n_y, n_z = 4, 3, 2
    stored = np.empty((n_y, n_x, n_z), dtype=np.float32)  # sections, rows, columns
    for iy in range(n_y):
        for ix in range(n_x):
            for iz in range(n_z):
                stored[iy, ix, iz] = 100 * iz + 10 * iy + ix
    vol = read_mrc(_hand_made(tmp_path / "p.mrc", (n_z, n_x, n_y), "f4", stored.ravel(),
                              crs=(3, 1, 2)))
    assert vol.data_zyx.shape == (n_z, n_y, n_x)
    assert vol.data_zyx[1, 2, 3] == 123 and vol.data_zyx[0, 1, 2] == 12
    assert not vol.sections_are_z and vol.read_z(1, 2)[0, 2, 3] == 123


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.int16, np.uint16])
def test_written_files_read_back_equal(tmp_path, dtype):
    data = (np.random.default_rng(0).normal(size=(5, 7, 9)) * 20).astype(dtype)
    write_mrc(tmp_path / "w.mrc", data, 10.012)
    vol = read_mrc(tmp_path / "w.mrc")
    np.testing.assert_array_equal(vol.data_zyx, data)
    assert vol.voxel_size_A == pytest.approx(10.012)
    assert not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<i2", "<i1", "<u2", "<f2"])
def test_files_written_by_mrcfile_read_equal(tmp_path, dtype):
    """mrcfile, the field's reference library, writes modes 2, 1, 0, 6 and 12 in either byte
    order; each reads as its voxels, z, y, x, with the voxel size mrcfile wrote."""
    import mrcfile

    data = (np.random.default_rng(1).normal(size=(6, 8, 10)) * 20 + 50).astype(dtype)
    with mrcfile.new(tmp_path / "m.mrc") as m:
        m.set_data(data)
        m.voxel_size = (13.48, 13.48, 13.48)
    vol = read_mrc(tmp_path / "m.mrc")
    np.testing.assert_array_equal(vol.data_zyx, data)
    assert vol.data_zyx.shape == (6, 8, 10) and vol.voxel_size_A == pytest.approx(13.48)


def test_bad_files_are_refused_naming_the_file_and_the_problem(tmp_path):
    good = np.zeros(24, np.float32)
    cases = {
        "short.mrc": (lambda p: p.write_bytes(b"MRC" * 10), "shorter than an MRC header"),
        "trunc.mrc": (lambda p: p.write_bytes(
            _hand_made(p, (4, 3, 2), "f4", good).read_bytes()[:-8]), "truncated"),
        "complex.mrc": (lambda p: _hand_made(p, (4, 3, 2), "f4", np.zeros(48, np.float32),
                                             mode=4), "mode 4"),
        "aniso.mrc": (lambda p: _hand_made(p, (4, 3, 2), "f4", good, cell=[20, 15, 30]),
                      "anisotropic"),
        "noise.mrc": (lambda p: p.write_bytes(np.full(600, -7, "<i4").tobytes()),
                      "not an MRC volume"),
    }
    for name, (make, problem) in cases.items():
        make(tmp_path / name)
        with pytest.raises(DataError, match=problem) as err:
            read_mrc(tmp_path / name)
        assert name in str(err.value)


def test_binning_by_slabs_read_from_the_file_equals_binning_it_whole(tmp_path):
    data = np.random.default_rng(1).normal(size=(9, 10, 12)).astype(np.float32)
    write_mrc(tmp_path / "b.mrc", data, 2.5)
    vol = read_mrc(tmp_path / "b.mrc")
    np.testing.assert_allclose(binned(vol, 2), bin2(data), rtol=1e-6)
    np.testing.assert_array_equal(binned(vol, 1), data)
    np.testing.assert_array_equal(vol.read_z(3, 5), data[3:5])


def test_rotation_about_x_is_imods_and_keeps_handedness():
    """A marker at (z 1, y 2, x 3) of a 4x6x5 volume lands at (z 6-1-2, y 1, x 3); a
    rotation, so the triple product of the axes keeps its sign."""
    vol = np.zeros((4, 6, 5), np.float32)
    vol[1, 2, 3] = 1
    out = rotated_about_x(vol)
    assert out.shape == (6, 4, 5) and out[3, 1, 3] == 1
    # the images of unit steps along z, y, x, as (z, y, x) index offsets
    steps = []
    for d in np.eye(3, dtype=int):
        a = np.zeros((4, 6, 5), np.float32)
        a[1, 2, 3] = 1
        a[tuple(np.array([1, 2, 3]) + d)] = 2
        r = rotated_about_x(a)
        steps.append(np.argwhere(r == 2)[0] - np.argwhere(r == 1)[0])
    assert np.linalg.det(np.array(steps)) == pytest.approx(1.0)


def test_run_names_drop_volume_suffixes():
    assert run_name("x/TS_01.rec.mrc") == "TS_01" and run_name("TS_6_4.MRC") == "TS_6_4"
    assert run_name("x/TS 01.mrc") == "TS_01" and run_name("TS+4 (b).rec") == "TS_4__b_"
    for bad in (".mrc", "...mrc", "_x.mrc"):
        with pytest.raises(DataError, match=rf"{re.escape(bad)}: invalid run name .*rename"):
            run_name(bad)


def test_two_files_that_make_one_run_are_both_named(tmp_path, capsys):
    for name in ("TS 1.mrc", "TS_1.rec"):
        write_mrc(tmp_path / name, np.zeros((4, 6, 6), np.float32), 10.0)
    assert main(["--out", str(tmp_path / "p"), str(tmp_path / "TS 1.mrc"),
                 str(tmp_path / "TS_1.rec")]) != 0
    err = capsys.readouterr().err
    assert "TS 1.mrc" in err and "TS_1.rec" in err and "the same run 'TS_1'" in err, err
    assert not (tmp_path / "p").exists()


def test_an_imod_oriented_mrc_imports_and_picks_as_the_original(small_project, tmp_path):
    """A run written as IMOD's `tilt` leaves it (thin along y) and imported with no flag is
    the original volume again, and the shipped picker picks it as it picks the original."""
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT
    from sparse_det.inference import Picker

    src = CopickProject(small_project.path)
    run = src.runs()[0]
    tomo = src.read_tomogram(run, 10.0, "denoised")
    imod = np.swapaxes(np.asarray(tomo.data)[::-1], 0, 1)  # the inverse of trimvol -rx
    assert imod.shape[1] < imod.shape[0]
    write_mrc(tmp_path / f"{run}.rec.mrc", imod, tomo.voxel_size_A)
    assert main([str(tmp_path / f"{run}.rec.mrc"), "--out", str(tmp_path / "proj")]) == 0
    dest = CopickProject(tmp_path / "proj")
    assert dest.runs() == [run] and dest.tomogram_types(run) == ["wbp"]
    back = dest.read_tomogram(run, round(tomo.voxel_size_A, 3), "wbp")
    np.testing.assert_array_equal(back.data, tomo.data)
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    original = picker.pick(picker.detect_run(src, run))
    imported = picker.pick(picker.detect_run(dest, run))
    assert assert_same_picks(original, imported, picker) > 10
    assert main([str(tmp_path / "missing.mrc"), "--out", str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()


def test_a_header_without_a_pixel_size_is_refused_until_one_is_given(tmp_path, capsys):
    """Cell 0, or a cell equal to the grid (1 Å: what IMOD writes for an unset pixel size),
    would read a tomogram 10-20x too fine: refused, naming the file, unless --voxel-size
    says what it is."""
    vox = np.random.default_rng(0).normal(size=16 * 12 * 8).astype(np.float32)
    for name, cell in [("TS_unset.mrc", [16, 12, 8]), ("TS_zero.mrc", [0, 0, 0])]:
        path = _hand_made(tmp_path / name, (16, 12, 8), "f4", vox, cell=cell)
        assert main([str(path), "--out", str(tmp_path / "p")]) == 2
        err = capsys.readouterr().err
        assert name in err and "pass --voxel-size" in err, err
        assert main([str(path), "--out", str(tmp_path / "p"), "--voxel-size", "12.5"]) == 0
        run = name.removesuffix(".mrc")
        tomo = CopickProject(tmp_path / "p").read_tomogram(run, 12.5, "wbp")
        assert tomo.voxel_size_A == pytest.approx(12.5)
