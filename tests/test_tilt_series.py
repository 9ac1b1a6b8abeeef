"""The tilt-series image formation: particles reconstructed where their picks say, the
missing wedge where the tilt range says, and the same tomogram for the same seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.particles import ParticleTable
from data_tools.sim_ranges import SimRanges
from data_tools.simulate import BIN2_ORIGIN_A, VOXEL_SIZE_A, simulate_project, simulate_tilt_run
from data_tools.tilt_ranges import SCHEMES, TiltRanges
from data_tools.tilt_series import (
    acquisition_angles,
    dose_index,
    dose_symmetric_angles,
    exposure_filter,
    reconstruct,
    reconstruct_with_halves,
    shared_translation,
)

QUIET = SimRanges(snr=(1e6, 1e6), crowding=(0.4, 0.4), distractors_per_particle=(0.0, 0.0),
                  membranes=(0, 0), gold=(0, 0), tilt_max_deg=(60.0, 60.0),
                  contrast_scale_log10=(0.0, 0.0), contrast_offset=(0.0, 0.0))
STILL = TiltRanges(align_sigma_vox=(0.0, 0.0), defocus_err_um=(0.0, 0.0))


def test_dose_symmetric_order():
    np.testing.assert_allclose(dose_symmetric_angles(9, 3), [0, 3, -3, 6, -6, 9, -9])


def test_bidirectional_order_is_recorded_and_leaves_the_draws():
    np.testing.assert_allclose(acquisition_angles(9, 3, "bidirectional"),
                               [0, 3, 6, 9, -3, -6, -9])
    np.testing.assert_allclose(acquisition_angles(9, 3), dose_symmetric_angles(9, 3))
    with pytest.raises(ValueError, match="scheme"):
        TiltRanges(scheme="spiral")
    plain = TiltRanges().draw(np.random.default_rng(1))
    bidir = TiltRanges(scheme="bidirectional").draw(np.random.default_rng(1))
    assert "scheme" not in plain and bidir.pop("scheme") == "bidirectional"
    assert bidir == plain


def test_a_bidirectional_twin_is_the_same_series_with_other_doses():
    """The order changes each tilt's dose and nothing else: its per-tilt draws (noise, focus
    drift, alignment residual) stay with its angle, so without dose damage the
    bidirectional twin is the dose-symmetric reconstruction bit for bit, and with it they
    differ."""
    p, t = {"tilt_max_deg": 9.0}, {"step_deg": 3.0, "scheme": "bidirectional"}
    # series_angles 0, 3, -3, 6, -6, 9, -9 were taken 0th, 1st, 4th, 2nd, 5th, 3rd, 6th
    np.testing.assert_array_equal(dose_index(p, t), [0, 1, 4, 2, 5, 3, 6])
    np.testing.assert_array_equal(dose_index(p, {"step_deg": 3.0}), np.arange(7))
    ranges = replace(QUIET, snr=(0.5, 0.5))
    vols = {}
    for dose_B in (0.0, 20.0):
        for scheme in SCHEMES:
            tilt = replace(TiltRanges(), dose_bfactor_A2=(dose_B, dose_B), scheme=scheme,
                           denoisers=("none",))
            vols[dose_B, scheme] = simulate_tilt_run("x", (32, 64, 64),
                                                     ParticleTable.competition(), ranges,
                                                     tilt, [5, 0])[0]["wbp"]
    np.testing.assert_array_equal(vols[0.0, SCHEMES[0]], vols[0.0, SCHEMES[1]])
    assert not np.array_equal(vols[20.0, SCHEMES[0]], vols[20.0, SCHEMES[1]])


def _sector_log_ratio(vol: np.ndarray) -> float:
    """ln of the high-frequency power in the (kz, kx) sections of the negative tilts over
    the positive ones' (a tilt θ's section is the line at -θ; 15-55° either side, 0.2-0.5
    cycles per voxel), summed over y."""
    power = (np.abs(np.fft.fftshift(np.fft.fftn(vol - vol.mean()))) ** 2).sum(axis=1)
    Z, X = power.shape
    kz, kx = np.meshgrid((np.arange(Z) - Z // 2) / Z, (np.arange(X) - X // 2) / X,
                         indexing="ij")
    phi = (np.degrees(np.arctan2(kz, kx)) + 90) % 180 - 90
    band = (np.hypot(kz, kx) > 0.2) & (np.hypot(kz, kx) < 0.5)
    negative = power[band & (phi > 15) & (phi < 55)].sum()
    positive = power[band & (phi < -15) & (phi > -55)].sum()
    return float(np.log(negative / positive))


def test_bidirectional_series_damps_the_half_taken_last():
    """Taken bidirectionally (0 up to +60°, then down to -60°), the negative tilts come with
    the positive ones' dose: their sections of the reconstruction lose high frequencies
    that the dose-symmetric order of the same scene keeps."""
    ranges = replace(QUIET, crowding=(1.5, 1.5), bfactor_A2=(50.0, 50.0))
    ratios = {}
    for scheme in ("dose_symmetric", "bidirectional"):
        tilt = replace(STILL, dose_bfactor_A2=(200.0, 200.0), step_deg=(3.0, 3.0),
                       denoisers=("none",), scheme=scheme)
        vols, _, params = simulate_tilt_run("x", (64, 128, 128), ParticleTable.competition(),
                                            ranges, tilt, [5, 0])
        assert params["tilt"].get("scheme", "dose_symmetric") == scheme
        ratios[scheme] = _sector_log_ratio(np.asarray(vols["wbp"], np.float64))
    assert ratios["bidirectional"] < ratios["dose_symmetric"] - 0.3, ratios


def test_dose_weighting_is_recorded_and_leaves_the_draws():
    plain = TiltRanges().draw(np.random.default_rng(1))
    weighted = TiltRanges(dose_weighting=True).draw(np.random.default_rng(1))
    assert "dose_weighting" not in plain and weighted.pop("dose_weighting") is True
    assert weighted == plain
    t = {"dose_bfactor_A2": 20.0, "dose_weighting": True}
    w = exposure_filter((8, 8), 20.0, 10, t)  # rfft grid: ky 0, 1/160, ..; kx 0..1/40 Å⁻¹
    assert w[0, 0] == 1.0
    # 10 tilts of 20 Å² at |k| = 1/40 Å⁻¹: exp(-200 / 1600 / 4)
    assert w[0, 4] == pytest.approx(np.exp(-200 / 1600 / 4), rel=1e-6)
    assert exposure_filter((8, 8), 20.0, 10, {"dose_bfactor_A2": 20.0}) == 1.0


def test_dose_weighting_raises_the_high_frequency_snr_at_the_same_dose():
    """Weighing each tilt by its exposure (a matched filter over the tilts) keeps the
    dose — the same noise per tilt — and raises the signal-to-noise ratio where the late
    tilts' signal is damaged, leaving the low frequencies as they were. Signal and noise
    separated by reconstructing at two noise scales with the same draws."""
    from scipy import ndimage

    from data_tools.spectrum import shell_amplitude

    density = ndimage.gaussian_filter(
        np.random.default_rng(0).standard_normal((48, 32, 96)), 1.0).astype(np.float32)
    p = {"tilt_max_deg": 60, "defocus_um": 2.0, "bfactor_A2": 0.0, "ice_fraction": 0.3,
         "snr": 1.0}
    t = TiltRanges(dose_bfactor_A2=(200.0, 200.0), step_deg=(3.0, 3.0)).draw(
        np.random.default_rng(3))
    snr, sigmas = {}, {}
    for weighting in (False, True):
        tw = t | {"dose_weighting": weighting}
        sigmas[weighting] = reconstruct_with_halves(density, 20.0, p, tw,
                                                    np.random.default_rng(5))[2]
        v1, v2 = (reconstruct_with_halves(density, 20.0, p, tw, np.random.default_rng(5),
                                          noise_sigma=sigmas[False] / k)[0]
                  for k in (1.0, 2.0))
        signal = 2 * v2 - v1
        snr[weighting] = (shell_amplitude(signal) / shell_amplitude(v1 - signal)) ** 2
    assert sigmas[True] == pytest.approx(sigmas[False], rel=1e-6)  # the same dose
    gain = snr[True] / snr[False]
    # 64 shells up to 1/40 Å⁻¹: below 1/400 Å⁻¹, and 1/53-1/40 Å⁻¹ (measured 1.00, 1.39)
    low, high = gain[2:6].mean(), gain[48:64].mean()
    assert low == pytest.approx(1.0, abs=0.05) and high > 1.25, (low, high)


def assert_centred_on_picks(vol, picks, table, voxel_A, origin_A=0.0, min_r_vox=0.0):
    """Each particle's protein density (`vol` protein positive) has its centroid within
    half a voxel of its pick; at least 3 particles away from the volume's edge checked."""
    grid = np.indices(vol.shape).reshape(3, -1).T
    checked = 0
    for name, pts in picks.items():
        r_vox = table[name].radius_A / voxel_A
        for c in xyz_A_to_zyx_vox(pts, voxel_A, origin_A):
            if (np.any(c < r_vox + 2) or np.any(c > np.array(vol.shape) - r_vox - 3)
                    or r_vox < min_r_vox):
                continue  # cut by the volume's edge, or too small to centre on this grid
            near = np.linalg.norm(grid - c, axis=1)
            inside, shell = near <= r_vox, (near > r_vox) & (near <= r_vox + 2)
            w = np.clip(vol.ravel()[inside] - np.median(vol.ravel()[shell]), 0, None)
            centroid = (grid[inside] * w[:, None]).sum(0) / w.sum()
            assert np.linalg.norm(centroid - c) < 0.5, f"{name}: centroid {centroid} vs {c}"
            checked += 1
    assert checked >= 3, f"only {checked} particles checked"


def test_particles_are_reconstructed_at_their_picks():
    """Noise-free, perfectly aligned: each particle's protein density (dark) has its
    centroid within half a voxel of its pick."""
    table = ParticleTable.competition()
    tomos, picks, _ = simulate_tilt_run("r", (96, 160, 160), table, QUIET, STILL, [3, 0])
    assert_centred_on_picks(-tomos["wbp"], picks, table, 2 * VOXEL_SIZE_A, BIN2_ORIGIN_A,
                            min_r_vox=2.5)


def test_shared_translation_is_what_a_moved_specimen_gives():
    """The detector shifts a specimen moved by t makes give t back exactly."""
    theta = np.radians(dose_symmetric_angles(60, 3))
    t_zyx = np.array([0.7, -0.4, 1.1])
    shifts = np.stack([np.full_like(theta, t_zyx[1]),
                       t_zyx[2] * np.cos(theta) - t_zyx[0] * np.sin(theta)], axis=1)
    np.testing.assert_allclose(shared_translation(theta, shifts), t_zyx, atol=1e-12)


def _blob_centroid_vox(t: dict, seed: int) -> np.ndarray:
    """(z, y, x) centroid, in voxels from the centre, of a noise-free reconstruction of a
    Gaussian blob at the centre, with no ice and no dose B-factor (every tilt weighs the
    same)."""
    shape = (40, 48, 48)
    zyx = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    blob = np.exp(-sum(a**2 for a in zyx) / (2 * 2.0**2)).astype(np.float32)
    p = {"tilt_max_deg": 60.0, "defocus_um": 1.5, "bfactor_A2": 0.0, "ice_fraction": 0.0,
         "snr": 1e6}
    vol = -reconstruct(blob, 20.0, p, t, np.random.default_rng(seed))
    w = np.where(vol > 0.3 * vol.max(), vol, 0)
    return np.array([(w * a).sum() / w.sum() for a in zyx])


def test_recentred_alignment_error_keeps_the_frame():
    """Alignment residuals of 1.5 voxels per tilt, left as drawn, move the whole
    reconstruction off the picks (0.5-1.2 voxels over these 4 draws); with their shared
    translation removed, as alignment software fixes the frame, the blob comes back by
    two thirds on average (0.1-0.6 voxel left: the residuals' distortion of its shape,
    which no translation removes). The opt-in consumes the generator as before."""
    rough = TiltRanges(align_sigma_vox=(1.5, 1.5), defocus_err_um=(0.0, 0.0),
                       dose_bfactor_A2=(0.0, 0.0), step_deg=(3.0, 3.0))
    t = rough.draw(np.random.default_rng(0))
    drawn = [np.linalg.norm(_blob_centroid_vox(t, s)) for s in range(4)]
    fixed = [np.linalg.norm(_blob_centroid_vox(t | {"align_recentre": True}, s))
             for s in range(4)]
    assert np.mean(drawn) > 0.7, drawn
    assert np.mean(fixed) < 0.5 * np.mean(drawn), (fixed, drawn)
    old, new = (TiltRanges(align_recentre=r).draw(np.random.default_rng(1)) for r in (0, 1))
    assert {k: v for k, v in old.items() if k != "align_recentre"} == \
        {k: v for k, v in new.items() if k != "align_recentre"}


def _power_by_angle(vol: np.ndarray, lo_deg: float, hi_deg: float) -> float:
    """Mean Fourier power where the angle between k and the kx axis (in the kz-kx plane)
    lies in [lo, hi] degrees, over mid frequencies."""
    spec = np.abs(np.fft.fftn(vol)) ** 2
    kz = np.fft.fftfreq(vol.shape[0])[:, None, None]
    ky = np.fft.fftfreq(vol.shape[1])[None, :, None]
    kx = np.fft.fftfreq(vol.shape[2])[None, None, :]
    k = np.sqrt(kz**2 + ky**2 + kx**2)
    ang = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))
    sel = (k > 0.08) & (k < 0.3) & (ang >= lo_deg) & (ang <= hi_deg) & (np.abs(ky) < 0.05)
    return float(spec[sel].mean())


@pytest.mark.parametrize("tilt_max", [40.0, 60.0])
def test_missing_wedge_follows_the_tilt_range(tilt_max):
    rng = np.random.default_rng(0)
    density = rng.standard_normal((48, 24, 96)).astype(np.float32)
    p = {"tilt_max_deg": tilt_max, "defocus_um": 1.0, "bfactor_A2": 0.0,
         "ice_fraction": 0.0, "snr": 1e6}
    t = STILL.draw(np.random.default_rng(1)) | {"step_deg": 2.0, "dose_bfactor_A2": 0.0}
    vol = reconstruct(density, 20.0, p, t, rng)
    measured = _power_by_angle(vol, 0, tilt_max - 8)
    missing = _power_by_angle(vol, tilt_max + 8, 90)
    assert missing < 0.05 * measured, (tilt_max, missing / measured)
    band = _power_by_angle(vol, 45, 55) / measured  # inside the 60° range, outside the 40°
    assert (band > 0.3) if tilt_max == 60 else (band < 0.05), (tilt_max, band)


def test_same_seed_same_tomogram(tmp_path):
    table = ParticleTable.competition()
    a, pa, qa = simulate_tilt_run("r", (32, 64, 64), table, SimRanges(), TiltRanges(), [5, 1])
    b, pb, qb = simulate_tilt_run("r", (32, 64, 64), table, SimRanges(), TiltRanges(), [5, 1])
    c, _, _ = simulate_tilt_run("r", (32, 64, 64), table, SimRanges(), TiltRanges(), [6, 1])
    for kind in ("wbp", "denoised"):
        np.testing.assert_array_equal(a[kind], b[kind], err_msg=f"{kind} not reproducible")
    assert qa == qb and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not np.array_equal(a["wbp"], c["wbp"]), "another seed gave the same tomogram"


def test_tilt_project_is_read_like_any_other(tmp_path):
    """Written as `wbp` and `denoised` at 20.024 Å: the input step reads the denoised one
    as it is, and `wbp` on request."""
    from data_tools.sparsify import read_input
    from data_tools.sparsify_config import SparsifyConfig

    project = simulate_project(tmp_path / "p", 1, 4, (32, 96, 96), progress=False,
                               physics="tilt")
    run = project.runs()[0]
    assert project.tomogram_types(run) == ["denoised", "wbp"], project.tomogram_types(run)
    tomo, info = read_input(project, run, SparsifyConfig())
    assert info["how"] == "as is" and info["type"] == "denoised", info
    assert tomo.origin_A == pytest.approx(BIN2_ORIGIN_A) and tomo.data.shape == (16, 48, 48)
    _, info = read_input(project, run, SparsifyConfig(tomogram_type="wbp",
                                                      type_fallback=False))
    assert info["type"] == "wbp", info


def test_deconv_filter_follows_the_ctf():
    """CTF deconvolution passes nothing at k = 0 (high-pass) and at the CTF's first zero,
    and boosts low frequencies, where the CTF is weak, above high ones."""
    from data_tools.denoisers import deconv_filter
    from data_tools.tilt_series import ELECTRON_WAVELENGTH_A

    voxel_A, defocus_um = 10.0, 6.0
    line = deconv_filter((1, 1, 4096), voxel_A, defocus_um, amp_contrast=0.0, strength=1.0)[0, 0]
    k = np.fft.rfftfreq(4096)  # cycles per voxel along x
    k_zero = np.sqrt(1 / (ELECTRON_WAVELENGTH_A * defocus_um * 1e4)) * voxel_A  # sin χ = 0
    at = int(np.argmin(np.abs(k - k_zero)))
    assert line[0] == 0 and line.max() == pytest.approx(1.0)
    assert line[at] < 0.1 * line[at - 40:at + 40].max(), line[at - 40:at + 40]
    low, high = line[(k > 0.03) & (k < 0.1)].mean(), line[k > 0.4].mean()
    assert low > 3 * high, (low, high)


def test_diffusion_smooths_noise_and_keeps_an_edge():
    """Anisotropic diffusion on a step edge in noise: the flat sides lose most of their
    noise, and the step stays sharper than under a Gaussian that removes as much; the
    result is scale-free (a volume times 1000 gives the same result times 1000)."""
    from scipy import ndimage

    from data_tools.denoisers import anisotropic_diffusion, denoise

    rng = np.random.default_rng(0)
    clean = np.zeros((32, 32, 64), np.float32)
    clean[..., 32:] = 4.0
    vol = clean + rng.standard_normal(clean.shape).astype(np.float32)
    out = denoise(vol, "diffusion", 1.0)  # 8 steps
    flat = (slice(None), slice(None), slice(4, 24))
    assert out[flat].std() < 0.5 * vol[flat].std()
    # the Gaussian that leaves the same noise on the flat side
    sigma = min(np.linspace(0.3, 3, 28),
                key=lambda s: abs(ndimage.gaussian_filter(vol, s)[flat].std() - out[flat].std()))
    blurred = ndimage.gaussian_filter(vol, sigma)

    def edge_rise(v):  # mean step across the two voxels at the edge, of the full step
        return float((v[..., 32] - v[..., 31]).mean() / 4.0)

    assert edge_rise(out) > edge_rise(blurred) + 0.2, (edge_rise(out), edge_rise(blurred))
    np.testing.assert_allclose(anisotropic_diffusion(1000 * vol, 8), 1000 * out, rtol=1e-3,
                               atol=1e-2)


def test_tilt_ranges_keep_old_draws_and_check_input():
    """The default draw consumes the generator as it did before `denoisers` existed (the
    values recorded for TS_tilt_701_000, seed [701, 0, 7]); bad fields are named."""
    t = TiltRanges().draw(np.random.default_rng([701, 0, 7]))
    assert t["denoiser"] == "lowpass" and t["step_deg"] == pytest.approx(3.9181828109896566)
    assert t["denoise_sigma_vox"] == pytest.approx(1.2678489097259833)
    with pytest.raises(ValueError, match="choose from"):
        TiltRanges(denoisers=("bm3d",))
    with pytest.raises(ValueError, match="stepdeg"):
        TiltRanges.from_dict({"stepdeg": [1, 4]})
    with pytest.raises(ValueError, match="above high"):
        TiltRanges(step_deg=(4.0, 1.0))


def test_simulate_cli_takes_tilt_ranges(tmp_path):
    """`--tilt-ranges` reaches the draw: a deconvolved `denoised` next to its `wbp`; a
    file and an inline object layer in order (the later's steps win, the file's denoiser
    stays)."""
    import json

    from data_tools.copick_io import CopickProject
    from data_tools.simulate import main

    spec = tmp_path / "tilt.json"
    spec.write_text(json.dumps({"denoisers": ["deconv"], "step_deg": [3.0, 4.0]}))
    assert main(["--out", str(tmp_path / "p"), "--runs", "1", "--seed", "3", "--shape",
                 "32", "64", "64", "--physics", "tilt", "--tilt-ranges", str(spec),
                 '{"step_deg": [1.0, 1.5]}', "--quiet"]) == 0
    record = json.loads((tmp_path / "p" / "simulation.json").read_text())
    (params,) = record["runs"].values()
    assert params["tilt"]["denoiser"] == "deconv" and 1.0 <= params["tilt"]["step_deg"] <= 1.5
    project = CopickProject(tmp_path / "p")
    run = project.runs()[0]
    wbp = project.read_tomogram(run, 2 * VOXEL_SIZE_A, "wbp").data
    den = project.read_tomogram(run, 2 * VOXEL_SIZE_A, "denoised").data
    assert wbp.shape == den.shape and not np.allclose(wbp, den)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"denoisers": ["bm3d"]}))
    assert main(["--out", str(tmp_path / "q"), "--physics", "tilt", "--tilt-ranges",
                 str(bad)]) == 2
    assert main(["--out", str(tmp_path / "q"), "--physics", "tilt", "--tilt-ranges",
                 str(spec), '{"step_deg": [1.0, }']) == 2
    assert not (tmp_path / "q").exists()


def _sirt_against_filter(iterations: int, thickness: int) -> tuple[float, float]:
    """Real SIRT (row- and column-normalised Landweber from zero, this module's projector)
    of a 2-D (z, x) scene of blobs, correlated with the SIRT-like filtered back-projection
    and with plain WBP of the same tilts."""
    from data_tools.tilt_series import back_project, project, radial_weight

    rng = np.random.default_rng(0)
    shape = (thickness, 1, 160)
    zz, xx = np.mgrid[0:thickness, 0:160]
    vol = np.zeros(shape, np.float32)
    for _ in range(25):
        cz, cx, r = rng.uniform(8, thickness - 8), rng.uniform(10, 150), rng.uniform(2, 6)
        vol[:, 0] += ((zz - cz) ** 2 + (xx - cx) ** 2 < r * r) * rng.uniform(0.5, 1.0)
    vol[:, 0] += rng.normal(0, 0.3, (thickness, 160)).astype(np.float32)
    angles = np.radians(dose_symmetric_angles(60, 3))
    data = [project(vol, a) for a in angles]

    def back(images):
        return sum(back_project(im, a, shape) for im, a in zip(images, angles, strict=True))

    rows = [np.maximum(project(np.ones(shape, np.float32), a), 1e-6) for a in angles]
    cols = np.maximum(back([np.ones_like(d) for d in data]), 1e-6)
    sirt = np.zeros(shape, np.float32)
    for _ in range(iterations):
        residuals = [(d - project(sirt, a)) / r
                     for d, a, r in zip(data, angles, rows, strict=True)]
        sirt += back(residuals) / cols

    def fbp(n):
        w = radial_weight((1, 160), 20.0, n, thickness, float(angles.max() - angles.min()))
        return back([np.fft.irfft(np.fft.rfft(d, axis=1) * w, n=160, axis=1) for d in data])

    def corr(a, b):  # away from the x edges, where a finite detector truncates
        return float(np.corrcoef(a[:, 0, 20:-20].ravel(), b[:, 0, 20:-20].ravel())[0, 1])

    return corr(sirt, fbp(iterations)), corr(sirt, fbp(0))


@pytest.mark.parametrize("iterations,thickness", [(5, 40), (10, 80)])
def test_sirt_like_filter_is_what_sirt_reconstructs(iterations, thickness):
    """The SIRT-like filter reproduces real SIRT of as many iterations (correlation 0.98 at
    both slab thicknesses) with a third of plain WBP's misfit (WBP: 0.935)."""
    like, wbp = _sirt_against_filter(iterations, thickness)
    assert like > 0.97 and (1 - like) < 0.5 * (1 - wbp), (like, wbp)


def test_sirt_ranges_are_opt_in_and_written_as_sirt():
    """Off by default, the draw is the old one to the bit; on, the other values stay the
    same for the seed, the run is smoother than its WBP (roughness 0.65 of it at 3
    iterations) and its raw product is `sirt`."""
    old = TiltRanges().draw(np.random.default_rng([701, 0, 7]))
    on = TiltRanges(sirt_iterations=(10, 20)).draw(np.random.default_rng([701, 0, 7]))
    assert old["sirt_iterations"] == 0 and 10 <= on["sirt_iterations"] <= 20
    assert {k: v for k, v in on.items() if k != "sirt_iterations"} == \
        {k: v for k, v in old.items() if k != "sirt_iterations"}
    with pytest.raises(ValueError, match="sirt_iterations"):
        TiltRanges(sirt_iterations=(-1, 5))
    table = ParticleTable.competition()
    still = TiltRanges(align_sigma_vox=(0.0, 0.0), defocus_err_um=(0.0, 0.0),
                       sirt_iterations=(3, 3))  # a thin test slab needs few to show
    sirt, picks_s, _ = simulate_tilt_run("r", (32, 64, 64), table, QUIET, still, [3, 0])
    wbp, picks_w, _ = simulate_tilt_run("r", (32, 64, 64), table, QUIET, STILL, [3, 0])
    assert set(sirt) == {"sirt", "denoised"} and set(wbp) == {"wbp", "denoised"}
    assert all(np.array_equal(picks_s[k], picks_w[k]) for k in picks_w)

    def roughness(v):  # neighbour differences against the spread: high for fine detail
        return float(np.abs(np.diff(v, axis=2)).mean() / v.std())

    assert roughness(sirt["sirt"]) < 0.8 * roughness(wbp["wbp"]), \
        (roughness(sirt["sirt"]), roughness(wbp["wbp"]))


def test_sirt_keeps_the_dose_of_its_wbp_twin():
    """The noise is the dose's, set by the WBP of the same tilt series: WBP reconstructs at
    exactly the drawn SNR, the SIRT-like reconstruction higher (1.9 at 3 iterations, 1.05 at
    30, on a thin smooth specimen). Signal and noise are separated by reconstructing at SNR
    1 and 2 with the same draws: vol = signal + noise / snr."""
    from scipy import ndimage

    density = ndimage.gaussian_filter(
        np.random.default_rng(0).standard_normal((24, 16, 64)), 2).astype(np.float32)

    def measured_snr(iterations):
        vols = []
        for snr in (1.0, 2.0):
            p = {"tilt_max_deg": 60, "defocus_um": 3.0, "bfactor_A2": 100.0,
                 "ice_fraction": 0.3, "snr": snr}
            t = TiltRanges(sirt_iterations=(iterations, iterations)).draw(
                np.random.default_rng(3))
            vols.append(reconstruct(density, 20.0, p, t, np.random.default_rng(5)))
        signal = 2 * vols[1] - vols[0]
        return float(signal.std() / (vols[0] - signal).std())

    assert measured_snr(0) == pytest.approx(1.0, rel=1e-3)
    assert measured_snr(3) > 1.5 and measured_snr(30) < measured_snr(3)


def test_a_tilt_axis_error_blurs_with_distance_from_the_centre():
    """Noise-free blobs: with the assumed axis 2° off, the one at the centre reconstructs as
    before (peak within 0.5 %), the one 112 voxels off along x loses a tenth of its peak
    (measured 11 %) and the one 42 off along y a little, and both move (picks follow them:
    reconstructed_at); off by default, draws unchanged."""
    from scipy import ndimage

    from data_tools.tilt_series import tilt_rotations_deg

    density = np.zeros((32, 96, 256), np.float32)
    for zyx in [(16, 48, 128), (16, 48, 240), (16, 90, 128)]:
        density[zyx] = 1.0
    density = ndimage.gaussian_filter(density, 1.5)
    p = {"tilt_max_deg": 60, "defocus_um": 1.0, "bfactor_A2": 0.0, "ice_fraction": 0.0,
         "snr": 1e6}
    peaks = []
    for err in (0.0, 2.0):
        t = TiltRanges(align_sigma_vox=(0.0, 0.0), defocus_err_um=(0.0, 0.0),
                       axis_error_deg=(err, err)).draw(np.random.default_rng(1))
        t |= {"step_deg": 2.0, "dose_bfactor_A2": 0.0}
        vol = -reconstruct(density, 20.0, p, t, np.random.default_rng(2))
        peaks.append([vol[z - 3:z + 4, y - 3:y + 4, x - 3:x + 4].max()
                      for z, y, x in [(16, 48, 128), (16, 48, 240), (16, 90, 128)]])
    (centre, far_x, far_y), (centre_e, far_x_e, far_y_e) = peaks
    assert centre_e == pytest.approx(centre, rel=0.005)
    assert far_x_e < 0.93 * far_x and far_y_e < 0.99 * far_y, (peaks,)
    # ... and it moves: the picks follow the density to where reconstructed_at says
    # (measured 0.05-0.13 voxel from the centroid, the unmoved picks 1.7-3.4 voxels)
    from data_tools.tilt_series import reconstructed_at

    blobs = np.array([(16, 48, 240), (16, 90, 128)], float)
    moved = reconstructed_at(blobs, (np.array(density.shape) - 1) / 2, 20.0, 32, p, t)
    for blob, pick in zip(blobs.astype(int), moved, strict=True):
        lo = blob - 6
        w = vol[lo[0]:lo[0] + 13, lo[1]:lo[1] + 13, lo[2]:lo[2] + 13]
        w = np.where(w > 0.3 * w.max(), w, 0)
        grid = np.indices(w.shape).reshape(3, -1).T + lo
        centroid = (grid * w.reshape(-1, 1)).sum(0) / w.sum()
        assert np.linalg.norm(centroid - pick) < 0.3 < 1.5 < np.linalg.norm(centroid - blob)
    t = TiltRanges(axis_error_deg=(1.0, 1.0), rotation_jitter_deg=(0.2, 0.2)).draw(
        np.random.default_rng(4))
    rot = tilt_rotations_deg(t, 41)
    assert abs(abs(t["axis_error_deg"]) - 1.0) < 1e-12 and rot.std() == pytest.approx(0.2, 0.3)
    np.testing.assert_array_equal(rot, tilt_rotations_deg(t, 41))  # deterministic per seed
    assert not np.any(tilt_rotations_deg(TiltRanges().draw(np.random.default_rng(4)), 41))


def test_frame_split_halves_average_to_the_full_tomogram():
    """TiltRanges(halves=True) adds `wbp-even` and `wbp-odd`: their mean is the `wbp`, which
    is the one the same seed gives without halves; each half holds the same signal with
    independent noise of twice the variance (what Noise2Noise denoisers assume)."""
    table = ParticleTable.competition()
    noisy = SimRanges(snr=(0.5, 0.5), crowding=(0.6, 0.6), membranes=(0, 0), gold=(0, 0),
                      tilt_max_deg=(60.0, 60.0))
    halved = TiltRanges(halves=True, denoisers=("gaussian",))
    tomos, picks, params = simulate_tilt_run("r", (64, 128, 128), table, noisy, halved, [4, 0])
    plain, picks0, _ = simulate_tilt_run("r", (64, 128, 128), table, noisy,
                                         TiltRanges(denoisers=("gaussian",)), [4, 0])
    assert sorted(tomos) == ["denoised", "wbp", "wbp-even", "wbp-odd"]
    assert sorted(plain) == ["denoised", "wbp"]
    np.testing.assert_array_equal(tomos["wbp"], plain["wbp"])
    np.testing.assert_array_equal(tomos["denoised"], plain["denoised"])
    assert all(np.array_equal(picks[k], picks0[k]) for k in picks)
    assert isinstance(params["tilt"]["halves_seed"], int)
    even, odd = tomos["wbp-even"], tomos["wbp-odd"]
    np.testing.assert_allclose((even + odd) / 2, tomos["wbp"], atol=1e-4)
    # The same seed at SNR 10⁶ gives the signal (the scene and filters are drawn alike);
    # what each tomogram holds beyond its share of it is its noise.
    clean = simulate_tilt_run("r", (64, 128, 128), table, replace(noisy, snr=(1e6, 1e6)),
                              halved, [4, 0])[0]["wbp"].ravel()
    clean = clean - clean.mean()
    noise = {}
    for k in ("wbp", "wbp-even", "wbp-odd"):
        v = tomos[k].ravel() - tomos[k].mean()
        noise[k] = v - (v @ clean) / (clean @ clean) * clean
    for k in ("wbp-even", "wbp-odd"):
        assert 1.8 < noise[k].var() / noise["wbp"].var() < 2.2, k
    assert abs(np.corrcoef(noise["wbp-even"], noise["wbp-odd"])[0, 1]) < 0.1


def test_full_grid_tilt_series_reconstructs_at_the_picks_and_reads_at_10_A(tmp_path):
    """TiltRanges.form_bin 1 images the scene on the full 10 Å grid: noise-free, each
    particle's density centroid lies within half a (10 Å) voxel of its pick, the project
    is written at 10 Å with 3 levels, and the input step reads its level 1 (20 Å) as is."""
    from data_tools.sparsify import read_input
    from data_tools.sparsify_config import SparsifyConfig

    table = ParticleTable.competition()
    fine = replace(STILL, form_bin=1)
    tomos, picks, params = simulate_tilt_run("r", (64, 128, 128), table, QUIET, fine, [3, 0])
    assert params["tilt"]["form_bin"] == 1 and tomos["wbp"].shape == (64, 128, 128)
    assert_centred_on_picks(-tomos["wbp"], picks, table, VOXEL_SIZE_A)

    project = simulate_project(tmp_path / "p", 1, 4, (32, 96, 96), progress=False,
                               physics="tilt", tilt=TiltRanges(form_bin=1))
    run = project.runs()[0]
    tomo, info = read_input(project, run, SparsifyConfig())
    assert info["type"] == "denoised" and tomo.data.shape == (16, 48, 48), info
    with pytest.raises(ValueError, match="form_bin"):
        TiltRanges(form_bin=4)


def test_full_grid_is_formed_at_its_20_A_twins_dose():
    """The same density imaged on the 20 Å grid and, at FULL_GRID_NOISE_PER_20A times its
    noise scale, on the 10 Å grid (then mean-binned 2x, as the picker reads it): one dose,
    so the lowest band's S/N agrees within 10 %; a wrong factor (2 or 8) misses it by 30 %
    or more. Signal and noise separated by reconstructing at two noise scales with the
    same draws."""
    from scipy import ndimage

    from data_tools.simulate import FULL_GRID_NOISE_PER_20A
    from data_tools.spectrum import shell_amplitude
    from data_tools.zarr_levels import bin_mean

    fine = ndimage.gaussian_filter(
        np.random.default_rng(0).standard_normal((48, 32, 128)), 3).astype(np.float32)
    p = {"tilt_max_deg": 60, "defocus_um": 3.0, "bfactor_A2": 100.0, "ice_fraction": 0.3,
         "snr": 1.0}
    t = TiltRanges().draw(np.random.default_rng(3))

    def low_band_snr(vols):
        signal = 2 * vols[1] - vols[0]
        s, n = shell_amplitude(signal)[2:10], shell_amplitude(vols[0] - signal)[2:10]
        return float(s.mean() / n.mean())

    coarse = [reconstruct_with_halves(bin_mean(fine, 2), 20.0, p | {"snr": snr}, t,
                                      np.random.default_rng(5)) for snr in (1.0, 2.0)]
    sigma_20 = coarse[0][2]
    ratios = {}
    for factor in (2.0, FULL_GRID_NOISE_PER_20A, 8.0):
        vols = [bin_mean(reconstruct_with_halves(fine, 10.0, p, t, np.random.default_rng(5),
                                                 noise_sigma=factor * sigma_20 / k)[0], 2)
                for k in (1.0, 2.0)]
        ratios[factor] = low_band_snr(vols) / low_band_snr([v[0] for v in coarse])
    assert ratios[FULL_GRID_NOISE_PER_20A] == pytest.approx(1.0, abs=0.1), ratios
    assert ratios[2.0] > 1.3 and ratios[8.0] < 0.7, ratios
