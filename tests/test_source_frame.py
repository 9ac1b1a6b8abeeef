"""Picks go back to the user's own MRC file: the import's binning and IMOD rotation are
recorded in the tomogram's `.zattrs` and undone, checked on bright marks at known pixels
and through `sparse_det.infer --star-out`, `--imod-out` and `--dynamo-out` on an
IMOD-oriented run."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pandas as pd
import pytest

from data_tools.copick_io import CopickProject
from data_tools.imod_model import read_imod_model
from data_tools.import_mrc import main as import_main
from data_tools.mrc import write_mrc
from data_tools.particles import DataError
from data_tools.source_frame import IMPORT_KEY, read_source_frame
from sparse_det.import_picks import main as import_picks_main
from sparse_det.infer import main as infer_main
from tests.test_outputs import read_star_loop


def _marked(shape_zyx, marks_zyx, size):
    """A noise-free volume, 0 except a size³ block of value k + 1 at each mark's corner."""
    vol = np.zeros(shape_zyx, dtype=np.float32)
    for k, (z, y, x) in enumerate(marks_zyx):
        vol[z:z + size, y:y + size, x:x + size] = k + 1
    return vol


@pytest.mark.parametrize("bin_factor,thin_axis", [(1, "auto"), (2, "auto"), (2, "z"),
                                                  (3, "y")])
def test_a_mark_imported_is_found_again_at_its_pixels_in_the_file(tmp_path, bin_factor,
                                                                   thin_axis):
    # y thin (IMOD's `tilt` output) and 9 rows, so binning by 2 drops a remainder row
    shape_zyx = (36, 9, 42) if thin_axis != "z" else (9, 36, 42)
    marks_zyx = [(6, 0, 12), (24, 6, 30), (0, 3, 0)] if thin_axis != "z" else [
        (0, 6, 12), (6, 24, 30), (3, 0, 0)]
    marks_zyx = [tuple(c - c % bin_factor for c in m) for m in marks_zyx]
    path = tmp_path / "TS_9.mrc"
    write_mrc(path, _marked(shape_zyx, marks_zyx, bin_factor), 7.5)
    assert import_main([str(path), "--out", str(tmp_path / "p"), "--bin", str(bin_factor),
                        "--thin-axis", thin_axis]) == 0
    project = CopickProject(tmp_path / "p")
    size_A = 7.5 * bin_factor
    zarr_path = project.tomogram_path("TS_9", round(size_A, 3), "wbp")
    frame = read_source_frame(zarr_path)
    assert frame.file == str(path.resolve()) and frame.shape_zyx == shape_zyx
    assert frame.pixel_size_A == pytest.approx(7.5) and frame.bin == bin_factor
    assert frame.rotated_about_x == (thin_axis != "z")
    tomo = project.read_tomogram("TS_9", round(size_A, 3), "wbp")
    for k, mark_zyx in enumerate(marks_zyx):
        at_zyx = np.argwhere(tomo.data == k + 1)
        assert len(at_zyx) == 1, (k, at_zyx)  # the bin³ block is one imported voxel
        xyz_A = at_zyx[0, ::-1] * size_A + tomo.origin_A
        px_xyz = frame.to_source_px(xyz_A, tomo.voxel_size_A, tomo.origin_A)
        expected_xyz = np.array(mark_zyx[::-1]) + (bin_factor - 1) / 2  # the block's centre
        np.testing.assert_allclose(px_xyz[0], expected_xyz, atol=1e-9)


def test_a_tomogram_not_imported_has_no_record_and_a_bad_record_is_named(tmp_path):
    path = tmp_path / "TS_1.mrc"
    write_mrc(path, np.zeros((4, 12, 12), np.float32), 10.0)
    assert import_main([str(path), "--out", str(tmp_path / "p")]) == 0
    zarr_path = CopickProject(tmp_path / "p").tomogram_path("TS_1", 10.0, "wbp")
    attrs_file = zarr_path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    assert read_source_frame(zarr_path).rotated_about_x is False
    attrs_file.write_text(json.dumps({"multiscales": attrs["multiscales"]}))
    assert read_source_frame(zarr_path) is None
    attrs_file.write_text(json.dumps({**attrs, IMPORT_KEY: {"file": "x", "bin": 2}}))
    with pytest.raises(DataError, match=r"\.zattrs.*sparse_det_import.*malformed"):
        read_source_frame(zarr_path)


def test_star_pixels_of_an_ome_zarr_05_tomogram(tmp_path):
    """A tomogram in zarr v3 (no .zattrs) has no import record; its STAR pixels are those of
    its finest level, counted from that level's origin."""
    from data_tools.sparsify_config import SparsifyConfig
    from sparse_det.writers import run_pixel_frame
    from tests.test_copick_io import write_competition_run, write_ome_zarr_v05

    write_competition_run(tmp_path)
    d = tmp_path / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.000"
    shutil.rmtree(d / "denoised.zarr")
    write_ome_zarr_v05(d / "denoised.zarr", np.zeros((8, 12, 16), np.float32), 10.012,
                       origin_A=5.006)
    assert read_source_frame(d / "denoised.zarr") is None
    frame = run_pixel_frame(CopickProject(tmp_path), "TS_5_4", SparsifyConfig())
    assert frame.pixel_size_A == pytest.approx(10.012)
    np.testing.assert_allclose(frame.to_px(np.array([[5.006 + 3 * 10.012, 5.006, 105.126]])),
                               [[3.0, 0.0, 10.0]])


def _imod_oriented_run(small_project, tmp_path):
    """The project's first run written as IMOD leaves it (thin along y) and imported: the
    source project, the run, its tomogram, the file's volume, and infer's common args."""
    src = CopickProject(small_project.path)
    run = src.runs()[0]
    tomo = src.read_tomogram(run, 10.0, "denoised")
    imod = np.swapaxes(np.asarray(tomo.data)[::-1], 0, 1)  # the inverse of trimvol -rx
    write_mrc(tmp_path / f"{run}.rec.mrc", imod, tomo.voxel_size_A)
    assert import_main([str(tmp_path / f"{run}.rec.mrc"), "--out", str(tmp_path / "p")]) == 0
    common = ["--project", str(tmp_path / "p"), "--out", str(tmp_path / "out/sub.csv"),
              "--quiet"]
    return src, run, tomo, imod, common


def test_star_files_of_an_imod_oriented_run_are_in_the_files_pixels(small_project, tmp_path):
    """The run written as IMOD leaves it (thin along y), imported and picked: with
    --star-frame source each pick's STAR pixel holds in the file the value the imported
    tomogram holds at the pick, and the picks that hit the ground truth in Å hit it carried
    into the file's frame by hand; with --star-frame project they are x_Å / voxel size."""
    src, run, tomo, imod, common = _imod_oriented_run(small_project, tmp_path)
    n_z = tomo.data.shape[0]
    out = tmp_path / "out"
    assert infer_main([*common, "--star-out", str(out / "source")]) == 0
    assert infer_main([*common, "--star-out", str(out / "project"), "--star-frame",
                       "project"]) == 0

    def star_xyz(folder, label="rlnCoordinate{}"):
        text = (out / folder / f"{run}.star").read_text()
        labels, body = read_star_loop(text)
        cols = [labels.index(label.format(a)) for a in "XYZ"]
        names = [r[labels.index("sparseDetParticleType")] for r in body]
        return text, np.array([[float(r[c]) for c in cols] for r in body]), names

    text, src_xyz, names = star_xyz("source")
    assert f"{tmp_path / run}.rec.mrc" in text.splitlines()[0] and "rotated" in text
    _, proj_xyz, _ = star_xyz("project")
    sub = pd.read_csv(out / "sub.csv")
    assert len(src_xyz) == len(proj_xyz) == len(sub) > 10
    np.testing.assert_allclose(proj_xyz * tomo.voxel_size_A, sub[["x", "y", "z"]], atol=0.01)
    # RELION 5's centred Å: from the middle of the z-thin tomogram RELION would reconstruct,
    # in its axes, whichever frame the pixels are in
    _, centred_src, _ = star_xyz("source", "rlnCenteredCoordinate{}Angst")
    _, centred_proj, _ = star_xyz("project", "rlnCenteredCoordinate{}Angst")
    np.testing.assert_array_equal(centred_src, centred_proj)
    size_xyz = np.array(tomo.data.shape[::-1])
    np.testing.assert_allclose(centred_proj, sub[["x", "y", "z"]] - size_xyz * tomo.voxel_size_A
                               / 2, atol=0.01)
    imported = CopickProject(tmp_path / "p").read_tomogram(run, round(tomo.voxel_size_A, 3),
                                                           "wbp").data
    near = np.floor(proj_xyz + 0.5).astype(int)
    near_src = np.floor(src_xyz + 0.5).astype(int)
    np.testing.assert_array_equal(imod[near_src[:, 2], near_src[:, 1], near_src[:, 0]],
                                  imported[near[:, 2], near[:, 1], near[:, 0]])
    # ground truth (x, y, z) of the original lies in the file at (x, n_z - 1 - z, y)
    truth = src.read_picks(run)
    hits = 0
    for name, (x, y, z) in zip(names, src_xyz, strict=True):
        gt_xyz_A = truth[name]
        gt_src = np.stack([gt_xyz_A[:, 0], (n_z - 1) * tomo.voxel_size_A - gt_xyz_A[:, 2],
                           gt_xyz_A[:, 1]], axis=1) / tomo.voxel_size_A
        radius_px = src.particles[name].radius_A / tomo.voxel_size_A
        hits += np.linalg.norm(gt_src - [x, y, z], axis=1).min() < 0.5 * radius_px
    hits_A = sum(np.linalg.norm(truth[r.particle_type] - [r.x, r.y, r.z], axis=1).min()
                 < 0.5 * src.particles[r.particle_type].radius_A for r in sub.itertuples())
    assert hits == hits_A > 0.5 * len(names), (hits, hits_A, len(names))



def test_imod_models_of_an_imod_oriented_run_round_trip(small_project, tmp_path):
    """infer's --imod-out over the file: each object a particle at the STAR's source pixels
    (stored with x and y from the pixel's edge, as 3dmod does), the header the MRC's size,
    and import_picks reads the models back to the CSV's Å."""
    src, run, tomo, imod, common = _imod_oriented_run(small_project, tmp_path)
    out = tmp_path / "out"
    assert infer_main([*common, "--star-out", str(out / "source"),
                       "--imod-out", str(out / "imod"), "--dynamo-out", str(out / "tbl")]) == 0
    labels, body = read_star_loop((out / "source" / f"{run}.star").read_text())
    src_xyz = np.array([[float(r[labels.index(f"rlnCoordinate{a}")]) for a in "XYZ"]
                        for r in body])
    names = [r[labels.index("sparseDetParticleType")] for r in body]
    sub = pd.read_csv(out / "sub.csv")
    model = read_imod_model(out / "imod" / f"{run}.mod")
    assert [o.name for o in model.objects] == src.particles.names
    assert model.pixel_size_A == pytest.approx(tomo.voxel_size_A, rel=1e-6)
    for obj in model.objects:
        mine = np.array([n == obj.name for n in names])
        np.testing.assert_allclose(obj.points_px, src_xyz[mine].reshape(-1, 3), atol=2e-3)
        # --dynamo-out: the same pixels, the table map naming the file they are of
        table = np.loadtxt(out / "tbl" / f"{obj.name}.tbl", ndmin=2).reshape(-1, 35)
        np.testing.assert_allclose(table[:, 23:26], src_xyz[mine].reshape(-1, 3), atol=2e-3)
        assert set(table[:, 19]) <= {1.0}
    assert (out / "tbl" / "tomograms.doc").read_text() == f"1 {tmp_path / run}.rec.mrc\n"
    raw = (out / "imod" / f"{run}.mod").read_bytes()
    assert struct.unpack(">3i", raw[136:148]) == imod.shape[::-1]  # xmax, ymax, zmax: the MRC's
    at = raw.index(b"CONT")  # the first particle found, as 3dmod stores it: x, y + 0.5
    first = next(o for o in model.objects if len(o.points_px))
    np.testing.assert_allclose(struct.unpack(">3f", raw[at + 20:at + 32]),
                               first.points_px[0] + [0.5, 0.5, 0.0], atol=1e-3)
    at += 20 + 12 * len(first.points_px)  # each point's score, in 3dmod's general storage
    assert raw[at:at + 4] == b"COST" and struct.unpack(">i", raw[at + 4:at + 8])[0] == (
        12 * len(first.points_px))
    scores = [float(r[labels.index("rlnAutopickFigureOfMerit")]) for r, n in zip(
        body, names, strict=True) if n == first.name]
    np.testing.assert_allclose([struct.unpack(">hhif", raw[at + 8 + 12 * k:at + 20 + 12 * k])
                                for k in range(len(scores))],
                               [(10, 4, k, v) for k, v in enumerate(scores)], atol=1e-5)
    assert import_picks_main([str(out / "imod" / f"{run}.mod"), "--project",
                              str(tmp_path / "p"), "--user-id", "kim"]) == 0
    kim = CopickProject(tmp_path / "p", truth_user="kim").read_picks(run)
    for name, pts in kim.items():
        want = sub.loc[sub["particle_type"] == name, ["x", "y", "z"]].to_numpy()
        np.testing.assert_allclose(np.sort(pts, axis=0), np.sort(want, axis=0).reshape(-1, 3),
                                   atol=0.02, err_msg=name)
