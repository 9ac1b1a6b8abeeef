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


def _window(n: int) -> np.ndarray:
    return np.hanning(n + 2)[1:-1].astype(np.float32)


def _power_numpy(x: np.ndarray) -> np.ndarray:
    import scipy.fft

    # One worker: the reader runs this beside the network's pass on the main thread.
    return np.square(np.abs(scipy.fft.rfftn(x, workers=1)))


def _power_torch(x: np.ndarray, device) -> np.ndarray:
    import torch  # here: command lines check their input before torch loads

    t = torch.as_tensor(x, device=device)
    return torch.fft.rfftn(t).abs().square().cpu().numpy()


def wedge_power_ratio(vol_zyx: np.ndarray, device=None) -> float:
    """Mean power in the directions a y-axis wedge removes (and an x-axis one keeps) over
    the mean power in those an x-axis wedge removes (and a y-axis one keeps): well under 1
    for a tomogram tilted about y, well over 1 about x, near 1 with no wedge. The crop's
    FFT runs with numpy on the CPU (`device` None or "cpu"), else with torch on `device`
    (only the crop travels there). numpy on the CPU because the reader thread runs this:
    a thread that has run a parallel torch op slows the network's passes on the main
    thread while it lives (README, *The reader thread*)."""
    vol = np.asarray(vol_zyx)
    lo = [max((s - c) // 2, 0) for s, c in zip(vol.shape, CROP_ZYX, strict=True)]
    crop = vol[tuple(slice(a, a + c) for a, c in zip(lo, CROP_ZYX, strict=True))]
    x = crop.astype(np.float32)
    x -= x.mean(dtype=np.float64)
    nz, ny, nx = x.shape
    x *= (_window(nz)[:, None, None] * _window(ny)[None, :, None]
          * _window(nx)[None, None, :])
    on_cpu = device is None or str(device) == "cpu"
    power = _power_numpy(x) if on_cpu else _power_torch(x, device)
    kz = np.abs(np.fft.fftfreq(nz))[:, None, None]
    ky = np.abs(np.fft.fftfreq(ny))[None, :, None]
    kx = np.fft.rfftfreq(nx)[None, None, :]
    k = np.sqrt(kz**2 + ky**2 + kx**2)
    band = (k > BAND[0]) & (k < BAND[1])
    only_y_wedge = band & (kz > STEEP * kx) & (kz < SHALLOW * ky)
    only_x_wedge = band & (kz > STEEP * ky) & (kz < SHALLOW * kx)
    p_y = power[only_y_wedge].mean(dtype=np.float64)
    p_x = power[only_x_wedge].mean(dtype=np.float64)
    return float(p_y / max(p_x, 1e-30))


def tilt_axis(vol_zyx: np.ndarray, device=None) -> tuple[str, float]:
    """("y" or "x", wedge_power_ratio): "x" only when the wedge clearly lies about x."""
    ratio = wedge_power_ratio(vol_zyx, device)
    return ("x" if ratio > X_AXIS_RATIO else "y"), ratio
