"""What a simulated tilt series draws per run (TiltRanges): the tilt scheme and step, CTF,
dose, ice, alignment residuals, the reconstruction and the denoiser, each from a range or a
list of choices; data_tools/tilt_series.py forms the series from a draw."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

DENOISERS = ("gaussian", "lowpass", "median", "none")
# "deconv" is the CTF deconvolution of Warp and IsoNet (the data portal's ctfdeconvolved
# tomograms); "diffusion" is Perona-Malik anisotropic diffusion, the classic edge-preserving
# smoother (IMOD's nad_eed_3d runs its kin). Both opt-in, so that runs simulated before they
# existed come out the same per seed.
ALL_DENOISERS = (*DENOISERS, "deconv", "diffusion")


# TiltRanges fields that are not (low, high) ranges: choices and flags.
NOT_RANGES = ("denoisers", "align_recentre", "halves", "form_bin", "scheme", "dose_weighting")
# The orders a tilt series is taken in (TiltRanges.scheme).
SCHEMES = ("dose_symmetric", "bidirectional")
# Choices a run's draw records only where they are not their default, so that records of
# runs made before a choice existed read as its default (recorded_choices).
RECORDED_IF_SET = ("form_bin", "scheme", "dose_weighting")
# Opt-in (low, high) ranges, drawn after every other field so that old seeds draw as before.
OPT_IN = ("sirt_iterations", "axis_error_deg", "rotation_jitter_deg")
NOT_DRAWN = NOT_RANGES + OPT_IN  # by draw()'s loop


@dataclass
class TiltRanges:
    """Per-run tilt-series physics, each drawn uniformly from (lo, hi)."""

    step_deg: tuple[float, float] = (2.0, 4.0)
    amp_contrast: tuple[float, float] = (0.07, 0.10)
    astig_um: tuple[float, float] = (0.0, 0.3)
    defocus_err_um: tuple[float, float] = (0.05, 0.3)  # phase flipping's estimate error
    dose_bfactor_A2: tuple[float, float] = (4.0, 20.0)  # B-factor added per tilt of dose
    mean_free_path_A: tuple[float, float] = (3000.0, 4500.0)  # inelastic, for ice attenuation
    align_sigma_vox: tuple[float, float] = (0.1, 1.0)  # residual shifts after alignment
    denoise_sigma_vox: tuple[float, float] = (0.5, 1.5)
    denoisers: tuple[str, ...] = DENOISERS  # one drawn per run
    # Alignment software fixes the reconstruction's frame: its residuals carry no net 3-D
    # translation (a fiducial model absorbs it), and particles are annotated where their
    # density reconstructs. Independent per-tilt shifts do not average out over a series:
    # at 1.25 voxels they moved a point's reconstruction by up to 0.7 voxel (14 Å at 20 Å),
    # so the picks sat off their density. True removes the translation the residuals
    # share (least squares over the tilts) from the reconstruction. Opt-in, so that runs
    # simulated before it existed come out the same per seed.
    align_recentre: bool = False
    # True: also write the frame-split half reconstructions (`wbp-even`, `wbp-odd`; every
    # tilt at half the dose) that cryoCARE-like denoisers train on. Their noise is drawn
    # from a stream of its own, so the other tomograms are the same per seed either way.
    halves: bool = False
    # (lo, hi) > 0: reconstruct with IMOD's "SIRT-like filter" (tilt's FakeSIRTiterations,
    # the look of SIRT/SART reconstructions) of that many iterations instead of plain WBP,
    # written as `sirt` instead of `wbp`. Opt-in and drawn last, so that runs simulated
    # before it existed come out the same per seed.
    sirt_iterations: tuple[float, float] = (0.0, 0.0)
    # (lo, hi) > 0: the tilt axis the reconstruction assumes is off the true one by this many
    # degrees in the detector plane (either sign), and each tilt's image is rotated by a
    # further residual of rotation_jitter_deg (standard deviation): alignment that fixed
    # the shifts but not the axis angle. Points blur in proportion to their distance from
    # the centre. Opt-in and drawn after sirt_iterations, like it.
    axis_error_deg: tuple[float, float] = (0.0, 0.0)
    rotation_jitter_deg: tuple[float, float] = (0.0, 0.0)
    # The grid the tilt series is imaged and reconstructed on, in binnings of the scene's
    # 10.012 Å: 2 (20.024 Å; seconds a run; every family before 2026-12-04) or 1 (the full
    # grid the competition's tomograms are reconstructed on, with the CTF's oscillations
    # past 20 Å's Nyquist and the noise that the picker's own 2x binning then folds down;
    # ~8x the time). The voxel-unit ranges above are stated on the 20 Å grid either way,
    # and a full-grid run gets the dose of its 20 Å twin (the noise p["snr"] sets there;
    # data_tools.simulate.simulate_tilt_run), so the two compare scene for scene.
    form_bin: int = 2
    # The order the tilts are taken in, so the dose each has had before it: "dose_symmetric"
    # (Hagen's scheme: 0, then ± alternating outwards) or "bidirectional" (0 up to +max,
    # then -step down to -max: the scheme before it, still in much archived data, where the
    # whole negative half carries the positive half's dose). Not drawn; recorded only where
    # not the default, like form_bin.
    scheme: str = "dose_symmetric"
    # True: each tilt is filtered by its exposure before the back-projection (the dose
    # weighting of Grant & Grigorieff 2015 that Warp, RELION and IMOD's mtffilter apply):
    # tilt i's high frequencies, which i tilts' dose has already damaged, are weighed down
    # by the B-factor that dose put on them, so later tilts add less noise where they carry
    # little signal. The noise is the one that gives the unweighted WBP p["snr"] (the same
    # dose). Not drawn; recorded only where not the default, like scheme.
    dose_weighting: bool = False

    def __post_init__(self):
        self.denoisers = tuple(self.denoisers)
        self.align_recentre = bool(self.align_recentre)
        self.halves = bool(self.halves)
        self.dose_weighting = bool(self.dose_weighting)
        if self.form_bin not in (1, 2):
            raise ValueError(f"form_bin {self.form_bin!r}: 1 (10 Å) or 2 (20 Å)")
        self.form_bin = int(self.form_bin)
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme {self.scheme!r}: choose from {list(SCHEMES)}")
        unknown = sorted(set(self.denoisers) - set(ALL_DENOISERS))
        if unknown or not self.denoisers:
            raise ValueError(f"denoisers {unknown or '[]'}: choose from {list(ALL_DENOISERS)}")
        for f in fields(self):
            if f.name not in NOT_RANGES:
                lo, hi = getattr(self, f.name)
                if not lo <= hi:
                    raise ValueError(f"{f.name}: low {lo} above high {hi}")
                setattr(self, f.name, (float(lo), float(hi)))
        for name in OPT_IN:
            if getattr(self, name)[0] < 0:
                raise ValueError(f"{name} {getattr(self, name)}: must be >= 0")

    def draw(self, rng: np.random.Generator) -> dict:
        v = {f.name: float(rng.uniform(*getattr(self, f.name))) for f in fields(self)
             if f.name not in NOT_DRAWN}
        v["denoiser"] = self.denoisers[int(rng.integers(len(self.denoisers)))]
        v["align_recentre"] = self.align_recentre
        lo, hi = self.sirt_iterations
        v["sirt_iterations"] = round(rng.uniform(lo, hi)) if hi > 0 else 0
        if self.axis_error_deg[1] > 0 or self.rotation_jitter_deg[1] > 0:
            v["axis_error_deg"] = float(rng.uniform(*self.axis_error_deg)
                                        * rng.choice([-1.0, 1.0]))
            v["rotation_jitter_deg"] = float(rng.uniform(*self.rotation_jitter_deg))
            v["rotation_seed"] = int(rng.integers(2**31))  # the per-tilt residuals' stream
        if self.halves:
            v["halves_seed"] = int(rng.integers(2**31))
        for f in fields(self):
            if f.name in RECORDED_IF_SET and getattr(self, f.name) != f.default:
                v[f.name] = getattr(self, f.name)
        return v

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TiltRanges:
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"unknown tilt-series fields {unknown}; known: {sorted(known)}")
        return cls(**d)


def recorded_choices(t: dict) -> dict:
    """RECORDED_IF_SET's choices of a drawn run `t` (TiltRanges.draw()), defaults filled in."""
    return {f.name: t.get(f.name, f.default) for f in fields(TiltRanges)
            if f.name in RECORDED_IF_SET}
