"""Appearance randomisation of a dense tomogram before it is sparsified, for training.

A detector trained on one simulator learns that simulator's look: its noise colour, its
band balance, its contrast. Real tomograms differ in all of them (the microscope's CTF and
dose, the reconstruction's filter, the denoiser people chose). Each variant here re-weights
the frequency bands, blurs, adds white or coloured noise, may median-filter the noisy result
as an edge-preserving denoiser would, bends the grey levels with a sign-preserving gamma and
may flip the polarity — all drawn from one seed, so a variant is reproducible. A share of
the copies may instead go through a learnt denoiser (a general Noise2Noise network,
data_tools/n2n.py): the look of cryoCARE's or Topaz-Denoise's output, which no filter
has. Particle positions never move: the ground truth stays valid.

A network that reads whitened tomograms (sparsify.whiten_sigma_A) sees little of the band
gains and the blur: whitening divides each frequency shell by the tomogram's own amplitude,
which nearly cancels any isotropic linear filter (docs/experiments.md, *Why denoising `wbp`
hardly matters*). The noise, the median, the gamma and the polarity are what reach it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class AppearanceRanges:
    """Each drawn uniformly from (lo, hi); gains log-uniformly."""

    band_gain: tuple[float, float] = (0.5, 2.0)  # per band of BANDS_A
    blur_vox: tuple[float, float] = (0.0, 1.2)  # Gaussian, working voxels
    noise_rel: tuple[float, float] = (0.0, 1.5)  # added noise std / the volume's robust sigma
    noise_blur_vox: tuple[float, float] = (0.0, 1.5)  # 0: white noise; else coloured by this
    gamma: tuple[float, float] = (0.7, 1.4)  # sign(x)|x|^gamma on the normalised volume
    flip_probability: float = 0.5  # protein bright instead of dark
    # A median filter after the noise, as an edge-preserving denoiser runs on a noisy
    # reconstruction: this share of the variants, each with one of MEDIAN_FOOTPRINTS.
    # 0 draws nothing, so ranges made before it existed draw and name what they did.
    median_probability: float = 0.0
    # A learnt denoiser after the noise instead of the median, as cryoCARE or Topaz-Denoise
    # run on a reconstruction: this share of the variants goes through the general
    # Noise2Noise network saved at `learnt_denoiser` (data_tools/n2n.py; made by `python -m
    # data_tools.n2n`). 0 draws nothing, as for the median.
    learnt_denoiser_probability: float = 0.0
    learnt_denoiser: str = ""

    def key(self) -> str:
        """A short name for these ranges (shard folders of variants carry it)."""
        d = asdict(self)
        if not self.median_probability:
            del d["median_probability"]
        if not self.learnt_denoiser_probability:
            del d["learnt_denoiser_probability"], d["learnt_denoiser"]
        else:  # retrained weights at the same path must not reuse the old copies' shards
            d["learnt_denoiser"] += "@" + file_digest(self.learnt_denoiser)
        text = json.dumps(d, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]

    def draw(self, rng: np.random.Generator) -> dict:
        p = {}
        for f in fields(self):
            if f.name in OPT_IN:
                continue  # drawn last: the draws before them stay what they were
            if f.name == "flip_probability":
                p["flip"] = bool(rng.random() < self.flip_probability)
            elif f.name == "band_gain":
                lo, hi = np.log(self.band_gain)
                p["band_gain"] = [float(g) for g in np.exp(rng.uniform(lo, hi, len(BANDS_A)))]
            else:
                p[f.name] = float(rng.uniform(*getattr(self, f.name)))
        p["noise_seed"] = int(rng.integers(2**31))
        if self.median_probability:
            on = rng.random() < self.median_probability
            p["median"] = str(rng.choice(sorted(MEDIAN_FOOTPRINTS))) if on else "none"
        if self.learnt_denoiser_probability:
            on = rng.random() < self.learnt_denoiser_probability
            p["learnt_denoiser"] = self.learnt_denoiser if on else ""
            if on:
                p["median"] = "none"  # one denoiser per copy
                p["learnt_denoiser_digest"] = file_digest(self.learnt_denoiser)
        return p


# Fields drawn after the others, in this order, only when their probability is set.
OPT_IN = ("median_probability", "learnt_denoiser_probability", "learnt_denoiser")


def _cross() -> np.ndarray:
    f = np.zeros((3, 3, 3), bool)
    f[1, 1, :] = f[1, :, 1] = f[:, 1, 1] = True
    return f


# The median filters drawn from, on the working grid (20 Å): the centre and its 6 face
# neighbours (mild), or the 3³ cube (the simulator's `median` denoiser, denoisers.denoise).
MEDIAN_FOOTPRINTS = {"cross": _cross(), "cube": np.ones((3, 3, 3), bool)}


# Band edges (Å, wavelength) for the gains, finest first: under 60 Å (noise and fine detail;
# a 20 Å grid's Nyquist is 40 Å), 60-120 Å and 120-240 Å (particles: 120-300 Å across),
# over 240 Å (ice gradients, vesicles).
BANDS_A = (60.0, 120.0, 240.0, np.inf)


def robust_sigma(vol: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 × median absolute deviation) of a subsample: a scale that particles
    and gold barely move."""
    sample = vol[::2, ::3, ::3].ravel()
    med = float(np.median(sample))
    return med, max(1.4826 * float(np.median(np.abs(sample - med))), 1e-12)


def reweight_bands(vol: np.ndarray, gains: list[float], voxel_size_A: float) -> np.ndarray:
    """Multiplies each band (edges BANDS_A, by wavelength) by its gain, with smooth steps so
    no ringing is made; the mean is kept."""
    import scipy.fft

    spec = scipy.fft.rfftn(vol, workers=-1)
    freq = [np.fft.fftfreq(n) for n in vol.shape[:2]] + [np.fft.rfftfreq(vol.shape[2])]
    k = np.sqrt(freq[0][:, None, None] ** 2 + freq[1][None, :, None] ** 2
                + freq[2][None, None, :] ** 2) / voxel_size_A  # cycles per Å
    wavelength = 1.0 / np.maximum(k, 1e-9)
    weight = np.full(k.shape, gains[-1], np.float32)
    # From coarse to fine: below each edge's wavelength the finer band's gain takes over,
    # through a logistic step one octave wide.
    for edge, g in zip(BANDS_A[-2::-1], gains[-2::-1], strict=True):
        step = 1.0 / (1.0 + np.exp(4.0 * np.log2(wavelength / edge)))
        weight = weight * (1 - step) + g * step
    weight[0, 0, 0] = 1.0
    return scipy.fft.irfftn(spec * weight, s=vol.shape, workers=-1).astype(np.float32)


def randomise_appearance(vol: np.ndarray, voxel_size_A: float, params: dict) -> np.ndarray:
    """A new look for the tomogram (z,y,x) from `params` (AppearanceRanges.draw)."""
    from scipy import ndimage

    med, sigma = robust_sigma(vol)
    x = ((vol - med) / sigma).astype(np.float32)
    x = reweight_bands(x, params["band_gain"], voxel_size_A)
    if params["blur_vox"] > 0.05:
        x = ndimage.gaussian_filter(x, params["blur_vox"], truncate=3.0)
    _, s = robust_sigma(x)
    noise = np.random.default_rng(params["noise_seed"]).standard_normal(x.shape,
                                                                        dtype=np.float32)
    if params["noise_blur_vox"] > 0.05:
        noise = ndimage.gaussian_filter(noise, params["noise_blur_vox"], truncate=3.0)
    noise *= params["noise_rel"] * s / max(float(noise.std()), 1e-12)
    x += noise
    if params.get("median", "none") != "none":
        x = ndimage.median_filter(x, footprint=MEDIAN_FOOTPRINTS[params["median"]])
    if params.get("learnt_denoiser"):
        x = _learnt_denoiser_output(x, voxel_size_A, params["learnt_denoiser"])
    _, s = robust_sigma(x)
    x = np.sign(x) * (np.abs(x) / s) ** params["gamma"]
    if params["flip"]:
        np.negative(x, out=x)
    return x.astype(np.float32)


def file_digest(path: str) -> str:
    """The first 12 hex digits of the file's SHA-1 ('missing' when there is none)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return "missing"
    stat = p.stat()
    return _digest(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    from pathlib import Path

    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


@lru_cache(maxsize=2)
def general_denoiser(path: str):
    """The general denoiser at `path`, loaded once per process (every copy reuses it)."""
    from data_tools.n2n import load_general

    return load_general(path)


def _learnt_denoiser_output(x: np.ndarray, voxel_size_A: float, path: str) -> np.ndarray:
    from data_tools.n2n import denoise_general

    return denoise_general(general_denoiser(path), x, voxel_size_A)
