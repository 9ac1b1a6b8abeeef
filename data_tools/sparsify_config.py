"""The sparsifier's settings (SparsifyConfig): which tomogram is read how, which voxels are
kept, and the feature channels they carry; the `sparsify:` section of a config YAML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from pathlib import Path

POLARITIES = ("auto", "dark", "bright")
TILT_AXES = ("auto", "y", "x")
FEATURE_NORMS = ("volume", "kept", "kept_bands")
WHITE_SUFFIX, RAW_SUFFIX = "_white", "_raw"  # the second group's feature names end so


@dataclass(frozen=True)
class SparsifyConfig:
    bin_factor: int = 2  # working spacing = voxel_spacing_A × bin_factor (20 Å)
    # Protein darker ("dark", the cryo-ET convention) or brighter than ice; "auto" decides per
    # tomogram from the skewness of its z projection (decide_polarity). Features always have
    # protein positive.
    polarity: str = "auto"
    select_sigma_A: float = 20.0  # Gaussian of the "smooth" channel
    # Score that ranks voxels for keeping: "smooth" alone, or "smooth+fine" (smooth plus the
    # finest band), which keeps small particles (apo-ferritin, beta-amylase) in blurred,
    # crowded tomograms: on out-of-range held-out runs it lifted their ceiling 0.57 -> 0.71.
    select_mode: str = "smooth+fine"
    keep_fraction: float = 0.025  # top fraction of voxels kept (adaptive per tomogram)
    # ...and at least this depth (Å) per (y, x) column. Particles come per area of the ice,
    # not per volume: a thin or z-cropped slab (32 slices of 20 Å: 640 Å) at 2.5 % kept only
    # particle cores, and the shipped checkpoint then found none of 44 ribosomes. A
    # full-size tomogram (92 slices: 1,840 Å x 2.5 % = 46 Å) is unchanged.
    keep_min_depth_A: float = 40.0
    # ...and the share is of at most this depth (0: no limit): a deeper tomogram keeps per
    # column what one this deep keeps. A reconstruction made thicker than its ice adds
    # slices of vacuum, and a share of the larger volume kept more noise voxels in the same
    # ice. 2,000 Å leaves the competition's (1,842 Å) and the simulator's unchanged.
    keep_max_depth_A: float = 2000.0
    dilate_vox: int = 0  # grow the kept set to bring a particle's neighbourhood along
    dog_sigmas_A: tuple[float, ...] = (30.0, 60.0, 100.0)  # band-pass centres (Å)
    clip_sigma: float = 6.0  # features clipped at this many robust sigmas
    # > 0: the tomogram's radial amplitude spectrum is first made a Gaussian of this sigma (Å)
    # (data_tools/spectrum.py): blur, B-factor and denoisers no longer change particle sizes.
    whiten_sigma_A: float = 0.0
    # With whitening on: False, the features come from the whitened tomogram alone; True, five
    # more channels from it (clipped at whiten_clip_sigma) follow the five usual ones, so the
    # network reads a low-SNR tomogram's denoised contrast and a blurred one's true sizes.
    whitened_channels: bool = False
    whiten_clip_sigma: float = 20.0
    # The other order: with whitening on and whitened_channels False, five more channels from
    # the unwhitened tomogram (clipped at raw_clip_sigma) follow the whitened five. The kept
    # voxels are still ranked on the whitened tomogram, so a checkpoint of whitened input
    # widens to this one (zero weights for the new five) and computes exactly what it did.
    raw_channels: bool = False
    raw_clip_sigma: float = 6.0
    tomogram_type: str = "denoised"  # preferred type (data_tools/tomo_input.py)
    type_fallback: bool = True  # another type when the run lacks the preferred one
    voxel_spacing_A: float = 10.0  # × bin_factor: the working spacing in Å
    source_spacing_A: float = 0.0  # read only this VoxelSpacing folder; 0: chosen by rule
    # How the kept voxels' features are scaled: "volume" (each channel to unit robust sigma
    # over the whole tomogram, the shipped checkpoint's) or "kept" (then each channel to
    # median 0, unit robust sigma over the kept voxels). With "volume" a noisier tomogram
    # hands the network weaker features (2.3 sigma instead of 4-7 on the all-shifted set) and
    # the network, which reads absolute contrast, misses its particles; "kept" removes that
    # per-tomogram gain. "kept_bands": as "kept", but the smooth and band-pass channels share
    # one scale (the smooth channel's), so their ratios — how much of the tomogram's
    # contrast each band holds, which blur and B-factor change — reach the network; "kept"
    # scales each band to unit size, whatever filter the tomogram went through.
    feature_norm: str = "volume"
    # The axis the tomogram was tilted about: "auto" reads it from the missing wedge
    # (data_tools/wedge.py); "y" or "x" as set. About x, the network reads the kept voxels
    # with y and x swapped (SparseVolume.tilted_about_x).
    tilt_axis: str = "auto"
    # Uneven ice or illumination shades a reconstruction across the field; the smooth channel
    # and so the kept voxels followed the shading (a ramp of ±0.5 sigma across x cost the
    # held-out tilt family 0.019, ±2 sigma 0.070). True: a quadratic surface in (y, x),
    # fitted to the tomogram's mean over z, is subtracted first where the field is at least
    # FLATTEN_MIN_FIELD_A wide (flattened).
    flatten: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> SparsifyConfig:
        d = dict(d)
        if "protein_dark" in d:  # before `polarity`: True was the only setting ever used
            d.setdefault("polarity", "auto" if d.pop("protein_dark") else "bright")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sparsify config keys: {sorted(unknown)}")
        if "dog_sigmas_A" in d:
            d["dog_sigmas_A"] = tuple(d["dog_sigmas_A"])
        cfg = cls(**d)
        if cfg.bin_factor not in (1, 2, 4):
            raise ValueError(f"bin_factor must be 1, 2 or 4, got {cfg.bin_factor}")
        if cfg.select_mode not in ("smooth", "smooth+fine"):
            raise ValueError(f"select_mode must be 'smooth' or 'smooth+fine', "
                             f"got {cfg.select_mode!r}")
        if not 0 < cfg.keep_fraction < 1:
            raise ValueError(f"keep_fraction must be in (0, 1), got {cfg.keep_fraction}")
        if cfg.whiten_sigma_A < 0 or cfg.clip_sigma <= 0:
            raise ValueError(f"whiten_sigma_A must be >= 0 and clip_sigma > 0, got "
                             f"{cfg.whiten_sigma_A} and {cfg.clip_sigma}")
        if cfg.whitened_channels and not cfg.whiten_sigma_A > 0:
            raise ValueError("whitened_channels needs whiten_sigma_A > 0")
        if cfg.raw_channels and (cfg.whitened_channels or not cfg.whiten_sigma_A > 0):
            raise ValueError("raw_channels needs whiten_sigma_A > 0 and whitened_channels off")
        if cfg.keep_min_depth_A < 0:
            raise ValueError(f"keep_min_depth_A must be >= 0, got {cfg.keep_min_depth_A}")
        if cfg.keep_max_depth_A < 0:
            raise ValueError(f"keep_max_depth_A must be >= 0 (0: no limit), got "
                             f"{cfg.keep_max_depth_A}")
        sigmas = [cfg.select_sigma_A, *cfg.dog_sigmas_A]
        if any(b <= a for a, b in pairwise(sigmas)):
            raise ValueError(f"select_sigma_A and dog_sigmas_A must increase, got {sigmas}")
        if cfg.feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, "
                             f"got {cfg.feature_norm!r}")
        if cfg.tilt_axis not in TILT_AXES:
            raise ValueError(f"tilt_axis must be one of {TILT_AXES}, got {cfg.tilt_axis!r}")
        if cfg.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, got {cfg.polarity!r}")
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dog_sigmas_A"] = list(self.dog_sigmas_A)
        if self.tilt_axis == "auto":
            del d["tilt_axis"]  # absent means auto: shards and checkpoints before it match
        if not self.raw_channels:
            del d["raw_channels"], d["raw_clip_sigma"]  # likewise
        return d

    @property
    def working_spacing_A(self) -> float:
        return self.voxel_spacing_A * self.bin_factor

    @property
    def channel_group_size(self) -> int:
        """Channels per group: [intensity, smooth, bands...]; whitened_channels or
        raw_channels adds a second group after the first."""
        return 2 + len(self.dog_sigmas_A)

    @property
    def feature_names(self) -> list[str]:
        names = ["norm", "smooth"] + [f"dog{s:g}A" for s in self.dog_sigmas_A]
        suffix = (WHITE_SUFFIX if self.whitened_channels else
                  RAW_SUFFIX if self.raw_channels else None)
        return names + [n + suffix for n in names] if suffix else names


def load_config(path: str | None) -> SparsifyConfig:
    """A YAML's sparsify settings (its `sparsify:` section, or the whole file), else the
    defaults."""
    if not path:
        return SparsifyConfig()
    import yaml

    d = yaml.safe_load(Path(path).read_text()) or {}
    return SparsifyConfig.from_dict(d.get("sparsify", d))
