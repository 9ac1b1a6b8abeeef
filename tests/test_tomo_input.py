"""Reading the data users have: one simulated run written the ways the data portal and other
labs write tomograms, each read, brought to the working grid and picked like the original."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from data_tools.resample import resample
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from data_tools.sparsify import read_input
from data_tools.sparsify_config import SparsifyConfig
from data_tools.tomo_input import Source, list_sources, plan_source
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.stream import infer_project
from tests.test_copick_io import make_project, write_ome_zarr_v05

WORKING_A = 20.0


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """One small run on which the shipped checkpoint works (weighted F4 0.91, 59 picks):
    (path, run, full-resolution volume, voxel Å)."""
    root = tmp_path_factory.mktemp("orig") / "p"
    project = simulate_project(root, 1, 7, (96, 192, 192),
                               SimRanges(snr=(1.5, 2.0), crowding=(1.5, 1.5)), progress=False)
    run = project.runs()[0]
    tomo = project.read_tomogram(run)
    return root, run, tomo.data, tomo.voxel_size_A


@pytest.fixture(scope="module")
def original_picks(one_run):
    root, _run, _, _ = one_run
    return infer_project(CopickProject(root), DEFAULT_CHECKPOINT, device="cpu")


def _variant(one_run, tmp_path, *, data=None, voxel_A=None, folder_A=10.0,
             tomo_type="denoised", n_levels=3, dtype=np.float32) -> CopickProject:
    """The run's picks with a tomogram written another way (the original removed)."""
    root, run, vol, vs = one_run
    dest = tmp_path / "variant"
    shutil.copytree(root, dest)
    shutil.rmtree(dest / "static" / "ExperimentRuns" / run)
    project = CopickProject(dest)
    project.write_tomogram(run, vol if data is None else data, voxel_A or vs, tomo_type,
                           folder_A, n_levels=n_levels, dtype=dtype)
    return project


def _with_hot_voxels(vol: np.ndarray) -> np.ndarray:
    hot = vol.copy()
    hot[5, 5, 5], hot[-9, 100, 80] = 1e6 * vol.std(), -1e6 * vol.std()
    return hot


def _resampled(vol: np.ndarray, voxel_A: float, new_A: float) -> np.ndarray:
    """An independent resampling (map_coordinates) to make other labs' voxel sizes; voxel 0
    stays centred at 0 Å, as the written level 0 (translation 0) says."""
    ratio = new_A / voxel_A
    src = ndimage.gaussian_filter(vol, max(0.0, (ratio - 1) / 2)) if ratio > 1 else vol
    shape = [int(n * voxel_A / new_A) for n in vol.shape]
    axes = [np.arange(n) * new_A / voxel_A for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    return ndimage.map_coordinates(src, grid, order=1, mode="nearest").astype(np.float32)


def _agreement(a, b, tol_A: float) -> float:
    """Fraction of a's picks with a pick of the same class in b within tol_A."""
    hits = 0
    for (name, exp), g in a.groupby(["particle_type", "experiment"]):
        other = b[(b.particle_type == name) & (b.experiment == exp)][["x", "y", "z"]].to_numpy()
        for p in g[["x", "y", "z"]].to_numpy():
            hits += bool(len(other)) and np.min(np.linalg.norm(other - p, axis=1)) <= tol_A
    return hits / max(len(a), 1)


def _picks(project: CopickProject, **kw):
    return infer_project(project, DEFAULT_CHECKPOINT, device="cpu", **kw)


@pytest.mark.parametrize("case", ["portal folder 10.012", "level 0 only", "bright protein",
                                  "int8", "uint8", "float16", "OME-Zarr 0.5", "hot voxels"])
def test_variants_give_the_same_picks(case, one_run, original_picks, tmp_path):
    _, run, vol, vs = one_run
    z = (vol - vol.mean()) / vol.std()
    kw = {"portal folder 10.012": {"folder_A": 10.012}, "OME-Zarr 0.5": {},
          "level 0 only": {"n_levels": 1},
          "bright protein": {"data": -vol},
          "int8": {"data": z * 20, "dtype": np.int8},
          "uint8": {"data": z * 20 + 128, "dtype": np.uint8},
          "float16": {"data": vol, "dtype": np.float16},
          # two voxels a million sigma out (hot pixels): they owned the whitening's spectrum,
          # and 36 % of a full-size run's picks were found again
          "hot voxels": {"data": _with_hot_voxels(vol)}}[case]
    project = _variant(one_run, tmp_path, **kw)
    if case == "OME-Zarr 0.5":  # rewritten as a zarr v3 group, 5-D, in nanometres
        path = project.tomogram_path(run)
        shutil.rmtree(path)
        write_ome_zarr_v05(path, vol, vs)
    picks = _picks(project)
    agree = _agreement(original_picks, picks, 0.5 * WORKING_A)
    back = _agreement(picks, original_picks, 0.5 * WORKING_A)
    exact = ("portal folder 10.012", "level 0 only", "bright protein", "OME-Zarr 0.5")
    floor = 0.999 if case in exact else 0.9
    assert agree >= floor and back >= floor, (
        f"{case}: {agree:.3f} of the original's picks found again, {back:.3f} the other way "
        f"({len(original_picks)} vs {len(picks)} picks)")


def _displacements(a, b, tol_A: float) -> np.ndarray:
    """b's nearest same-class pick minus a's pick (Å), for a's picks with one within tol_A."""
    out = []
    for (name, exp), g in a.groupby(["particle_type", "experiment"]):
        other = b[(b.particle_type == name) & (b.experiment == exp)][["x", "y", "z"]].to_numpy()
        for p in g[["x", "y", "z"]].to_numpy():
            if len(other):
                d = other[np.argmin(np.linalg.norm(other - p, axis=1))] - p
                if np.linalg.norm(d) <= tol_A:
                    out.append(d)
    return np.array(out).reshape(-1, 3)


def _score(project: CopickProject, picks) -> float:
    from sparse_det.metric import score_tables
    from sparse_det.writers import project_solution, to_submission

    return score_tables(project_solution(project), to_submission(picks),
                        project.particles).score


@pytest.mark.parametrize("new_A, n_levels, how", [
    (13.48, 3, "resample"), (7.84, 3, "resample"),  # 7.84: from its 15.68 Å level
    (7.84, 1, "bin 2, resample"),  # level 0 only: binned by 2 as it is read, then resampled
])
def test_other_voxel_sizes_are_resampled_to_the_working_grid(new_A, n_levels, how, one_run,
                                                             original_picks, tmp_path):
    """Resampled twice (by the lab, then by us) the image differs a little, so picks near a
    threshold come and go; the better-scored half must come back and sit
    where the original's do (no shift: a coordinate error of half a voxel would show here),
    and the score must hold."""
    root, run, vol, vs = one_run
    project = _variant(one_run, tmp_path, data=_resampled(vol, vs, new_A), voxel_A=new_A,
                       folder_A=new_A, n_levels=n_levels)
    tomo, info = read_input(project, run, SparsifyConfig())
    assert info["how"] == how and tomo.voxel_size_A == WORKING_A, info
    assert info["folder_spacing_A"] == pytest.approx(new_A), info
    picks = _picks(project)
    # The better-scored half must come back; low-scored picks near a threshold may not.
    confident = original_picks.nlargest(len(original_picks) // 2, "score")
    d = _displacements(confident, picks, 30.0)
    assert len(d) >= 0.9 * len(confident), f"{len(d)} of {len(confident)} matched"
    assert np.linalg.norm(d.mean(0)) < 0.1 * WORKING_A, f"systematic shift {d.mean(0)} Å"
    within = np.mean(np.linalg.norm(d, axis=1) <= 0.5 * WORKING_A)
    # Measured: 0.88 (13.48 Å) and 0.92 (7.84 Å); the median moves 1.5-2 Å.
    assert within >= 0.85, f"only {within:.2f} of matched picks within half a working voxel"
    orig = _score(CopickProject(root), original_picks)
    # Measured: original 0.909, 13.48 Å 0.884, 7.84 Å 0.857 (two resamplings blur it)
    assert _score(project, picks) >= orig - 0.06, (new_A, _score(project, picks), orig)


def test_type_fallback_and_strict_type(one_run, tmp_path, caplog):
    _, run, _, _ = one_run
    project = _variant(one_run, tmp_path, tomo_type="wbp")
    with caplog.at_level("INFO"):
        _, info = read_input(project, run, SparsifyConfig())
    assert info["type"] == "wbp", info
    assert "no 'denoised' tomogram; using 'wbp'" in caplog.text, caplog.text
    strict = SparsifyConfig(tomogram_type="isonetcorrected", type_fallback=False)
    with pytest.raises(DataError, match=r"tomogram type 'isonetcorrected' not found; the run "
                                        r"has \['wbp'\]"):
        read_input(project, run, strict)


def test_several_spacings_and_an_explicit_folder(one_run, tmp_path):
    _, run, vol, vs = one_run
    project = _variant(one_run, tmp_path)
    project.write_tomogram(run, _resampled(vol, vs, 13.48), 13.48, "denoised", 13.48)
    _, info = read_input(project, run, SparsifyConfig())
    assert info["how"] == "as is" and info["folder_spacing_A"] == 10.0, info
    _, info = read_input(project, run, SparsifyConfig(source_spacing_A=13.48))
    assert info["how"] == "resample" and info["folder_spacing_A"] == 13.48, info
    with pytest.raises(DataError, match=r"no VoxelSpacing7.840 folder; the run has spacings "
                                        r"\[10.0, 13.48\]"):
        read_input(project, run, SparsifyConfig(source_spacing_A=7.84))


def test_plan_rules():
    def src(vs, level=0):
        return Source(10.0, "denoised", level, vs, 0.0, (10, 10, 10))
    assert plan_source([src(10.012), src(20.024, 1)], WORKING_A).how == "as is"
    assert plan_source([src(10.012)], WORKING_A).how == "bin 2"
    assert plan_source([src(5.0)], WORKING_A).how == "bin 4"
    plan = plan_source([src(7.84), src(15.68, 1), src(31.36, 2)], WORKING_A)
    assert plan.how == "resample" and plan.source.level == 1, plan
    assert plan_source([src(40.0)], WORKING_A).how == "resample"
    # within 1 % as is; further off the particles would reach the network off scale
    assert plan_source([src(10.1), src(20.15, 1)], WORKING_A).how == "as is"
    plan = plan_source([src(9.52), src(19.04, 1)], WORKING_A)
    assert plan.how == "resample" and plan.source.level == 1, plan
    # a level up to 10 % coarser is resampled from itself, not from one twice as fine
    plan = plan_source([src(10.48), src(20.96, 1)], WORKING_A)
    assert plan.how == "resample" and plan.source.level == 1, plan
    plan = plan_source([src(11.0), src(22.4, 1)], WORKING_A)
    assert plan.how == "resample" and plan.source.level == 0, plan
    assert plan_source([src(10.15)], WORKING_A).how == "resample"  # 1.5 % off bin 2
    # a level at least twice as fine is binned by the ratio's integer part as it is read
    assert plan_source([src(7.84)], WORKING_A).how == "bin 2, resample"
    plan = plan_source([src(4.7)], WORKING_A)
    assert plan.how == "bin 4, resample" and plan.bin_factor == 4, plan
    assert plan_source([src(13.48)], WORKING_A).bin_factor == 1


def test_thin_slabs_are_picked_and_a_section_is_refused(one_run, original_picks, tmp_path):
    """A slab of 14 sections (7 on the working grid, fewer than the network's three
    stride-2 levels need) is picked: a crash in the neighbour table before. One section, whose
    pyramid the writer now stops at level 0, is refused, naming the array, before any work."""
    _root, run, vol, vs = one_run
    z0 = vol.shape[0] // 2 - 7
    picks = _picks(_variant(one_run, tmp_path / "slab", data=vol[z0:z0 + 14]))
    # the original's picks centred inside the slab, moved to its frame (its voxel 0 at 0 Å)
    inside = original_picks[(original_picks.z > z0 * vs) & (original_picks.z < (z0 + 13) * vs)]
    inside = inside.assign(z=inside.z - z0 * vs)
    found, kept = _agreement(inside, picks, WORKING_A), _agreement(picks, inside, WORKING_A)
    assert len(inside) >= 5 and found >= 0.5 and kept >= 0.5, (
        f"{found:.2f} of the {len(inside)} picks of the whole tomogram inside the slab found "
        f"in it, {kept:.2f} of its {len(picks)} picks among them (within {WORKING_A:g} Å)")
    one = _variant(one_run, tmp_path / "section", data=vol[z0:z0 + 1])
    sources = list_sources(one, run, "denoised")
    assert [s.shape_zyx[0] for s in sources] == [1], sources
    with pytest.raises(DataError, match=r"denoised.zarr/0: 1x192x192 voxels of 10.012 Å span "
                                        r"10 x 1922 x 1922 Å .* at least 2 voxels"):
        plan_source(sources, WORKING_A)


def test_a_tomogram_stored_on_its_side_is_named_once(caplog):
    """Written y, z, x (the calib run so: 111 picks where it has 278, and no word), a
    tomogram is deepest where it should be thinnest; a strip cropped narrower than deep is
    not warned about."""
    def src(shape):
        return Source(10.0, "denoised", 1, WORKING_A, 0.0, shape)
    for _ in range(2):  # planned for its memory, then read: one warning
        plan_source([src((315, 92, 315))], WORKING_A)
    said = [r.getMessage() for r in caplog.records if "thinnest along y, not z" in r.getMessage()]
    assert len(said) == 1 and "315x92x315 voxels" in said[0], said
    caplog.clear()
    plan_source([src((92, 75, 315))], WORKING_A)
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_the_reads_memory_by_hand(monkeypatch):
    """Plan.read_bytes, worked out by hand: blocks of whole chunks read two at a time with
    their binned copies and the chunks zarr decodes for them; a level binned as read and
    then resampled held in memory with the larger of its blocks and its resampling slabs;
    a level resampled as read, its slabs with their copies. peak_bytes takes the larger of
    the read and the picking."""
    from data_tools import resample as resampling
    from data_tools import tomo_input
    from data_tools.peak_memory import (
        PEAK_BASE_BYTES,
        PEAK_BYTES_PER_VOXEL,
        READ_BASE_BYTES,
        peak_bytes,
        read_peak_bytes,
    )

    monkeypatch.setattr(resampling, "resample_threads", lambda: 2)
    monkeypatch.setattr(tomo_input, "read_threads", lambda: 2)
    chunk_bytes = 4 * 256**3
    binned = plan_source([Source(10.0, "wbp", 0, 10.0, 0.0, (368, 1260, 1260),
                                 (64, 128, 128))], WORKING_A)
    assert binned.how == "bin 2" and binned.working_voxels == 184 * 630 * 630
    # blocks of one chunk's 64 sections and 128 rows, full width (10 chunks), binned to 1/8
    block = 64 * 128 * 1260 * 4
    assert binned.read_bytes == 2 * int(block * 9 / 8 + 10 * 4 * 64 * 128 * 128)
    fine = plan_source([Source(7.84, "wbp", 0, 7.84, 0.0, (234, 1608, 1608),
                               (256, 256, 256))], WORKING_A)
    assert fine.how == "bin 2, resample" and fine.working_voxels == 91 * 630 * 630
    # binned 117x804x804 in memory; blocks of the level's 234 sections x 256 rows x 1608 (7
    # chunks); resampled in 32-section slabs: 25 output sections, 25 x 20 / 15.68 + 2
    # binned sections each
    blocks = 2 * int(234 * 256 * 1608 * 4 * 9 / 8 + 7 * chunk_bytes)
    slabs = int(2 * (25 * 20 / 15.68 + 2) * 4 * 804 * 804 * 3)
    assert blocks > slabs
    assert fine.read_bytes == 4 * 117 * 804 * 804 + blocks
    assert read_peak_bytes(fine) == READ_BASE_BYTES + 4 * 91 * 630 * 630 + fine.read_bytes
    picking = PEAK_BASE_BYTES + PEAK_BYTES_PER_VOXEL * fine.working_voxels
    assert peak_bytes(fine) == read_peak_bytes(fine) > picking  # the read is the peak here
    assert peak_bytes(binned) == PEAK_BASE_BYTES + PEAK_BYTES_PER_VOXEL * 184 * 630 * 630
    # resampled as read through chunk rows: a level of 30 sections in 256-section chunks is
    # one row (30 sections) and one slab of them with the Gaussian's reach (1) and the
    # interpolation's neighbour on each side, in 3 copies; each thread's read of a row
    # decodes 10 chunks at once
    thin = plan_source([Source(10.0, "wbp", 0, 13.48, 0.0, (30, 934, 934), (256, 256, 256))],
                       WORKING_A)
    assert thin.how == "resample"
    section = 4 * 934 * 934
    assert thin.read_bytes == (30 + 2 * 2) * section * 3 + 30 * section + 2 * 10 * chunk_bytes


class _Sections:
    """A zarr array that records which z-sections each read asked for."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, []

    def __getitem__(self, key):
        self.reads.append(key[0])
        return self.array[key]


@pytest.mark.parametrize("voxel_A, k", [(13.48, 1), (7.3, 2), (4.7, 4), (21.5, 1)])
def test_resampling_as_it_is_read_equals_resampling_the_whole_level(voxel_A, k, tmp_path,
                                                                   monkeypatch):
    """A level-0-only tomogram brought to the working grid a few sections at a time (each
    slab with the anti-aliasing Gaussian's reach) equals the whole level binned and then
    resampled in memory, and no read asks for more than a slab's sections."""
    from data_tools import zarr_levels
    from data_tools.resample import resample_level
    from data_tools.zarr_levels import bin_mean

    rng = np.random.default_rng(3)
    shape = (int(1100 / voxel_A) + 3, 37, 41)
    vol = ndimage.gaussian_filter(rng.normal(size=shape), 1.0).astype(np.float32)
    project = make_project(tmp_path)
    project.write_tomogram("TS_1", vol, voxel_A, "wbp", voxel_A, n_levels=1, origin_A=12.5)
    level = project.open_level("TS_1", voxel_A, "wbp", 0)
    recorded = _Sections(level.array)
    monkeypatch.setattr(zarr_levels, "SLAB_SECTIONS", 4)
    monkeypatch.setattr(zarr_levels, "SLAB_BYTES", 0)
    out, origin = resample_level(replace(level, array=recorded), k, WORKING_A)
    monkeypatch.setattr(zarr_levels, "SLAB_SECTIONS", 10**6)
    whole, whole_origin = resample(bin_mean(vol, k), voxel_A * k,
                                   12.5 + voxel_A * (k - 1) / 2, WORKING_A)
    assert out.shape == whole.shape and origin == pytest.approx(whole_origin)
    np.testing.assert_allclose(out, whole, atol=1e-6, rtol=0)
    # and both equal an independent resampling: the 3-D Gaussian, then map_coordinates at
    # each working voxel's position in the binned level (same physical edge)
    binned, v_A, o_A = bin_mean(vol, k), voxel_A * k, 12.5 + voxel_A * (k - 1) / 2
    ratio = WORKING_A / v_A
    blurred = ndimage.gaussian_filter(binned, (ratio - 1) / 2, truncate=3.0) if ratio > 1 \
        else binned
    axes = [(whole_origin + np.arange(n) * WORKING_A - o_A) / v_A for n in out.shape]
    ref = ndimage.map_coordinates(blurred, np.meshgrid(*axes, indexing="ij"), order=1,
                                  mode="nearest")
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    # every read a slab of 4 source sections' worth of output, plus the interpolation's
    # neighbour and the Gaussian's reach on each side
    longest = max(r.stop - r.start for r in recorded.reads)
    sigma = max(0.0, (WORKING_A / (voxel_A * k) - 1) / 2)
    assert longest <= k * (max(4 // k, 1) + 3 + 2 * int(3 * sigma + 0.5)), (longest, shape)
    assert len(recorded.reads) > 4 and longest < shape[0] / 4, (recorded.reads, shape)


class _Rows(_Sections):
    """A zarr array with chunks, recording which sections each read asked for."""

    def __init__(self, array):
        super().__init__(array)
        self.chunks = array.chunks


@pytest.mark.parametrize("voxel_A, chunk_z", [(13.48, 8), (13.48, 64), (11.0, 5)])
def test_a_level_resampled_unbinned_reads_each_chunk_row_once(voxel_A, chunk_z, tmp_path):
    """Unbinned and in known chunks, a level is resampled through its chunk rows: each row
    read once, whole, however many slabs reach into it (two threads), and the result is
    exactly that of resampling the whole level in memory."""
    from data_tools.resample import resample_level

    rng = np.random.default_rng(chunk_z)
    vol = ndimage.gaussian_filter(rng.normal(size=(150, 37, 41)), 1.0).astype(np.float32)
    project = make_project(tmp_path)
    project.write_tomogram("TS_1", vol, voxel_A, "wbp", voxel_A, n_levels=1, origin_A=3.0,
                           chunks_zyx=(chunk_z, 16, 16))
    level = project.open_level("TS_1", voxel_A, "wbp", 0)
    recorded = _Rows(level.array)
    out, origin = resample_level(replace(level, array=recorded), 1, WORKING_A, threads=2)
    whole, whole_origin = resample(vol, voxel_A, 3.0, WORKING_A)
    np.testing.assert_array_equal(out, whole)
    assert origin == whole_origin
    reads = sorted((r.start, r.stop) for r in recorded.reads)
    rows = [(z, min(z + chunk_z, 150)) for z in range(0, 150, chunk_z)]
    assert reads == rows, reads


def _twins(tmp_path, write, how: str) -> list:
    """The run read to the working grid (`how` it is reached asserted) from two projects,
    each holding the tomogram `write(project, twin)` wrote, twin False then True."""
    from data_tools.tomo_input import read_working

    got = []
    for twin in (False, True):
        (tmp_path / str(twin)).mkdir()
        project = make_project(tmp_path / str(twin))
        write(project, twin)
        tomo, info = read_working(project, "TS_1", tomo_type="wbp", type_fallback=False,
                                  working_A=WORKING_A)
        assert info["how"] == how, info
        got.append(tomo)
    return got


@pytest.mark.parametrize("voxel_A, how", [(20.0, "as is"), (10.0, "bin 2"),
                                          (13.48, "resample"), (7.3, "bin 2, resample")])
def test_chunks_larger_than_the_level_read_as_small_ones(voxel_A, how, tmp_path):
    """A level stored in chunks larger than itself (256³, as a portal level of 92 sections
    may be) reads on every route to exactly what the same level in small chunks gives."""
    import zarr

    rng = np.random.default_rng(11)
    vol = ndimage.gaussian_filter(rng.normal(size=(90, 70, 60)), 1.0).astype(np.float32)

    def write(project, big):
        path = project.write_tomogram("TS_1", vol, voxel_A, "wbp", voxel_A, n_levels=1,
                                      chunks_zyx=(16, 32, 32))
        if big:  # the same array again, in one chunk larger than the level
            g = zarr.open_group(str(path), mode="r+")
            g.create_array("0", data=vol, chunks=(256, 256, 256), overwrite=True)
        assert project.open_level("TS_1", voxel_A, "wbp").chunks_zyx == (
            (256, 256, 256) if big else (16, 32, 32))

    small, large = _twins(tmp_path, write, how)
    np.testing.assert_array_equal(small.data, large.data)


def test_a_sharded_zarr_v3_level_reads_as_its_unsharded_twin(tmp_path):
    """zarr v3's sharding codec (inner chunks of 8 sections in shards of 32): a level 0 at
    7.3 Å is binned and resampled slab by slab to exactly what the same level unsharded
    gives."""
    rng = np.random.default_rng(5)
    vol = ndimage.gaussian_filter(rng.normal(size=(150, 70, 90)), 1.0).astype(np.float32)

    def write(project, sharded):
        d = project.static_root / "ExperimentRuns/TS_1/VoxelSpacing7.300"
        d.mkdir(parents=True)
        write_ome_zarr_v05(d / "wbp.zarr", vol, 7.3, n_levels=1, sharded=sharded)
        level = project.open_level("TS_1", 7.3, "wbp")
        assert level.array.chunks[2] == (8 if sharded else 32), level.array.chunks
        # the planner knows the chunks the reader decodes, from metadata alone
        assert list_sources(project, "TS_1", "wbp")[0].chunks_zyx == level.array.chunks[2:]

    got = _twins(tmp_path, write, "bin 2, resample")
    np.testing.assert_array_equal(got[0].data, got[1].data)
    assert got[0].data.shape == (54, 25, 32) and got[1].origin_A == got[0].origin_A


@pytest.mark.parametrize("voxel_A, said", [
    (7.3, r"2 NaN/inf voxels in run 'TS_1'$"),
    (13.48, r"2 NaN/inf voxels in run 'TS_1' \(sections 0\.\.39\)$")])
def test_a_nan_in_a_level_read_as_resampled_is_an_error_naming_it(voxel_A, said, tmp_path):
    """Binned as read (7.3 Å) the error counts the whole level's NaN/inf voxels; resampled
    as read (13.48 Å) it stops at the first slab that has any, naming its sections (here
    one slab holds the level)."""
    from data_tools.tomo_input import read_working

    vol = np.zeros((40, 30, 30), np.float32)
    vol[33, 4, 5] = vol[3, 4, 5] = np.nan
    project = make_project(tmp_path)
    path = project.write_tomogram("TS_1", vol, voxel_A, "wbp", voxel_A, n_levels=1)
    with pytest.raises(DataError, match=rf"{path}.*{said}"):
        read_working(project, "TS_1", tomo_type="wbp", type_fallback=False, working_A=20.0)


@pytest.mark.parametrize("voxel, shape_in, shape_out, pos_A", [
    (13.48, (48, 64, 80), (32, 43, 53), (301.0, 455.5, 612.25)),  # shrinking, anti-aliased
    (20.96, (40, 50, 60), (41, 52, 62), (401.0, 655.5, 812.25)),  # 4.8 % coarser: upsampling
])
def test_resample_keeps_physical_positions(voxel, shape_in, shape_out, pos_A):
    """A point-like blob at a known position in Å (z, y, x) stays there after resampling."""
    origin, pos_A = voxel / 2, np.array(pos_A)
    idx = np.indices(shape_in).reshape(3, -1).T * voxel + origin
    blob = np.exp(-np.sum((idx - pos_A) ** 2, axis=1) / (2 * 40.0**2)).reshape(shape_in)
    out, new_origin = resample(blob.astype(np.float32), voxel, origin, WORKING_A)
    assert out.shape == shape_out, out.shape
    peak = np.array(ndimage.center_of_mass(out ** 4))
    np.testing.assert_allclose(peak * WORKING_A + new_origin, pos_A, atol=0.1 * WORKING_A,
                               err_msg="resampling moved the blob")


def test_shard_records_the_input_step(one_run, tmp_path):
    from data_tools.shards import read_shard, write_shard
    from data_tools.sparsify import sparsify_run

    root, run, _, _ = one_run
    sv = sparsify_run(CopickProject(root), run, SparsifyConfig())
    back = read_shard(write_shard(sv, tmp_path))
    assert back.input["polarity"] == "dark" and back.input["how"] == "as is", back.input
    assert json.loads(json.dumps(back.input)) == back.input
    assert Path(back.input["tomogram"]).name == "denoised.zarr"
