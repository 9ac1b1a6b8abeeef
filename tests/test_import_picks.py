"""Annotations made in other tools come in as a person's copick picks: STAR files as
RELION 5 (Å from the tomogram's centre), RELION 4 / Warp (pixels) and infer's own
`--star-out` write them, and the competition's CSV. Each round trip returns the picks it
started from; a wrong pixel size or an unknown tomogram is refused by name."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pandas as pd
import pytest

from data_tools.copick_io import CopickProject
from data_tools.imod_model import FLIP_YZ, OTRANS_ORIGIN, SCATTERED
from data_tools.import_mrc import run_name
from data_tools.particles import DataError
from data_tools.source_frame import SourceFrame
from data_tools.sparsify_config import SparsifyConfig
from sparse_det.import_picks import main
from sparse_det.picks_formats import _as_run, star_loops
from sparse_det.writers import run_pixel_frame, star_text


@pytest.fixture
def project(small_project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(small_project.path, root)
    return CopickProject(root)


def _truth_rows(project, run):
    rows = [(name, *xyz) for name, pts in project.read_picks(run).items() for xyz in pts]
    out = pd.DataFrame(rows, columns=["particle_type", "x", "y", "z"])
    out["score"] = 1.0
    return out


def _assert_alice_has(project, run, rows):
    alice = CopickProject(project.path, truth_user="alice").read_picks(run)
    for name, pts in alice.items():
        want = rows[rows["particle_type"] == name][["x", "y", "z"]].to_numpy()
        np.testing.assert_allclose(np.sort(pts, axis=0), np.sort(want, axis=0).reshape(-1, 3),
                                   atol=0.01, err_msg=name)  # the STAR holds 0.01 Å


def test_infers_star_files_come_back_as_the_picks_they_were(project, tmp_path, capsys):
    """infer's --star-out writes both RELION 5's centred Å and pixels; either alone reads
    back to the same Å."""
    run = project.runs()[0]
    rows = _truth_rows(project, run)
    assert len(rows) > 10
    frame = run_pixel_frame(project, run, SparsifyConfig())
    text = star_text(run, rows, frame, project.particles)
    star = tmp_path / f"{run}.star"
    star.write_text(text)
    assert main([str(star), "--project", str(project.path), "--user-id", "alice"]) == 0
    assert f"{run}: " in capsys.readouterr().out
    _assert_alice_has(project, run, rows)

    # the pixels alone (RELION 4, Warp): the centred columns dropped
    [loop] = star_loops(text, "t")
    pixels = loop.drop(columns=[c for c in loop if "Centered" in c])
    star.write_text("data_particles\n\nloop_\n"
                    + "".join(f"_{c}\n" for c in pixels.columns)
                    + "\n".join(" ".join(r) for r in pixels.to_numpy()) + "\n")
    for f in (project.path / "overlay/ExperimentRuns" / run / "Picks").glob("alice_*"):
        f.unlink()
    assert main([str(star), "--project", str(project.path), "--user-id", "alice"]) == 0
    _assert_alice_has(project, run, rows)


def test_tomogram_names_become_the_runs_import_mrc_made():
    """Another tool's name for a tomogram (a path, Warp's .tomostar, a file name with a
    space: an IMOD model's, a Dynamo table map's) reads as the run import_mrc made of it."""
    for name in ("/data/TS 01.rec", "TS+01.mrc", "TS_01.mrc"):
        assert _as_run(name) == run_name(name) == "TS_01", name
    assert _as_run("TS 01.tomostar") == "TS_01"


def test_a_relion5_particles_file(project, tmp_path):
    """Blocks before the particles, no pixel columns, Warp's .tomostar names, one particle."""
    run = project.runs()[1]
    frame = run_pixel_frame(project, run, SparsifyConfig())
    xyz_A = np.array([[300.0, 400.0, 200.0], [800.0, 650.0, 310.0]])
    c = frame.centred_A(xyz_A)
    star = tmp_path / "particles.star"
    star.write_text(
        "# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks 0\n\n"
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 10.0\n\n"
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
        "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n"
        + "".join(f"{run}.tomostar {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in c))
    assert main([str(star), "--project", str(project.path), "--user-id", "alice",
                 "--particle", "ribosome"]) == 0
    _assert_alice_has(project, run, pd.DataFrame({"particle_type": "ribosome", "x": xyz_A[:, 0],
                                                  "y": xyz_A[:, 1], "z": xyz_A[:, 2]}))


def test_wrong_pixels_unknown_tomograms_and_reserved_names_are_refused(project, tmp_path,
                                                                        capsys):
    run = project.runs()[0]
    star = tmp_path / "p.star"
    body = ("data_particles\nloop_\n_rlnTomoName\n_rlnCoordinateX\n_rlnCoordinateY\n"
            "_rlnCoordinateZ\n_rlnDetectorPixelSize\n{run} 10 20 5 {px}\n")
    star.write_text(body.format(run=run, px=40.0))  # the project's finest level: 10.012 Å
    args = [str(star), "--project", str(project.path), "--user-id", "alice",
            "--particle", "ribosome"]
    assert main(args) == 2
    assert "coordinates are in pixels of 40 Å" in capsys.readouterr().err
    star.write_text(body.format(run="TS_nowhere", px=10.012))
    assert main(args) == 2
    assert "tomogram 'TS_nowhere' is not a run of" in capsys.readouterr().err
    star.write_text(body.format(run=run, px=10.012))
    assert main([*args[:-4], "--user-id", "alice", "--session-id", "0"]) == 2
    assert "session 0 are kept" in capsys.readouterr().err
    assert main([*args[:-4], "--user-id", "a_b"]) == 2
    assert "--user-id:--session-id 'a_b:1'" in capsys.readouterr().err
    assert main(args) == 0
    np.testing.assert_allclose(CopickProject(project.path, truth_user="alice").read_picks(run)
                               ["ribosome"], [[100.12, 200.24, 50.06]], atol=1e-3)


def test_competition_csv(project, tmp_path):
    run = project.runs()[0]
    csv = tmp_path / "picks.csv"
    pd.DataFrame({"id": [0, 1], "experiment": run, "particle_type": ["ribosome", "apo-ferritin"],
                  "x": [100.0, 200.0], "y": [300.0, 400.0], "z": [50.0, 60.0]}).to_csv(csv,
                                                                                     index=False)
    assert main([str(csv), "--project", str(project.path), "--user-id", "bob"]) == 0
    bob = CopickProject(project.path, truth_user="bob").read_picks(run)
    np.testing.assert_array_equal(bob["apo-ferritin"], [[200.0, 400.0, 60.0]])
    assert sorted(k for k, v in bob.items() if len(v)) == ["apo-ferritin", "ribosome"]
    typo = tmp_path / "typo.csv"
    pd.read_csv(csv).assign(experiment="TS_sim_7_0O0").to_csv(typo, index=False)
    runs = project.runs()
    assert main([str(typo), "--project", str(project.path), "--user-id", "bob"]) == 2
    assert project.runs() == runs


@pytest.mark.parametrize("k,rotated", [(1, False), (2, False), (2, True), (3, True)])
def test_source_pixels_undo_exactly(k, rotated):
    frame = SourceFrame("t.mrc", (60, 31, 90), 5.0, bin=k, rotated_about_x=rotated)
    xyz_A = np.random.default_rng(k).uniform(0, 150, (20, 3))
    px = frame.to_source_px(xyz_A, 5.0 * k, origin_A=2.5)
    np.testing.assert_allclose(frame.from_source_px(px, 5.0 * k, origin_A=2.5), xyz_A,
                               atol=1e-9)


def test_a_star_row_of_the_wrong_length_is_named(tmp_path):
    with pytest.raises(DataError, match="a row has 2 values for 3 columns: TS_1 5"):
        star_loops("data_\nloop_\n_a\n_b\n_c\nTS_1 5\n", "f.star")


def test_pixels_of_the_mrc_a_run_was_imported_from(tmp_path):
    """A run import_mrc binned 2× and turned (IMOD's thin-in-y output): a pick at a mark's
    pixels in the original file lands on the imported voxel that holds the mark."""
    from data_tools.import_mrc import main as import_main
    from data_tools.mrc import write_mrc
    from tests.test_source_frame import _marked

    marks_zyx = [(6, 0, 12), (24, 6, 30)]
    path = tmp_path / "TS_9.mrc"
    write_mrc(path, _marked((36, 9, 42), marks_zyx, 2), 7.5)
    assert import_main([str(path), "--out", str(tmp_path / "p"), "--bin", "2"]) == 0
    project = CopickProject(tmp_path / "p")
    px_xyz = np.array([m[::-1] for m in marks_zyx]) + 0.5  # each 2³ block's centre
    star = tmp_path / "TS_9.star"
    star.write_text("data_particles\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n"
                    "_rlnCoordinateY\n_rlnCoordinateZ\n_rlnDetectorPixelSize\n"
                    + "".join(f"TS_9.tomostar {x} {y} {z} 7.5\n" for x, y, z in px_xyz))
    assert main([str(star), "--project", str(project.path), "--user-id", "alice",
                 "--particle", "ribosome", "--tomo-type", "wbp"]) == 0
    got = CopickProject(project.path, truth_user="alice").read_picks("TS_9")["ribosome"]
    tomo = project.read_tomogram("TS_9", 15.0, "wbp")
    for k in range(len(marks_zyx)):
        [at_zyx] = np.argwhere(tomo.data == k + 1)
        np.testing.assert_allclose(got[k], at_zyx[::-1] * 15.0 + tomo.origin_A, atol=1e-6)


def _dynamo_row(tag: int, tomo: int, xyz_px, shift_px) -> str:
    row = np.zeros(35)
    row[0], row[19], row[21] = tag, tomo, 1
    row[3:6], row[23:26] = shift_px, xyz_px
    return " ".join(f"{v:g}" for v in row)


def test_dynamo_tables_with_a_table_map_or_a_volume_list(project, tmp_path, capsys):
    """x + dx (columns 24 and 4) in the same pixels as a STAR's rlnCoordinate: each pick
    lands where its STAR twin does; column 20's index names the run through the map."""
    run0, run1 = project.runs()[:2]
    frames = {r: run_pixel_frame(project, r, SparsifyConfig()) for r in (run0, run1)}
    tbl = tmp_path / "picks.tbl"
    tbl.write_text("\n".join([_dynamo_row(1, 1, (30, 40, 20), (0.5, -0.25, 1)),
                              _dynamo_row(2, 2, (60, 10, 12), (0, 0, 0)),
                              _dynamo_row(3, 2, (61, 11, 13), (-1, -1, -1))]) + "\n")
    doc = tmp_path / "map.doc"
    doc.write_text(f"1 /data/tomos/{run0}.mrc\n2 /data/tomos/{run1}.rec\n")
    args = [str(tbl), "--project", str(project.path), "--user-id", "carol",
            "--particle", "thyroglobulin"]
    assert main(args) == 2
    assert "--run, or give --tomo-map" in capsys.readouterr().err
    assert main([*args, "--tomo-map", str(doc)]) == 0
    carol = CopickProject(project.path, truth_user="carol")
    np.testing.assert_allclose(carol.read_picks(run0)["thyroglobulin"],
                               frames[run0].from_px(np.array([[30.5, 39.75, 21.0]])))
    np.testing.assert_allclose(carol.read_picks(run1)["thyroglobulin"],
                               frames[run1].from_px(np.array([[60.0, 10, 12]] * 2)))
    vll = tmp_path / "tomos.vll"
    vll.write_text(f"/data/{run1}.mrc\n* label = a\n/data/{run0}.mrc\n")
    assert main([*args, "--tomo-map", str(vll), "--user-id", "dave"]) == 0
    dave = CopickProject(project.path, truth_user="dave")
    assert len(dave.read_picks(run1)["thyroglobulin"]) == 1  # index 1: the vll's first
    assert main([*args[:-2], "--tomo-map", str(doc)]) == 2
    assert "name the particle these picks are with --particle" in capsys.readouterr().err
    doc.write_text(f"1 /data/tomos/{run0}.mrc\n")
    assert main([*args, "--tomo-map", str(doc), "--user-id", "erin"]) == 2
    assert "tomogram indices [2] are not in --tomo-map" in capsys.readouterr().err


def test_complete_says_the_other_particles_are_none(project, tmp_path):
    """Without --complete the particles a file lacks are not annotated in its runs; with it
    they are annotated as none (an empty file)."""
    run = project.runs()[0]
    csv = tmp_path / "picks.csv"
    pd.DataFrame({"id": [0], "experiment": run, "particle_type": ["ribosome"],
                  "x": [100.0], "y": [300.0], "z": [50.0]}).to_csv(csv, index=False)
    assert main([str(csv), "--project", str(project.path), "--user-id", "bob"]) == 0
    bob = CopickProject(project.path, truth_user="bob")
    assert list(bob.read_truth(run)) == ["ribosome"]
    assert main([str(csv), "--project", str(project.path), "--user-id", "bob",
                 "--complete"]) == 0
    truth = bob.read_truth(run)
    assert list(truth) == project.particles.names and bob.unannotated_particles(run) == []
    assert len(truth["ribosome"]) == 1 and sum(len(v) for v in truth.values()) == 1
    assert bob.annotated_runs() == [run]  # the other run is named by no file


def _imod_model(objects, *, flags=0, minx=None, pixsize=1.0, units=0) -> bytes:
    """An IMOD binary model laid out by hand from IMOD's binspec: `objects` are (name,
    object flags, [contour points (N, 3) as stored]); a mesh, material, point-size and
    view chunk ride along, as 3dmod writes them, for the reader to skip."""
    out = [b"IMODV1.2", struct.pack(">128s4iI4i6f5ifi i3f", b"model", 630, 630, 184,
                                    len(objects), flags, 1, 1, 0, 255, 0, 0, 0, 1, 1, 1,
                                    0, 0, 0, 3, 128, pixsize, units, 0, 0, 0, 0)]
    for name, obj_flags, contours in objects:
        out.append(b"OBJT" + struct.pack(">64s16IiI2i3fi8B2i", name.encode(), *[0] * 16,
                                         len(contours), obj_flags, 0, 0, 1, 0, 0, 3,
                                         *[1] * 8, 1, 0))
        for pts in contours:
            pts = np.asarray(pts, dtype=">f4").reshape(-1, 3)
            out.append(b"CONT" + struct.pack(">iIii", len(pts), 0, 0, 0) + pts.tobytes())
            out.append(b"SIZE" + struct.pack(">i", 4 * len(pts)) + b"\0" * 4 * len(pts))
        out.append(b"MESH" + struct.pack(">3i2h", 2, 3, 0, 0, 0) + b"\0" * 24
                   + struct.pack(">3i", 0, 1, -1))
        out.append(b"IMAT" + struct.pack(">i", 16) + b"\0" * 16)
    if minx is not None:
        out.append(b"MINX" + struct.pack(">i18f", 72, *np.ravel(minx)))
    out.append(b"VIEW" + struct.pack(">i", 8) + b"\0" * 8 + b"IEOF")
    return b"".join(out)


def test_an_imod_model_its_objects_subset_and_flip(project, tmp_path, capsys):
    """Points stored as 3dmod saves them — pixel edges at 0 in x and y, section centres at
    0 in z, on a subset starting at (7, 5, 3) of a Y/Z-flipped view — land on the
    full-file pixels they stand for, in the same frame as a STAR's rlnCoordinate."""
    run = project.runs()[0]
    frame = run_pixel_frame(project, run, SparsifyConfig())
    px_A = frame.pixel_size_A
    ribo_px = np.array([[30.0, 40.0, 20.0], [61.25, 11.5, 13.0]])  # 0 at a pixel's centre
    apo_px = np.array([[100.0, 200.0, 50.0]])
    start = np.array([7.0, 5.0, 3.0])

    def stored(px):  # the subset's index coordinates, then y and z exchanged
        s = px + np.array([0.5, 0.5, 0.0]) - start
        return s[:, [0, 2, 1]]

    origin = np.array([120.0, -40.0, 35.0])  # otrans: the header origin; ctrans: its subset
    minx = np.stack([np.ones(3), origin, np.zeros(3), np.full(3, px_A),
                     origin - px_A * start, np.zeros(3)])
    model = _imod_model([("Ribosome", SCATTERED, [stored(ribo_px[:1]), stored(ribo_px[1:])]),
                         ("apo ferritin", SCATTERED, [stored(apo_px)]),
                         ("membrane", 0, [stored(apo_px)]), ("", 0, [])],
                        flags=FLIP_YZ | OTRANS_ORIGIN, minx=minx)
    mod = tmp_path / f"{run}.mod"
    mod.write_bytes(model)
    args = [str(mod), "--project", str(project.path), "--user-id", "fay"]
    assert main(args) == 2
    assert "objects 3 (membrane, 1 points) are named after no particle" in capsys.readouterr().err
    assert main([*args, "--imod-object", "3=skip"]) == 0
    fay = CopickProject(project.path, truth_user="fay").read_picks(run)
    assert sorted(k for k, v in fay.items() if len(v)) == ["apo-ferritin", "ribosome"]
    np.testing.assert_allclose(fay["ribosome"], frame.from_px(ribo_px), atol=1e-3)
    np.testing.assert_allclose(fay["apo-ferritin"], frame.from_px(apo_px), atol=1e-3)

    assert main([*args, "--imod-object", "3=thyroglobulin", "--imod-object", "1=skip",
                 "--user-id", "gus"]) == 0
    gus = CopickProject(project.path, truth_user="gus").read_picks(run)
    assert sorted(k for k, v in gus.items() if len(v)) == ["apo-ferritin", "thyroglobulin"]
    for bad, said in [("5=ribosome", "numbers [5] are not objects"),
                      ("3=membrane", "'membrane' is not a particle"), ("x=skip", "give N=NAME")]:
        assert main([*args, "--imod-object", bad, "--user-id", "hal"]) == 2
        assert said in capsys.readouterr().err

    # no MINX: the stored points are the full file's; a stated pixel size must be the frame's
    plain = tmp_path / "picks.mod"
    plain.write_bytes(_imod_model([("ribosome", SCATTERED, [ribo_px + np.array([0.5, 0.5, 0])])],
                                  pixsize=px_A / 10, units=-9))
    assert main([str(plain), "--project", str(project.path), "--user-id", "ivy",
                 "--run", run]) == 0
    np.testing.assert_allclose(CopickProject(project.path, truth_user="ivy")
                               .read_picks(run)["ribosome"], frame.from_px(ribo_px), atol=1e-3)
    plain.write_bytes(_imod_model([("ribosome", SCATTERED, [ribo_px])],
                                  pixsize=2 * px_A / 10, units=-9))
    assert main([str(plain), "--project", str(project.path), "--user-id", "jo",
                 "--run", run]) == 2
    assert f"an image of {2 * px_A:g} Å pixels" in capsys.readouterr().err
    plain.write_bytes(model[:300])
    assert main([str(plain), "--project", str(project.path), "--user-id", "jo",
                 "--run", run]) == 2
    assert f"{plain}: the model ends inside a structure" in capsys.readouterr().err


def test_bad_imod_models_are_refused_naming_the_file(tmp_path):
    """An ASCII model, a truncated one, one with a foreign structure and one with a short
    MINX chunk: each a DataError that names the file; a model that parses reads its objects
    in 3dmod's order."""
    from data_tools.imod_model import read_imod_model

    good = _imod_model([("ribosome", SCATTERED, [np.ones((2, 3))]), ("", 0, [])])
    with_minx = _imod_model([("ribosome", SCATTERED, [np.ones((2, 3))])], minx=np.ones((6, 3)))
    at = with_minx.index(b"MINX")
    cases = {"ascii.mod": (b"imod 1\nmax 10 10 10\n", "save it from 3dmod as binary"),
             "cut.mod": (good[:-40], "ends inside a structure"),
             "odd.mod": (good[:240] + b"\x00\x01ab" + good[240:], "unknown structure"),
             "minx.mod": (with_minx[:at + 4] + struct.pack(">i", 8) + with_minx[at + 8:],
                          "a MINX chunk of 8 bytes")}
    for name, (data, said) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=said) as err:
            read_imod_model(tmp_path / name)
        assert name in str(err.value)
    (tmp_path / "ok.mod").write_bytes(good)
    model = read_imod_model(tmp_path / "ok.mod")
    assert [(o.number, o.name, o.scattered, len(o.points_px)) for o in model.objects] == [
        (1, "ribosome", True, 2), (2, "", False, 0)]
    np.testing.assert_allclose(model.objects[0].points_px, [[0.5, 0.5, 1.0]] * 2)
    assert model.pixel_size_A is None  # units 0: pixels
