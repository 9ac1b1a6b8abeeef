"""Spectral whitening: a tomogram's radially averaged amplitude spectrum brought to one
reference (a Gaussian low-pass), whatever blur, B-factor, CTF envelope or denoiser made it.

Why: blur makes a beta-galactosidase as wide as a sharp thyroglobulin, and a network that
learnt sizes on sharp tomograms reads the blurred one's by the wrong scale. Dividing each
frequency shell by the tomogram's own amplitude there undoes whatever low-pass made the
tomogram (where signal, not noise, dominates the shell) and the reference imposes one fixed
resolution. Measured with radial profiles around annotated particles (a template of
beta-galactosidase minus thyroglobulin from one in-range run applied to 4 tilt series and
another run, d' between the two classes): 0.93 as the sparsifier read them before
(clip at 6 robust sigma), 1.57 unclipped, 2.44 whitened and unclipped.

The shell statistics are numpy on the host (N_SHELLS + 1 numbers); the FFTs run where the
volume is (scipy here, torch in data_tools/sparsify_torch.py).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_SHELLS = 64  # frequency shells from 0 to Nyquist; the corner beyond it is one more
# A shell's amplitude is floored at this share of its neighbourhood's mean (SMOOTH_SHELLS
# wide): CTF zeros that survive phase flipping would otherwise be divided by ~0 and ring.
FLOOR_SHARE = 0.25
SMOOTH_SHELLS = 7


def shell_of(q_cycles_per_vox):
    """Shell index (0..N_SHELLS) of spatial frequencies in cycles per voxel (numpy or torch)."""
    s = q_cycles_per_vox * (2 * N_SHELLS)
    s = s.astype(np.int64) if isinstance(s, np.ndarray) else s.long()
    return s.clip(0, N_SHELLS)


def rfft_frequency(shape: tuple[int, int, int]) -> np.ndarray:
    """|q| (cycles per voxel, float32) of each coefficient of an rfftn of `shape`."""
    fz = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None, None]
    fy = np.fft.fftfreq(shape[1]).astype(np.float32)[None, :, None]
    fx = np.fft.rfftfreq(shape[2]).astype(np.float32)[None, None, :]
    return np.sqrt(fz**2 + fy**2 + fx**2)


@lru_cache(maxsize=4)
def _shells(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(shell index of each rfftn coefficient, uint8, read-only; coefficients per shell) of
    `shape`. Cached: every tomogram of a project has the same shape, and building the index
    (a square root and a cast over millions of coefficients) cost more than the FFT."""
    shell = shell_of(rfft_frequency(shape)).astype(np.uint8 if N_SHELLS < 256 else np.int64)
    shell.flags.writeable = False
    counts = np.bincount(shell.ravel(), minlength=N_SHELLS + 1)
    counts.flags.writeable = False
    return shell, counts


# Planes of a spectrum whose power and gain are taken at once. Over the whole spectrum their
# float32 and float64 temporaries were 2.3 times the spectrum, a cellular tomogram's largest
# allocation after the bands (1.36 GB at 367 x 630 x 630 voxels).
SHELL_SLAB = 16


def _slabs(spec: np.ndarray) -> list[tuple[slice]]:
    return [(slice(z, z + SHELL_SLAB),) for z in range(0, spec.shape[0], SHELL_SLAB)]


def power_by_shell(spec: np.ndarray, shape: tuple[int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shell index of each coefficient, summed power per shell, coefficients per shell) of
    the rfftn `spec` of a volume of `shape`. The index and the counts are shared, read-only."""
    shell, counts = _shells(tuple(int(n) for n in shape))
    power_sum = np.zeros(N_SHELLS + 1)
    for part in _slabs(spec):
        s = spec[part]
        power_sum += np.bincount(shell[part].ravel(), weights=(s.real**2 + s.imag**2).ravel(),
                                 minlength=N_SHELLS + 1)
    return shell, power_sum, counts


def shell_gain(power_sum: np.ndarray, counts: np.ndarray, sigma_ref_vox: float,
               power: float = 1.0) -> np.ndarray:
    """Gain per shell: reference amplitude over the tomogram's (floored) mean amplitude to
    `power` (1: whitened; below 1, part of the way, as bench/separability.py compares).
    The DC shell gets 0: the mean carries no structure and is set by normalisation."""
    amp = np.sqrt(np.asarray(power_sum, np.float64) / np.maximum(counts, 1))
    kernel = np.ones(SMOOTH_SHELLS) / SMOOTH_SHELLS
    local = np.convolve(np.pad(amp, SMOOTH_SHELLS // 2, mode="edge"), kernel, mode="valid")
    amp = np.maximum(amp, FLOOR_SHARE * local)
    amp = np.maximum(amp, 1e-6 * max(float(amp.max()), 1e-30))
    q = (np.arange(N_SHELLS + 1) + 0.5) / (2 * N_SHELLS)
    gain = np.exp(-2.0 * (np.pi * sigma_ref_vox * q) ** 2) / amp**power
    gain[0] = 0.0
    return gain


def whiten(vol: np.ndarray, sigma_ref_vox: float, workers: int | None = None,
           power: float = 1.0) -> np.ndarray:
    """`vol` (float32, z y x) with its radial amplitude spectrum made a Gaussian of
    `sigma_ref_vox` (`power` < 1: part of the way, see shell_gain); float32, zero mean."""
    from scipy import fft

    spec = fft.rfftn(np.asarray(vol, np.float32), workers=workers)
    shell, power_sum, counts = power_by_shell(spec, vol.shape)
    gain = shell_gain(power_sum, counts, sigma_ref_vox, power).astype(np.float32)
    for part in _slabs(spec):
        spec[part] *= gain[shell[part]]
    return fft.irfftn(spec, s=vol.shape, workers=workers).astype(np.float32, copy=False)


def shell_amplitude(vol: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Mean amplitude per frequency shell (N_SHELLS + 1 numbers, float64) of `vol`."""
    from scipy import fft

    _, power_sum, counts = power_by_shell(
        fft.rfftn(np.asarray(vol, np.float32), workers=workers), vol.shape)
    return np.sqrt(power_sum / np.maximum(counts, 1))


def unit_profile(amp: np.ndarray) -> np.ndarray:
    """A shell amplitude profile scaled to unit RMS over shells 1..N_SHELLS-1 (the DC and the
    corner beyond Nyquist carry no structure): profiles of tomograms of any gain compare."""
    amp = np.asarray(amp, np.float64)
    return amp / max(float(np.sqrt(np.mean(amp[1:N_SHELLS] ** 2))), 1e-30)

