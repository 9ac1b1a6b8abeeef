"""The simulator: deterministic, picks at the centre of the density, sign and layout."""

import numpy as np
import pytest

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from data_tools.scene import SHAPE_FAMILIES
from data_tools.shapes import particle_components, random_rotation, render
from data_tools.shapes_alt import particle_components_alt, particle_components_blob
from data_tools.shapes_procedural import particle_components_procedural, procedural_cap
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_run

TABLE = ParticleTable.competition()


# Every shape family as the simulator renders it: its model and its density cap.
FAMILIES = {"first": (particle_components, None), **SHAPE_FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", TABLE.names)
def test_pick_is_centre_of_density(name, family):
    """The density centroid of every class of every shape family, at a random rotation
    and sub-voxel position, is the pick (within 0.15 voxel); each family rendered as the
    simulator renders it (procedural models with their overlaps capped)."""
    model, cap_of = FAMILIES[family]
    rng = np.random.default_rng(3)
    p = TABLE[name]
    for _ in range(3):
        vol = np.zeros((48, 48, 48), np.float32)
        c = np.array([24.0, 24.0, 24.0]) + rng.uniform(-0.5, 0.5, 3)
        comps = model(name, p.radius_A, rng)
        cap = cap_of(comps) if cap_of else None
        render(vol, c, comps, random_rotation(rng), p.radius_A * 1.05, 10.0, cap)
        idx = np.indices(vol.shape).reshape(3, -1).T
        centroid = (idx * vol.reshape(-1, 1)).sum(0) / vol.sum()
        err = np.linalg.norm(centroid - c)
        assert err < 0.15, f"{name}: density centroid {centroid} is {err:.2f} voxel from {c}"


def test_shapes_differ_between_classes():
    """Hollow shells are empty in the middle; solid particles are not."""
    rng = np.random.default_rng(0)
    for name, hollow in [("apo-ferritin", True), ("ribosome", False), ("beta-amylase", False)]:
        vol = np.zeros((40, 40, 40), np.float32)
        render(vol, np.array([20.0, 20, 20]), particle_components(name, TABLE[name].radius_A,
                                                                  rng),
               random_rotation(rng), TABLE[name].radius_A, 10.0)
        centre, peak = vol[19:22, 19:22, 19:22].mean(), vol.max()
        assert (centre < 0.2 * peak) == hollow, f"{name}: centre {centre:.2f}, peak {peak:.2f}"


def test_deterministic_for_a_seed():
    shape = (40, 96, 96)
    ranges = SimRanges(crowding=(3, 3))
    a = simulate_run("r", shape, TABLE, ranges, [5, 0])
    b = simulate_run("r", shape, TABLE, ranges, [5, 0])
    c = simulate_run("r", shape, TABLE, ranges, [6, 0])
    np.testing.assert_array_equal(a[0], b[0], err_msg="same seed gave a different tomogram")
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=f"{k} picks differ")
    assert a[2] == b[2], "drawn parameters differ"
    assert not np.array_equal(a[0], c[0]), "another seed gave the same tomogram"


def test_project_layout_and_protein_is_dark(small_project):
    proj = CopickProject(small_project.path)
    assert len(proj.runs()) == 2, proj.runs()
    for f in ("copick_config.json", "solution.csv", "simulation.json"):
        assert (small_project.path / f).is_file(), f"{f} missing"
    run = proj.runs()[0]
    t = proj.read_tomogram(run)
    picks = proj.read_picks(run)
    counts = {k: len(v) for k, v in picks.items()}
    assert all(n > 0 for n in counts.values()), f"a class is missing at crowding 3: {counts}"
    # Robust z-score: the mean within 0.6 radius of solid particles must sit below the median
    # (dark protein).
    vol = t.data
    med, mad = np.median(vol), np.median(np.abs(vol - np.median(vol)))
    grid = np.indices(vol.shape).reshape(3, -1).T
    for name in ("ribosome", "thyroglobulin", "beta-galactosidase"):
        r = 0.6 * TABLE[name].radius_A / t.voxel_size_A
        vals = []
        for c in xyz_A_to_zyx_vox(picks[name], t.voxel_size_A):
            lo, hi = np.floor(c - r).astype(int), np.ceil(c + r).astype(int) + 1
            box = grid[np.all((grid >= np.maximum(lo, 0)) & (grid < hi), axis=1)]
            box = box[np.linalg.norm(box - c, axis=1) <= r]
            vals.append((vol[tuple(box.T)].mean() - med) / mad)
        assert np.median(vals) < -1.0, f"{name} particles not darker than ice: {vals}"


def test_a_second_call_adds_runs_and_keeps_the_records(tmp_path):
    """Two simulate calls into one project (another seed and prefix): solution.csv holds
    every run's picks, simulation.json every run's parameters and both calls' settings."""
    import json

    import pandas as pd

    from data_tools.simulate import simulate_project

    out = tmp_path / "p"
    simulate_project(out, 1, 1, (32, 64, 64), progress=False)
    simulate_project(out, 1, 2, (32, 64, 64), run_prefix="TS_b", progress=False)
    sol = pd.read_csv(out / "solution.csv")
    assert sorted(sol["experiment"].unique()) == ["TS_b_2_000", "TS_sim_1_000"]
    assert sol["id"].tolist() == list(range(len(sol)))
    proj = CopickProject(out)
    assert len(sol) == sum(len(v) for r in proj.runs() for v in proj.read_picks(r).values())
    rec = json.loads((out / "simulation.json").read_text())
    assert sorted(rec["runs"]) == ["TS_b_2_000", "TS_sim_1_000"]
    assert [b["seed"] for b in rec["batches"]] == [1, 2] and rec["seed"] == 2


def test_reversed_or_malformed_ranges_are_refused_before_anything_is_written(tmp_path):
    """A range with low above high used to crash deep in the first run's draw; now the
    simulator and its CLI refuse it naming the field, and nothing is written."""
    import json

    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import main

    with pytest.raises(ValueError, match=r"snr \[3.0, 1.0\]"):
        SimRanges(snr=(3.0, 1.0))
    with pytest.raises(ValueError, match="gold"):
        SimRanges.from_dict({"gold": [1, 2, 3]})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bfactor_A2": [900, 100]}))
    assert main(["--out", str(tmp_path / "p"), "--ranges", str(bad)]) == 2
    assert main(["--out", str(tmp_path / "p"), "--snr", "2", "1"]) == 2
    assert not (tmp_path / "p").exists()


def test_the_ice_slab_does_not_set_the_noise_without_a_wedge():
    """Without a missing wedge (tilt range near 90°, the look of wedge-filled tomograms) the
    flat ice slab is imaged too; the noise must still be the one the particles alone get,
    as it is with a wedge (which removes the slab). The slab's image varies along z only,
    so with each z-plane's mean removed the two tomograms are the same up to scale. When
    the slab set the noise, the particles drowned (F4 0.868 -> 0.628 on 4 paired runs)."""
    from data_tools.sim_ranges import draw_run_params
    from data_tools.simulate import image

    shape = (40, 64, 64)
    rng = np.random.default_rng(2)
    p = draw_run_params(SimRanges(snr=(1.0, 1.0), tilt_max_deg=(90, 90),
                                  contrast_offset=(0, 0), contrast_scale_log10=(0, 0)), rng)
    particles = np.zeros(shape, np.float32)
    for c in ([20.0, 20, 20], [18.0, 40, 44], [24.0, 30, 12]):
        render(particles, np.array(c), particle_components("ribosome", 150.0, rng),
               random_rotation(rng), 160.0, 10.0)
    slab = np.zeros(shape, np.float32)
    slab[8:32] = 2.2
    a = image(particles, p, 10.0, np.random.default_rng(5))
    b = image(particles + slab, p, 10.0, np.random.default_rng(5))
    a, b = (v - v.mean(axis=(1, 2), keepdims=True) for v in (a, b))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9999


def test_second_shape_family_keeps_the_rest_of_the_run():
    """Particles of the second family, the third and the procedural models sit where the
    same seed puts the first family's, with the same physics; each share is drawn from its
    own stream."""
    shape = (40, 96, 96)
    a = simulate_run("r", shape, TABLE, SimRanges(crowding=(2, 2)), [5, 0])
    b = simulate_run("r", shape, TABLE, SimRanges(crowding=(2, 2), alt_shape_share=(1, 1)),
                     [5, 0])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=f"{k} picks moved")
    assert b[2]["alt_shape_share"] == 1.0
    assert {k: v for k, v in b[2].items() if not k.startswith("alt_shape")} == a[2]
    assert not np.allclose(a[0], b[0])
    c = simulate_run("r", shape, TABLE, SimRanges(crowding=(2, 2), blob_shape_share=(1, 1)),
                     [5, 0])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], c[1][k], err_msg=f"{k} picks moved")
    assert not np.allclose(b[0], c[0])
    d = simulate_run("r", shape, TABLE,
                     SimRanges(crowding=(2, 2), procedural_shape_share=(1, 1)), [5, 0])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], d[1][k], err_msg=f"{k} picks moved")
    assert {k: v for k, v in d[2].items() if not k.startswith("procedural_shape")} == a[2]
    assert not np.allclose(a[0], d[0]) and not np.allclose(c[0], d[0])
    e = simulate_run("r", shape, TABLE,
                     SimRanges(crowding=(2, 2), compact_procedural_shape_share=(1, 1)), [5, 0])
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], e[1][k], err_msg=f"{k} picks moved")
    assert not np.allclose(d[0], e[0])


def test_second_family_differs_but_keeps_size_and_hollowness():
    """Each class's two models differ voxel by voxel, yet have similar radii of gyration
    (within 20 %), and the hollow classes stay hollow."""
    rng = np.random.default_rng(1)
    for name in TABLE.names:
        r = TABLE[name].radius_A
        vols = []
        for family in (particle_components, particle_components_alt):
            vol = np.zeros((48, 48, 48), np.float32)
            render(vol, np.array([24.0, 24, 24]), family(name, r, rng),
                   random_rotation(np.random.default_rng(0)), r * 1.05, 10.0)
            vols.append(vol)
        idx = np.indices(vols[0].shape).reshape(3, -1).T - 24.0
        rg = [np.sqrt((v.reshape(-1) * (idx**2).sum(1)).sum() / v.sum()) for v in vols]
        assert abs(rg[1] / rg[0] - 1) < 0.2, (name, rg)
        corr = np.corrcoef(vols[0].ravel(), vols[1].ravel())[0, 1]
        assert corr < 0.95, (name, corr)
        if name in ("apo-ferritin", "virus-like-particle"):
            centre = vols[1][22:27, 22:27, 22:27].mean()
            assert centre < 0.35 * vols[1].max(), (name, centre)


def test_third_family_keeps_only_size_and_mass():
    """The lumps of the third family weigh what the first family's models weigh (within
    25 %) and spread as far (radius of gyration within 25 %)."""
    rng = np.random.default_rng(4)
    for name in TABLE.names:
        r = TABLE[name].radius_A
        stats = []
        for family in (particle_components, particle_components_blob):
            rg, mass = [], []
            for _ in range(4):
                vol = np.zeros((48, 48, 48), np.float32)
                render(vol, np.array([24.0, 24, 24]), family(name, r, rng),
                       random_rotation(rng), r * 1.05, 10.0)
                idx = np.indices(vol.shape).reshape(3, -1).T - 24.0
                rg.append(np.sqrt((vol.reshape(-1) * (idx**2).sum(1)).sum() / vol.sum()))
                mass.append(vol.sum())
            stats.append((np.mean(rg), np.mean(mass)))
        (rg0, m0), (rg1, m1) = stats
        assert abs(m1 / m0 - 1) < 0.25, (name, m0, m1)
        assert abs(rg1 / rg0 - 1) < 0.25, (name, rg0, rg1)


def _render_procedural(name: str, rng, rotation=None, size: int = 48,
                       compact: bool = False) -> np.ndarray:
    r = TABLE[name].radius_A
    comps = particle_components_procedural(name, r, rng, compact=compact)
    vol = np.zeros((size,) * 3, np.float32)
    render(vol, np.full(3, size / 2), comps,
           rotation if rotation is not None else random_rotation(rng), r * 1.05, 10.0,
           procedural_cap(comps))
    return vol


def test_procedural_models_keep_the_class_and_change_the_rest():
    """Every procedural model of a class is new (two draws correlate < 0.9 at the same
    rotation), yet weighs what the first family weighs (within 35 %) and spreads as far
    (within 30 %), the hollow classes are hollow, and the same generator seed gives the
    same model."""
    from scipy.spatial.transform import Rotation

    idx = np.indices((48, 48, 48)).reshape(3, -1).T - 24.0
    for name in TABLE.names:
        r = TABLE[name].radius_A
        first = np.zeros((48, 48, 48), np.float32)
        render(first, np.full(3, 24.0), particle_components(name, r, np.random.default_rng(0)),
               Rotation.identity(), r * 1.05, 10.0)
        rg0 = np.sqrt((first.reshape(-1) * (idx**2).sum(1)).sum() / first.sum())
        vols = [_render_procedural(name, np.random.default_rng(s), Rotation.identity())
                for s in range(4)]
        for v in vols:
            rg = np.sqrt((v.reshape(-1) * (idx**2).sum(1)).sum() / v.sum())
            assert abs(v.sum() / first.sum() - 1) < 0.35, (name, v.sum(), first.sum())
            assert abs(rg / rg0 - 1) < 0.3, (name, rg, rg0)
            if name in ("apo-ferritin", "virus-like-particle"):
                assert v[22:27, 22:27, 22:27].mean() < 0.35 * v.max(), name
        corr = np.corrcoef(vols[0].ravel(), vols[1].ravel())[0, 1]
        assert corr < 0.9, (name, corr)
        again = _render_procedural(name, np.random.default_rng(0), Rotation.identity())
        np.testing.assert_array_equal(vols[0], again)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize(("name", "turns"), [
    ("beta-galactosidase", [("z", 180), ("x", 180)]),  # D2
    ("thyroglobulin", [("z", 180)]),  # C2
    ("apo-ferritin", [("z", 90), ("x", 90)]),  # octahedral
])
def test_procedural_models_have_the_class_symmetry(name, turns, compact):
    """A procedural model is the same after its class's symmetry operations (correlation
    > 0.97 with itself turned), and not after a turn outside the group (< 0.95): it is
    one asymmetric unit repeated by the point group, not a symmetric-looking blob. The
    compact variant's squeeze keeps the group."""
    from scipy.spatial.transform import Rotation

    for seed in range(2):
        ref = _render_procedural(name, np.random.default_rng(seed), Rotation.identity(),
                                 compact=compact)
        for axis, deg in turns:
            # render's frame is z,y,x; the group's axes are the components' first..third.
            turned = _render_procedural(name, np.random.default_rng(seed),
                                        Rotation.from_euler(axis, deg, degrees=True),
                                        compact=compact)
            assert np.corrcoef(ref.ravel(), turned.ravel())[0, 1] > 0.97, (name, axis)
        off = _render_procedural(name, np.random.default_rng(seed),
                                 Rotation.from_euler("xyz", [37, 23, 61], degrees=True),
                                 compact=compact)
        assert np.corrcoef(ref.ravel(), off.ravel())[0, 1] < 0.95, name


def _rendered_elongation(vol: np.ndarray) -> float:
    w = vol.reshape(-1)
    idx = np.indices(vol.shape).reshape(3, -1).T.astype(float)
    d = idx - (idx * w[:, None]).sum(0) / w.sum()
    var = np.linalg.eigvalsh((d * w[:, None]).T @ d / w.sum())
    return float(np.sqrt(var[-1] / var[0]))


def test_compact_procedural_models_keep_real_elongation():
    """Compact models, as rendered, stay within their class's largest elongation (+0.15
    for the density cap and the grid), where plain draws go well beyond it; a plain draw
    already within the bound is left exactly as it was."""
    from scipy.spatial.transform import Rotation

    from data_tools.shapes_procedural import PLANS, elongation

    for name in ("ribosome", "beta-galactosidase", "thyroglobulin"):
        bound = PLANS[name].max_elongation
        plain, compact = [], []
        for s in range(12):
            plain.append(_rendered_elongation(_render_procedural(
                name, np.random.default_rng(s), Rotation.identity(), size=64)))
            compact.append(_rendered_elongation(_render_procedural(
                name, np.random.default_rng(s), Rotation.identity(), size=64, compact=True)))
        assert max(compact) < bound + 0.15, (name, compact)
        assert max(plain) > bound + 0.3, (name, plain)
    r = TABLE["beta-galactosidase"].radius_A
    for s in range(20):
        comps = particle_components_procedural("beta-galactosidase", r,
                                               np.random.default_rng(s))
        if elongation(comps) < PLANS["beta-galactosidase"].max_elongation - 0.05:
            a = _render_procedural("beta-galactosidase", np.random.default_rng(s),
                                   Rotation.identity())
            b = _render_procedural("beta-galactosidase", np.random.default_rng(s),
                                   Rotation.identity(), compact=True)
            np.testing.assert_allclose(a, b, atol=1e-4 * a.max())
            break
    else:
        raise AssertionError("no plain beta-galactosidase draw within the bound in 20 seeds")


def _same_params(a: dict, b: dict) -> None:
    """Every drawn number of one run equals the other's; seeds of own streams aside."""
    for key, v in a.items():
        if key.endswith("_seed") or key in ("rotation_seed", "hard_negatives"):
            continue
        if isinstance(v, dict):
            _same_params(v, b[key])
        elif isinstance(v, float):
            assert b[key] == pytest.approx(v, rel=1e-9, abs=1e-12), key
        else:
            assert b[key] == v, key


@pytest.mark.parametrize("physics", ["fast", "tilt"])
def test_runs_like_a_run_draw_its_parameters(tmp_path, physics):
    """Runs simulated --like a recorded run: every parameter as it was drawn (the axis
    error's size, the hard negatives' counts, a shape share, the adsorbed share), other
    placements; an unknown run is refused by name."""
    import json

    from data_tools.particles import DataError
    from data_tools.sim_records import like_run
    from data_tools.simulate import main, simulate_project
    from data_tools.tilt_ranges import TiltRanges

    ranges = SimRanges(carbon_edges=(1, 2), contamination=(1, 3),
                       procedural_shape_share=(0.2, 0.6), interface_share=(0.5, 0.9))
    tilt = TiltRanges(axis_error_deg=(0.5, 1.5), sirt_iterations=(2, 6), halves=True,
                      scheme="bidirectional", dose_weighting=True)
    simulate_project(tmp_path / "src", 2, 11, (32, 64, 64), ranges, progress=False,
                     physics=physics, tilt=tilt)
    src = json.loads((tmp_path / "src" / "simulation.json").read_text())
    run = "TS_sim_11_001"
    assert main(["--out", str(tmp_path / "like"), "--runs", "1", "--seed", "12",
                 "--like", str(tmp_path / "src"), run, "--quiet"]) == 0
    like = json.loads((tmp_path / "like" / "simulation.json").read_text())
    assert like["physics"] == physics and like["shape_zyx"] == [32, 64, 64]
    want, got = src["runs"][run], like["runs"]["TS_sim_12_000"]
    _same_params(want, got)
    assert 0.5 <= got["interface_share"] <= 0.9
    for kind in ("carbon", "contamination"):
        assert len(got["hard_negatives"][kind]) == len(want["hard_negatives"][kind])
    assert got["hard_negatives"] != want["hard_negatives"]  # its own geometry
    if physics == "tilt":
        assert abs(got["tilt"]["axis_error_deg"]) == pytest.approx(
            abs(want["tilt"]["axis_error_deg"]))
        # halves are kept (the raw reconstruction is `sirt` here), with noise of their own
        types = CopickProject(tmp_path / "like").tomogram_types("TS_sim_12_000", 20.024)
        assert {"sirt-even", "sirt-odd"} <= set(types), types
        assert got["tilt"]["halves_seed"] != want["tilt"]["halves_seed"]
    picks = [CopickProject(tmp_path / p).read_picks(r)["ribosome"]
             for p, r in (("src", run), ("like", "TS_sim_12_000"))]
    assert len(picks[0]) != len(picks[1]) or not np.allclose(picks[0], picks[1])
    with pytest.raises(DataError, match="TS_nope"):
        like_run(tmp_path / "src", "TS_nope")


def test_class_mass_factors_scale_each_class_and_keep_the_rest_of_the_run():
    """SimRanges.class_mass_log2 draws one density factor per class from its own stream
    (deterministic for a seed, inside the range): the run's other parameters, its picks and
    its distractors stay the seed's, and each class's particles carry exactly its factor
    times the density they had (measured on the rendered density, one class at a time)."""
    from data_tools.scene import render_scene
    from data_tools.sim_ranges import draw_run_params

    seed, shape = [7, 0], (40, 96, 96)
    plain = draw_run_params(SimRanges(crowding=(2, 2)), np.random.default_rng(seed), seed)
    ranges = SimRanges(crowding=(2, 2), class_mass_log2=(-1.0, 0.3))
    p = draw_run_params(ranges, np.random.default_rng(seed), seed)
    assert p == draw_run_params(ranges, np.random.default_rng(seed), seed)
    factors = p.pop("class_mass_scale")
    assert p == plain
    assert set(factors) >= set(TABLE.names)
    assert all(2**-1.0 <= k <= 2**0.3 for k in factors.values())
    assert len({round(k, 6) for k in factors.values()}) == len(factors)

    def particle_mass(params: dict, name: str) -> tuple[float, dict]:
        one = ParticleTable([TABLE[name]])
        rng = np.random.default_rng(seed)
        draw_run_params(SimRanges(crowding=(2, 2)), rng, seed)  # the same stream position
        density, picks, _ = render_scene(shape, one, {**params, "membranes": 0, "gold": 0,
                                                      "distractors_per_particle": 0.0}, rng)
        return float((density - density.min(axis=(1, 2), keepdims=True)).sum()), picks

    for name in ("apo-ferritin", "ribosome"):
        m0, picks0 = particle_mass(plain, name)
        m1, picks1 = particle_mass({**plain, "class_mass_scale": factors}, name)
        assert len(picks0[name]) > 0
        np.testing.assert_array_equal(np.array(picks0[name]), np.array(picks1[name]))
        assert m1 / m0 == pytest.approx(factors[name], rel=1e-3)


def test_adsorbed_proteins_touch_the_slab_surfaces_and_keep_the_rest_of_the_run():
    """SimRanges.interface_share is drawn from its own stream (deterministic; the run's other
    parameters stay the seed's); at share 1 every particle's centre lies 0.8-1 of its radius
    inside one of the ice slab's two surfaces, both surfaces used; place_objects keeps the
    y, x draws of the same objects placed anywhere in the slab."""
    from data_tools.scene import place_objects, render_scene
    from data_tools.sim_ranges import draw_run_params

    seed, shape, voxel_A = [7, 0], (64, 128, 128), 10.0
    plain = draw_run_params(SimRanges(), np.random.default_rng(seed), seed)
    ranges = SimRanges(interface_share=(0.5, 0.9))
    p = draw_run_params(ranges, np.random.default_rng(seed), seed)
    assert p == draw_run_params(ranges, np.random.default_rng(seed), seed)
    share = p.pop("interface_share")
    p.pop("interface_seed")
    assert p == plain and 0.5 <= share <= 0.9

    ranges = SimRanges(interface_share=(1.0, 1.0), ice_fraction=(0.7, 0.7), crowding=(3, 3))
    rng = np.random.default_rng(seed)
    p = draw_run_params(ranges, rng, seed) | {"gold": 0, "membranes": 0}
    state = rng.bit_generator.state
    z0 = rng.uniform(0, shape[0] - 0.7 * shape[0])  # render_scene's first draw: the slab
    rng.bit_generator.state = state
    z1 = z0 + 0.7 * shape[0]
    _, picks, _ = render_scene(shape, TABLE, p, rng, voxel_A)
    sides = []
    for name, centres in picks.items():
        r_vox = TABLE[name].radius_A * 1.05 / voxel_A  # the bound radius placement uses
        for z in np.array(centres).reshape(-1, 3)[:, 0]:
            low, high = (z - z0) / r_vox, (z1 - z) / r_vox
            assert 0.8 - 1e-9 <= min(low, high) <= 1.0 + 1e-9, (name, z, z0, z1)
            sides.append(low < high)
    assert len(sides) > 10 and 0 < sum(sides) < len(sides)

    radii = np.array([60.0, 90.0, 130.0, 150.0, 60.0, 90.0])
    surface = np.array([-1, 1, -1, 1, 0, 0])
    args = (radii, (92, 2000, 2000), (10.0, 70.0), 20.0)
    anywhere = place_objects(*args, np.random.default_rng(3))
    placed = place_objects(*args, np.random.default_rng(3), surface=surface,
                           surface_rng=np.random.default_rng(4))
    np.testing.assert_array_equal(placed[:, 1:], anywhere[:, 1:])
    np.testing.assert_array_equal(placed[4:], anywhere[4:])


def test_proteasome_a_complex_beyond_the_competition(tmp_path):
    """The proteasome (a class no checkpoint learnt: tests/test_particle_classes.py,
    bench/new_complex.py): centred on its pick, a hollow barrel longer than it is wide,
    drawn in a run that lists it, whatever share of the other shape families the run
    draws (they model the competition's classes only), and named when unknown."""
    from data_tools.particles import DataError
    from data_tools.simulate import simulate_project

    table = ParticleTable.competition(["proteasome"])
    assert table.names[-1] == "proteasome" and table.class_index("proteasome") == 7
    p, rng = table["proteasome"], np.random.default_rng(4)
    for _ in range(3):
        vol = np.zeros((48, 48, 48), np.float32)
        c = np.array([24.0, 24.0, 24.0]) + rng.uniform(-0.5, 0.5, 3)
        render(vol, c, particle_components("proteasome", p.radius_A, rng),
               random_rotation(rng), p.radius_A * 1.05, 10.0)
        centroid = (np.indices(vol.shape).reshape(3, -1).T * vol.reshape(-1, 1)).sum(0)
        assert np.linalg.norm(centroid / vol.sum() - c) < 0.15
    # Unrotated at 5 Å: the barrel's axis is the volume's last; its channel is empty.
    from scipy.spatial.transform import Rotation

    vol = np.zeros((40, 40, 40), np.float32)
    render(vol, np.array([20.0, 20, 20]), particle_components("proteasome", p.radius_A, rng),
           Rotation.identity(), p.radius_A * 1.05, 5.0)
    assert vol[19:22, 19:22, 19:22].mean() < 0.1 * vol.max()
    extent = [np.ptp(np.nonzero(vol.sum(axis=tuple(j for j in range(3) if j != i)) > 1)[0])
              for i in range(3)]
    assert extent[2] > 1.2 * max(extent[:2]), extent
    ranges = SimRanges(crowding=(3, 3), procedural_shape_share=(1.0, 1.0))
    project = simulate_project(tmp_path / "p", 1, 5, (40, 192, 192), ranges, progress=False,
                               extra_particles=("proteasome",))
    assert "proteasome" in CopickProject(project.path).particles
    assert len(project.read_picks(project.runs()[0])["proteasome"]) > 0
    with pytest.raises(DataError, match=r"no particle \['nope'\] to add"):
        ParticleTable.competition(["nope"])
    # Runs drawn like one of its runs draw its complexes too.
    from data_tools.simulate import main

    assert main(["--out", str(tmp_path / "like"), "--runs", "1", "--seed", "9", "--like",
                 str(project.path), project.runs()[0], "--quiet"]) == 0
    like = CopickProject(tmp_path / "like")
    assert like.particles.names == table.names
    assert len(like.read_picks(like.runs()[0])["proteasome"]) > 0
    assert main(["--out", str(tmp_path / "bad"), "--extra-particles", "nope", "--quiet"]) == 2


@pytest.mark.parametrize("flags, said", [
    (["--runs", "0"], "argument --runs: 0: at least 1"),
    (["--shape", "0", "100", "100"], "argument --shape: 0: at least 4"),
])
def test_counts_and_shapes_that_make_nothing_are_refused(flags, said, tmp_path, capsys):
    """0 runs had written an empty project with exit 0, a 0-section shape a traceback and a
    half-made folder."""
    from data_tools.simulate import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "p"), *flags])
    assert exit_.value.code == 2 and said in capsys.readouterr().err, said
    assert not (tmp_path / "p").exists()
