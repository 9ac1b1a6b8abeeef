"""Which axis a tomogram was tilted about, read from where its missing wedge lies.

The detector learnt on tomograms tilted about y (the convention of IMOD, AreTomo and the
data portal), whose missing wedge is the cone of directions steeper than the tilt range in
the kz-kx plane. A tomogram tilted about x has its wedge in the kz-ky plane and reads
differently (the network's features are anisotropic where the data are); its kept voxels
are handed to the network with y and x swapped, so it sees the geometry it learnt.
"""

from __future__ import annotations

import numpy as np

# A centred crop of at most this size (z, y, x voxels) is enough to see the wedge.
CROP_ZYX = (96, 192, 192)
# Spatial frequencies (cycles per voxel) compared: above the ice slab's and the crop's
# lowest, below where blur and CTF envelopes leave only noise.
BAND = (0.04, 0.25)
# Directions steeper than STEEP (|kz| / |k_axis|) lie in any wedge of a tilt range up to
# ±71.5°; shallower than SHALLOW relative to the other axis, in no wedge of a range from
# ±40°.
STEEP = 3.0
SHALLOW = 0.5
# Tilted about x when the power in the directions only an x-axis wedge removes is this
# many times smaller than in those only a y-axis wedge removes. Measured on 25 simulated
# full-size runs (fast and tilt-series physics, SNR 0.22-2.5, every held-out family, carbon
# and contamination): 0.003-0.21 tilted about y, 18-105 the same runs about x, 0.69-0.90
# with no wedge (the wedge-filled look), which stays "y". 0.08 s per run.
X_AXIS_RATIO = 3.0


def _window(n: int, device):
    import torch

    return torch.hann_window(n + 2, periodic=False, dtype=torch.float64,
                             device=device)[1:-1].float()


def wedge_power_ratio(vol_zyx: np.ndarray, device=None) -> float:
    """Mean power in the directions a y-axis wedge removes (and an x-axis one keeps) over
    the mean power in those an x-axis wedge removes (and a y-axis one keeps): well under 1
    for a tomogram tilted about y, well over 1 about x, near 1 with no wedge. The crop's
    FFT runs on `device` (default: the CPU); only the crop travels there."""
    import torch  # here: command lines check their input before torch loads

    vol = np.asarray(vol_zyx)
    lo = [max((s - c) // 2, 0) for s, c in zip(vol.shape, CROP_ZYX, strict=True)]
    crop = vol[tuple(slice(a, a + c) for a, c in zip(lo, CROP_ZYX, strict=True))]
    x = torch.as_tensor(np.ascontiguousarray(crop, np.float32), device=device)
    x = x - x.mean()
    nz, ny, nx = x.shape
    w = (_window(nz, x.device)[:, None, None] * _window(ny, x.device)[None, :, None]
         * _window(nx, x.device)[None, None, :])
    power = torch.fft.rfftn(x * w).abs().square()
    kz = torch.fft.fftfreq(nz, device=x.device).abs()[:, None, None]
    ky = torch.fft.fftfreq(ny, device=x.device).abs()[None, :, None]
    kx = torch.fft.rfftfreq(nx, device=x.device)[None, None, :]
    k = (kz**2 + ky**2 + kx**2).sqrt()
    band = (k > BAND[0]) & (k < BAND[1])
    only_y_wedge = band & (kz > STEEP * kx) & (kz < SHALLOW * ky)
    only_x_wedge = band & (kz > STEEP * ky) & (kz < SHALLOW * kx)
    p_y, p_x = power[only_y_wedge].double().mean(), power[only_x_wedge].double().mean()
    return float(p_y / p_x.clamp(min=1e-30))


def tilt_axis(vol_zyx: np.ndarray, device=None) -> tuple[str, float]:
    """("y" or "x", wedge_power_ratio): "x" only when the wedge clearly lies about x."""
    ratio = wedge_power_ratio(vol_zyx, device)
    return ("x" if ratio > X_AXIS_RATIO else "y"), ratio
