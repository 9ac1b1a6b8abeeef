"""Tomograms made the way microscopes and reconstruction software make them: a dose-symmetric
tilt series about y is projected from the density, each tilt imaged with its own CTF,
dose-dependent B-factor, ice-path attenuation, noise and alignment error; the tilts are
phase-flipped with an imperfect defocus estimate and reconstructed by weighted
back-projection (`wbp`), then denoised one of the ways people do (`denoised`).

Works on a z,y,x density (protein positive) at any voxel size; the simulator calls it on the
2× binned density (20 Å), where a full-size run takes seconds per tilt series.

Geometry: at tilt θ the beam runs along (cos θ, sin θ) in (z, x); detector coordinate
u = (x − cx)·cos θ − (z − cz)·sin θ + cx; y is the tilt axis and stays.
"""

from __future__ import annotations

import numpy as np

from data_tools.tilt_ranges import SCHEMES

ELECTRON_WAVELENGTH_A = 0.0197  # 300 kV


def dose_symmetric_angles(max_deg: float, step_deg: float) -> np.ndarray:
    """Tilt angles in acquisition order: 0, then ±step alternating outwards (Hagen's scheme
    with groups of one), so dose accumulates at the high tilts."""
    n = int(np.floor(max_deg / step_deg + 1e-9))
    order = [0.0]
    for i in range(1, n + 1):
        order += [i * step_deg, -i * step_deg]
    return np.array(order)


def acquisition_angles(max_deg: float, step_deg: float, scheme: str = SCHEMES[0]
                       ) -> np.ndarray:
    """Tilt angles in the order `scheme` takes them (TiltRanges.scheme): the i-th has had i
    tilts' dose before it."""
    if scheme == "dose_symmetric":
        return dose_symmetric_angles(max_deg, step_deg)
    if scheme != "bidirectional":
        raise ValueError(f"scheme {scheme!r}: choose from {list(SCHEMES)}")
    n = int(np.floor(max_deg / step_deg + 1e-9))
    return np.array([i * step_deg for i in range(n + 1)]
                    + [-i * step_deg for i in range(1, n + 1)])


def series_angles(p: dict, t: dict) -> np.ndarray:
    """A drawn run's tilt angles in the order their per-tilt draws are made (noise, focus
    drift, alignment residual, rotation): the dose-symmetric order whatever the scheme, so
    that a series taken in another order is the same series with other doses, not another
    draw of the noise (p: the run's physics, t: TiltRanges.draw())."""
    return dose_symmetric_angles(p["tilt_max_deg"], t["step_deg"])


def dose_index(p: dict, t: dict) -> np.ndarray:
    """For each of series_angles' tilts, how many tilts the scheme took before it."""
    taken = acquisition_angles(p["tilt_max_deg"], t["step_deg"], t.get("scheme", SCHEMES[0]))
    position = {round(float(a), 6): k for k, a in enumerate(taken)}
    return np.array([position[round(float(a), 6)] for a in series_angles(p, t)])


def _detector_coords(shape_zyx, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per (z, x): the lower detector bin and the linear weight of the upper one."""
    Z, _, X = shape_zyx
    z = np.arange(Z, dtype=np.float64)[:, None] - (Z - 1) / 2
    x = np.arange(X, dtype=np.float64)[None, :] - (X - 1) / 2
    u = x * np.cos(theta) - z * np.sin(theta) + (X - 1) / 2
    u0 = np.floor(u)
    return u0.astype(np.int64), (u - u0)


def project(vol: np.ndarray, theta: float) -> np.ndarray:
    """Line integrals along the beam at tilt θ (radians): a (Y, X) image, by splatting each
    voxel onto its two nearest detector bins."""
    Z, Y, X = vol.shape
    u0, f = _detector_coords(vol.shape, theta)
    out = np.zeros((Y, X + 2))
    v = np.moveaxis(vol, 1, 0).reshape(Y, Z * X).astype(np.float64)
    lo = np.clip(u0.ravel() + 1, 0, X + 1)  # one guard bin each side
    hi = np.clip(u0.ravel() + 2, 0, X + 1)
    fr = f.ravel()
    for y in range(Y):
        out[y] += np.bincount(lo, v[y] * (1 - fr), minlength=X + 2)
        out[y] += np.bincount(hi, v[y] * fr, minlength=X + 2)
    return out[:, 1:-1]


def back_project(image_yx: np.ndarray, theta: float, shape_zyx) -> np.ndarray:
    """Smears a (filtered) projection back through the volume along its beam direction."""
    X = shape_zyx[2]
    u0, f = _detector_coords(shape_zyx, theta)
    padded = np.pad(image_yx, ((0, 0), (1, 1)))
    lo = np.clip(u0 + 1, 0, X + 1)
    hi = np.clip(u0 + 2, 0, X + 1)
    vals = padded[:, lo] * (1 - f) + padded[:, hi] * f  # (Y, Z, X)
    return np.moveaxis(vals, 0, 1).astype(np.float32)


def _freqs(shape_yx, voxel_A: float) -> tuple[np.ndarray, np.ndarray]:
    ky = np.fft.fftfreq(shape_yx[0])[:, None] / voxel_A
    kx = np.fft.rfftfreq(shape_yx[1])[None, :] / voxel_A
    return ky, kx


def ctf_2d(shape_yx, voxel_A: float, defocus_um: float, astig_um: float, astig_rad: float,
           amp_contrast: float) -> np.ndarray:
    """The weak-phase CTF on the rfft grid of a projection (negative at low frequency:
    protein comes out dark)."""
    ky, kx = _freqs(shape_yx, voxel_A)
    k2 = ky**2 + kx**2
    phi = np.arctan2(ky, kx)
    dz = (defocus_um + 0.5 * astig_um * np.cos(2 * (phi - astig_rad))) * 1e4
    chi = np.pi * ELECTRON_WAVELENGTH_A * dz * k2
    return -(np.sqrt(1 - amp_contrast**2) * np.sin(chi) + amp_contrast * np.cos(chi))


def ramp(shape_yx, voxel_A: float) -> np.ndarray:
    """WBP's weighting along the detector's x: |k|, rolled off by a cosine to Nyquist."""
    _, kx = _freqs(shape_yx, voxel_A)
    k = np.abs(kx) * voxel_A  # cycles per voxel, 0..0.5
    return k * 0.5 * (1 + np.cos(np.pi * k / 0.5))


def sirt_share(k_vox: np.ndarray, iterations: int, thickness_vox: float,
               tilt_range_rad: float) -> np.ndarray:
    """The share of each frequency (cycles per voxel across the tilt axis) that `iterations`
    of SIRT started from zero recover, where WBP recovers all: 1 − (1 − a)^n (Landweber
    iteration; Zeng 2012's FBP equivalent, IMOD's SIRT-like filter). a is the normalised
    projection–back-projection operator's response, 1/(T·Θ·k) for a slab T voxels thick
    seen over Θ radians, at most 1 (the lowest frequencies converge in one step). Checked
    against real SIRT with this module's projector in tests/test_tilt_series.py."""
    a = np.minimum(1.0, 1.0 / (thickness_vox * tilt_range_rad * np.maximum(k_vox, 1e-12)))
    return 1.0 - (1.0 - a) ** iterations


def radial_weight(shape_yx, voxel_A: float, sirt_iterations: int = 0,
                  thickness_vox: float = 1.0, tilt_range_rad: float = 1.0) -> np.ndarray:
    """WBP's ramp, or with sirt_iterations > 0 the SIRT-like filter of that many iterations."""
    w = ramp(shape_yx, voxel_A)
    if sirt_iterations > 0:
        _, kx = _freqs(shape_yx, voxel_A)
        w = w * sirt_share(np.abs(kx) * voxel_A, sirt_iterations, thickness_vox,
                           tilt_range_rad)
    return w


def _shift_phase(shape_yx, voxel_A: float, dy: float, dx: float) -> np.ndarray:
    ky, kx = _freqs(shape_yx, voxel_A)
    return np.exp(-2j * np.pi * (ky * dy + kx * dx) * voxel_A)


def _tilt_filters(shape_yx, voxel_A: float, i: int, p: dict, t: dict, astig_rad: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(on the signal, on signal and noise alike but for the reconstruction's weighting,
    the residual shift (dy, dx) in voxels) for a tilt that i tilts were taken before (its
    dose index)."""
    ky, kx = _freqs(shape_yx, voxel_A)
    k2 = ky**2 + kx**2
    defocus = p["defocus_um"] + rng.normal(0, 0.05)  # focus drifts a little per tilt
    ctf = ctf_2d(shape_yx, voxel_A, defocus, t["astig_um"], astig_rad, t["amp_contrast"])
    envelope = np.exp(-(p["bfactor_A2"] + i * t["dose_bfactor_A2"]) * k2 / 4)
    estimate = ctf_2d(shape_yx, voxel_A, defocus + rng.normal(0, t["defocus_err_um"]),
                      t["astig_um"], astig_rad, t["amp_contrast"])
    # Phase flipping keeps the sign convention of the images: protein stays dark.
    flip = -np.sign(estimate)
    dy, dx = rng.normal(0, t["align_sigma_vox"], 2)
    common = flip * _shift_phase(shape_yx, voxel_A, dy, dx)
    return ctf * envelope, common, np.array([dy, dx])


def exposure_filter(shape_yx, voxel_A: float, i: int, t: dict) -> np.ndarray | float:
    """The reconstruction's weight on tilt i's frequencies (TiltRanges.dose_weighting):
    the envelope of the dose the i tilts before it left, 1 without dose weighting."""
    if not t.get("dose_weighting", False):
        return 1.0
    ky, kx = _freqs(shape_yx, voxel_A)
    return np.exp(-i * t["dose_bfactor_A2"] * (ky**2 + kx**2) / 4)


def shared_translation(angles_rad: np.ndarray, shifts_yx: np.ndarray,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """The 3-D translation (z, y, x) in voxels that best explains per-tilt detector shifts
    (dy, dx) [n, 2] in (weighted) least squares: a translation t moves tilt θ's image by
    (t_y, t_x·cos θ − t_z·sin θ) (the detector coordinate of the module docstring)."""
    w = np.ones(len(angles_rad)) if weights is None else np.asarray(weights, np.float64)
    sw = np.sqrt(w)
    design = np.stack([-np.sin(angles_rad), np.cos(angles_rad)], axis=1) * sw[:, None]
    (tz, tx), *_ = np.linalg.lstsq(design, shifts_yx[:, 1] * sw, rcond=None)
    return np.array([tz, np.average(shifts_yx[:, 0], weights=w), tx])


def reconstruct(density: np.ndarray, voxel_A: float, p: dict, t: dict,
                rng: np.random.Generator, extra: np.ndarray | None = None) -> np.ndarray:
    """The weighted back-projection (protein dark) of a simulated tilt series of `density`
    (z,y,x, protein positive), noise set so the reconstruction's signal-to-noise ratio is
    p["snr"]. p: the run's physics (tilt_max_deg, defocus_um, bfactor_A2, ice_fraction,
    snr); t: TiltRanges.draw(). `extra` (hard negatives) is imaged through the same tilts
    and filters but left out of the SNR: the dose, not the specimen, sets the noise.
    With t["sirt_iterations"] > 0 the SIRT-like reconstruction of the same tilt series:
    the noise is still the one that gives its WBP p["snr"] (the same dose), so the
    iterations' smoothing shows as the higher SNR it is."""
    return reconstruct_with_halves(density, voxel_A, p, t, rng, extra)[0]


def reconstruct_with_halves(density: np.ndarray, voxel_A: float, p: dict, t: dict,
                            rng: np.random.Generator, extra: np.ndarray | None = None,
                            noise_sigma: float | None = None
                            ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None, float]:
    """`reconstruct`'s volume and, where t["halves_seed"] is set (TiltRanges.halves), the
    two frame-split half reconstructions that cryoCARE-like denoisers train on: every tilt
    at half the dose, so each half has the full one's signal and independent noise of
    twice its variance, and their mean is the full reconstruction. The halves' extra noise
    comes from a stream of its own: the full volume is the same per seed with or without.
    The third value is the noise's scale per detector pixel: the one that gives p["snr"],
    or `noise_sigma` where given (a dose carried over from another grid)."""
    shape = density.shape
    angles, dose = series_angles(p, t), dose_index(p, t)
    astig_rad = rng.uniform(0, np.pi)
    ice_A = p["ice_fraction"] * shape[0] * voxel_A
    sig = np.zeros(shape, np.float32)
    noi = np.zeros(shape, np.float32)
    extra_sig = np.zeros(shape, np.float32) if extra is not None else None
    halves_rng = (np.random.default_rng(t["halves_seed"]) if t.get("halves_seed") is not None
                  else None)
    noi_half = np.zeros(shape, np.float32) if halves_rng is not None else None
    shifts = np.zeros((len(angles), 2))
    sirt_n = t.get("sirt_iterations", 0)
    weight = radial_weight((shape[1], shape[2]), voxel_A, sirt_n, shape[0],
                           np.radians(angles.max() - angles.min()))
    # The unweighted WBP twin sets the noise where the weighting is not WBP's own.
    twin_weighted = sirt_n or t.get("dose_weighting", False)
    wbp_weight = ramp((shape[1], shape[2]), voxel_A) if twin_weighted else None
    rotation_deg = tilt_rotations_deg(t, len(angles))
    if wbp_weight is not None:  # the WBP twin, for its signal-to-noise ratio only
        sig_wbp, noi_wbp = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for i, deg in enumerate(angles):
        th = np.radians(deg)
        attenuation = _ice_attenuation(deg, ice_A, t)
        img = _rotated(project(density, th), rotation_deg[i]) * attenuation
        on_signal, unweighted, shifts[i] = _tilt_filters(img.shape, voxel_A, dose[i], p, t,
                                                         astig_rad, rng)
        common = unweighted * weight * exposure_filter(img.shape, voxel_A, dose[i], t)
        img_ft, noise_ft = np.fft.rfft2(img) * on_signal, np.fft.rfft2(
            rng.standard_normal(img.shape))
        sig += back_project(np.fft.irfft2(img_ft * common, s=img.shape), th, shape)
        noi += back_project(np.fft.irfft2(noise_ft * common, s=img.shape), th, shape)
        if halves_rng is not None:
            noi_half += back_project(np.fft.irfft2(np.fft.rfft2(halves_rng.standard_normal(
                img.shape)) * common, s=img.shape), th, shape)
        if wbp_weight is not None:
            twin = unweighted * wbp_weight
            sig_wbp += back_project(np.fft.irfft2(img_ft * twin, s=img.shape), th, shape)
            noi_wbp += back_project(np.fft.irfft2(noise_ft * twin, s=img.shape), th, shape)
        if extra is not None:
            e = _rotated(project(extra, th), rotation_deg[i]) * attenuation
            e = np.fft.irfft2(np.fft.rfft2(e) * on_signal * common, s=e.shape)
            extra_sig += back_project(e, th, shape)
    sig_ref, noi_ref = (sig, noi) if wbp_weight is None else (sig_wbp, noi_wbp)
    sigma = np.float32(noise_sigma if noise_sigma is not None else float(sig_ref.std())
                       / (p["snr"] * max(float(noi_ref.std()), 1e-30)))
    if extra is not None:
        sig += extra_sig
    return (*_noisy_volumes(sig, noi, noi_half, sigma, angles, shifts, voxel_A, p, t),
            float(sigma))


def _noisy_volumes(sig: np.ndarray, noi: np.ndarray, noi_half: np.ndarray | None,
                   sigma: np.float32, angles: np.ndarray, shifts: np.ndarray, voxel_A: float,
                   p: dict, t: dict):
    """reconstruct_with_halves' volumes from its signal and noise back-projections."""
    # Two independent unit noises n, m give independent (n ± m)/√2 of the same variance,
    # so the halves sig + σ(n ± m) are frame-split halves whose mean is sig + σn.
    vols = [sig + sigma * noi]
    if noi_half is not None:
        vols += [sig + sigma * (noi + noi_half), sig + sigma * (noi - noi_half)]
    if t.get("align_recentre", False):
        move = -shared_translation(np.radians(angles), shifts,
                                   tilt_weights(angles, voxel_A, sig.shape[0], p, t))
        vols = [_translated(v, move) for v in vols]
    vols = [v.astype(np.float32) for v in vols]
    return vols[0], (tuple(vols[1:]) if len(vols) == 3 else None)


def tilt_weights(angles_deg: np.ndarray, voxel_A: float, depth_vox: int, p: dict, t: dict
                 ) -> np.ndarray:
    """Each of series_angles' tilts' share in a particle's reconstructed density, as
    reconstruct weighs the alignment residuals: ice attenuation times the dose envelope."""
    ice_A = p["ice_fraction"] * depth_vox * voxel_A
    return np.array([_ice_attenuation(deg, ice_A, t) * _dose_envelope(i, voxel_A, p, t)
                     for i, deg in zip(dose_index(p, t), angles_deg, strict=True)])


def _ice_attenuation(deg: float, ice_A: float, t: dict) -> float:
    """Thicker ice along the tilted beam: fewer elastically scattered electrons."""
    return np.exp(-ice_A / (t["mean_free_path_A"] * np.cos(np.radians(deg))))


def reconstructed_at(points_zyx: np.ndarray, centre_zyx: np.ndarray, voxel_A: float,
                     depth_vox: int, p: dict, t: dict) -> np.ndarray:
    """Where points (z, y, x; any unit, about the volume's centre) reconstruct when the
    tilts are rotated in the detector plane (tilt_rotations_deg): the 3-D point that best
    explains their rotated detector positions, tilts weighted as tilt_weights. Annotators
    pick the density where it reconstructs, and a rotated axis moves it by up to a few
    voxels at the edges (mostly a rotation of the whole field about z). voxel_A and
    depth_vox are reconstruct's (the weights). Unchanged without rotations."""
    points = np.asarray(points_zyx, np.float64).reshape(-1, 3)
    angles = series_angles(p, t)
    alpha = np.radians(tilt_rotations_deg(t, len(angles)))
    if not alpha.any() or not len(points):
        return points.copy()
    theta = np.radians(angles)
    weights = tilt_weights(angles, voxel_A, depth_vox, p, t)
    rel = points - centre_zyx
    out = points.copy()
    for k, (z, y, x) in enumerate(rel):
        u = x * np.cos(theta) - z * np.sin(theta)
        # scipy's rotation by α (as _rotated applies it) maps (u, v) to
        # (u cos α + v sin α, v cos α − u sin α)
        du = u * (np.cos(alpha) - 1) + y * np.sin(alpha)
        dv = y * (np.cos(alpha) - 1) - u * np.sin(alpha)
        out[k] += shared_translation(theta, np.stack([dv, du], axis=1), weights)
    return out


def tilt_rotations_deg(t: dict, n_tilts: int) -> np.ndarray:
    """Each tilt's in-plane rotation (degrees, acquisition order) between the true tilt axis
    and the one the reconstruction assumes: the axis error plus its residual; zeros unless
    the tilt ranges ask for them (TiltRanges.axis_error_deg)."""
    if "rotation_seed" not in t:
        return np.zeros(n_tilts)
    jitter = np.random.default_rng(t["rotation_seed"]).normal(0, 1, n_tilts)
    return t["axis_error_deg"] + t["rotation_jitter_deg"] * jitter


def _rotated(image_yx: np.ndarray, angle_deg: float) -> np.ndarray:
    """The image rotated about its centre (cubic spline; edges continued)."""
    if angle_deg == 0:
        return image_yx
    from scipy import ndimage

    return ndimage.rotate(image_yx, angle_deg, reshape=False, order=3, mode="nearest")


def _dose_envelope(i: int, voxel_A: float, p: dict, t: dict) -> float:
    """Tilt i's B-factor envelope at a particle's scale (4 voxels). Times its ice
    attenuation, how much the tilt contributes to a particle's reconstructed density: the
    weight that puts the frame the residuals are removed in where the densities — and so
    the picks — sit."""
    k2 = (1.0 / (4 * voxel_A)) ** 2
    # dose weighting multiplies the same envelope in once more (exposure_filter)
    dose_B = i * t["dose_bfactor_A2"] * (2 if t.get("dose_weighting", False) else 1)
    return float(np.exp(-(p["bfactor_A2"] + dose_B) * k2 / 4))


def _translated(vol: np.ndarray, shift_zyx: np.ndarray) -> np.ndarray:
    """The volume moved by a (sub-voxel) shift, exactly in Fourier space (periodic: the
    shifts here are about a voxel, so the wrapped border is a slice)."""
    from scipy import ndimage

    spec = ndimage.fourier_shift(np.fft.rfftn(vol), shift_zyx, n=vol.shape[-1])
    return np.fft.irfftn(spec, s=vol.shape, axes=(0, 1, 2)).astype(np.float32)
