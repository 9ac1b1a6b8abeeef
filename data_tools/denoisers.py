"""The denoisers people run on weighted back-projections, cheaply, as the simulator
applies them (TiltRanges.denoisers draws one per run) and the benches compare them: a
Gaussian, a band limit, a 3³ median, CTF deconvolution as Warp and IsoNet do it, and
Perona-Malik anisotropic diffusion."""

from __future__ import annotations

import numpy as np

from data_tools.tilt_series import ELECTRON_WAVELENGTH_A

DIFFUSION_ITERS_PER_SIGMA = 8  # `diffusion`'s strength: steps per voxel of denoise_sigma_vox
DIFFUSION_EDGE_REL = 1.5  # its edge scale, in robust sigmas of neighbour differences


def deconv_filter(shape_zyx, voxel_A: float, defocus_um: float, amp_contrast: float,
                  strength: float) -> np.ndarray:
    """The radial Wiener filter of CTF deconvolution (as Warp and IsoNet apply it to
    phase-flipped tomograms), on the rfftn grid: |CTF| / (CTF² + 1/SNR(k)) with an SNR that
    falls exponentially with frequency, 10^(3·strength) at k = 0, and a high-pass over the
    lowest frequencies so the mean is not boosted. Peak-normalised to 1."""
    kz = np.fft.fftfreq(shape_zyx[0])[:, None, None]
    ky = np.fft.fftfreq(shape_zyx[1])[None, :, None]
    kx = np.fft.rfftfreq(shape_zyx[2])[None, None, :]
    k_vox = np.sqrt(kz**2 + ky**2 + kx**2)  # cycles per voxel
    k_A = k_vox / voxel_A
    chi = np.pi * ELECTRON_WAVELENGTH_A * defocus_um * 1e4 * k_A**2
    ctf = np.sqrt(1 - amp_contrast**2) * np.sin(chi) + amp_contrast * np.cos(chi)
    snr = 10 ** (3 * strength) * np.exp(-100.0 * k_A)
    highpass = 0.5 * (1 - np.cos(np.pi * np.clip(k_vox / 0.02, 0, 1)))
    w = np.abs(ctf) / (ctf**2 + 1 / snr) * highpass
    return (w / w.max()).astype(np.float32)


def anisotropic_diffusion(vol: np.ndarray, iterations: int,
                          edge_rel: float = DIFFUSION_EDGE_REL) -> np.ndarray:
    """Perona-Malik diffusion: each step moves a voxel toward its 6 neighbours by
    exp(-(d/k)²)·d, so noise-sized differences d smooth out and edges well above k stay.
    k is `edge_rel` robust sigmas of the input's neighbour differences (scale-free)."""
    x = np.array(vol, np.float32)
    d = np.diff(x[::2, ::2, ::2], axis=2)
    k = edge_rel * 1.4826 * float(np.median(np.abs(d - np.median(d))))
    if not k > 0:
        return x
    flux = np.empty_like(x)
    for _ in range(iterations):
        flux.fill(0.0)
        for ax in range(3):
            g = np.diff(x, axis=ax)  # x[i + 1] - x[i]
            g *= np.exp(-((g / k) ** 2))
            lo, hi = [slice(None)] * 3, [slice(None)] * 3
            lo[ax], hi[ax] = slice(0, -1), slice(1, None)
            flux[tuple(lo)] += g
            flux[tuple(hi)] -= g
        x += flux / 7.0  # a step under 1/6 keeps the explicit scheme stable in 3-D
    return x


def denoise(vol: np.ndarray, how: str, sigma_vox: float, voxel_A: float = 20.0,
            defocus_um: float = 3.0, amp_contrast: float = 0.07) -> np.ndarray:
    """The denoisers people run on WBP tomograms, cheaply: a Gaussian, a band limit
    (Butterworth low-pass), a 3³ median (edge-preserving), CTF deconvolution (`deconv`,
    strength = sigma_vox, at the run's estimated defocus), anisotropic diffusion
    (`diffusion`, DIFFUSION_ITERS_PER_SIGMA steps per voxel of sigma_vox), or none."""
    from scipy import ndimage

    if how == "diffusion":
        return anisotropic_diffusion(vol, max(1, round(DIFFUSION_ITERS_PER_SIGMA * sigma_vox)))
    if how == "deconv":
        w = deconv_filter(vol.shape, voxel_A, defocus_um, amp_contrast, sigma_vox)
        return np.fft.irfftn(np.fft.rfftn(vol) * w, s=vol.shape, axes=(0, 1, 2)).astype(np.float32)
    if how == "gaussian":
        return ndimage.gaussian_filter(vol, sigma_vox).astype(np.float32)
    if how == "median":
        return ndimage.median_filter(vol, size=3).astype(np.float32)
    if how == "lowpass":
        spec = np.fft.rfftn(vol)
        kz = np.fft.fftfreq(vol.shape[0])[:, None, None]
        ky = np.fft.fftfreq(vol.shape[1])[None, :, None]
        kx = np.fft.rfftfreq(vol.shape[2])[None, None, :]
        cut = 0.5 / (1 + sigma_vox)  # cycles per voxel
        spec /= 1 + (np.sqrt(kz**2 + ky**2 + kx**2) / cut) ** 8
        return np.fft.irfftn(spec, s=vol.shape, axes=(0, 1, 2)).astype(np.float32)
    return vol
