"""What each simulated run draws: the ranges of its physics (SimRanges) and one run's
values from them (draw_run_params).

Every field is drawn from the run's main random stream, in field order, except those with
a stream of their own (OWN_STREAM_FIELDS: hard negatives, the other shape families, the
per-class masses, the air-water interfaces), so that widening one of those leaves every
earlier seed's run as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from data_tools.hard_negatives import HARD_NEGATIVE_STREAM, draw_hard_negatives

# docs/formats.md: mean ground-truth counts per full-size training tomogram
MEAN_COUNTS = {"apo-ferritin": 53.6, "beta-amylase": 12.4, "beta-galactosidase": 16.0,
               "ribosome": 47.3, "thyroglobulin": 35.9, "virus-like-particle": 16.1}
HARD_NEGATIVE_FIELDS = ("carbon_edges", "contamination", "filaments")
SHAPE_STREAMS = {"alt_shape": 13, "blob_shape": 14, "procedural_shape": 15,
                 "compact_procedural_shape": 16}
# The per-class mass factors' stream (SimRanges.class_mass_log2).
CLASS_MASS_STREAM = 17
# The air-water interfaces' stream (SimRanges.interface_share).
INTERFACE_STREAM = 18
OWN_STREAM_FIELDS = (*HARD_NEGATIVE_FIELDS, *(f"{f}_share" for f in SHAPE_STREAMS),
                     "class_mass_log2", "interface_share")


@dataclass
class SimRanges:
    """Per-run physics, each drawn uniformly from (lo, hi) (log-uniform where noted)."""

    snr: tuple[float, float] = (0.3, 2.5)  # std of filtered signal / std of filtered noise
    defocus_um: tuple[float, float] = (1.0, 6.0)
    ctf_floor: tuple[float, float] = (0.1, 0.7)  # how far CTF correction restored low/zero bands
    bfactor_A2: tuple[float, float] = (50.0, 2200.0)
    blur_vox: tuple[float, float] = (0.2, 1.6)  # the mild "denoising" Gaussian
    ice_fraction: tuple[float, float] = (0.4, 0.95)  # slab thickness / Z
    crowding: tuple[float, float] = (0.6, 1.5)  # multiplier on particle counts
    distractors_per_particle: tuple[float, float] = (0.3, 1.5)
    membranes: tuple[int, int] = (0, 4)
    gold: tuple[int, int] = (0, 4)
    tilt_max_deg: tuple[float, float] = (45.0, 70.0)
    contrast_scale_log10: tuple[float, float] = (-4.0, 4.0)
    contrast_offset: tuple[float, float] = (-5.0, 5.0)  # in units of the output's std
    # Hard negatives (data_tools/hard_negatives.py), counts per run; drawn from their own
    # random stream, so (0, 0) leaves every earlier seed's run as it was.
    carbon_edges: tuple[int, int] = (0, 0)
    contamination: tuple[int, int] = (0, 0)
    filaments: tuple[int, int] = (0, 0)  # microtubules and actin (data_tools/filaments.py)
    # Share of particles drawn from the second shape family (data_tools/shapes_alt.py), from
    # its own stream too: (0, 0) leaves every earlier seed's run as it was.
    alt_shape_share: tuple[float, float] = (0.0, 0.0)
    # ...and from the third (shapes_alt.particle_components_blob: lumps of the class's size
    # and mass, for testing), its own stream again.
    blob_shape_share: tuple[float, float] = (0.0, 0.0)
    # ...and from the procedural generator (data_tools/shapes_procedural.py: a fresh random
    # assembly per particle with the class's symmetry, size, mass and hollowness).
    procedural_shape_share: tuple[float, float] = (0.0, 0.0)
    # ...and from it with each class's elongation kept to what real complexes show
    # (ClassPlan.max_elongation).
    compact_procedural_shape_share: tuple[float, float] = (0.0, 0.0)
    # log2 of a density factor drawn per run and class (its own stream; (0, 0): none): every
    # particle of the class is that much lighter or heavier. The hand-built models' masses
    # are guesses (their apo-ferritin, ribosome and capsid are 1.3-2x the second family's),
    # and a buffer's density moves every class's contrast apart; without it the network
    # learns each class's contrast as part of its look.
    class_mass_log2: tuple[float, float] = (0.0, 0.0)
    # Share of the proteins (labelled particles and unlabelled distractors) adsorbed at the
    # ice slab's two surfaces, the air-water interfaces, where thin ice of purified samples
    # gathers most of them; the others anywhere in the slab, as always. Its own stream:
    # (0, 0) leaves every earlier seed's run as it was.
    interface_share: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        for f in fields(self):
            pair = getattr(self, f.name)
            if len(pair) != 2 or not pair[0] <= pair[1]:
                raise ValueError(f"{f.name} {list(pair)}: give [low, high] with low <= high")

    @classmethod
    def from_dict(cls, d: dict) -> SimRanges:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown simulator parameters: {sorted(unknown)}")
        return cls(**{k: tuple(v) for k, v in d.items()})


def draw_run_params(ranges: SimRanges, rng: np.random.Generator,
                    seed: list[int] | None = None) -> dict:
    """The run's physics from `rng`; the hard negatives, if any, from their own stream of
    `seed`."""
    v = {}
    for f in fields(ranges):
        if f.name in OWN_STREAM_FIELDS:
            continue
        lo, hi = getattr(ranges, f.name)
        if f.name in ("membranes", "gold"):
            v[f.name] = int(rng.integers(lo, hi + 1))
        else:
            v[f.name] = float(rng.uniform(lo, hi))
    v["contrast_scale"] = 10.0 ** v.pop("contrast_scale_log10")
    counts = {name: getattr(ranges, name) for name in HARD_NEGATIVE_FIELDS}
    if any(hi > 0 for _, hi in counts.values()):
        if seed is None:
            raise ValueError("hard negatives need the run's seed for their own stream")
        v["hard_negatives"] = draw_hard_negatives(
            counts, np.random.default_rng([*seed, HARD_NEGATIVE_STREAM]))
    for family, stream in SHAPE_STREAMS.items():
        share = getattr(ranges, f"{family}_share")
        if share[1] > 0:
            if seed is None:
                raise ValueError(f"{family}_share needs the run's seed for its own stream")
            g = np.random.default_rng([*seed, stream])
            v[f"{family}_share"] = float(g.uniform(*share))
            v[f"{family}_seed"] = int(g.integers(2**31))
    lo, hi = ranges.class_mass_log2
    if (lo, hi) != (0.0, 0.0):
        if seed is None:
            raise ValueError("class_mass_log2 needs the run's seed for its own stream")
        g = np.random.default_rng([*seed, CLASS_MASS_STREAM])
        v["class_mass_scale"] = {name: float(2.0 ** g.uniform(lo, hi))
                                 for name in sorted(MEAN_COUNTS)}
    if ranges.interface_share[1] > 0:
        if seed is None:
            raise ValueError("interface_share needs the run's seed for its own stream")
        g = np.random.default_rng([*seed, INTERFACE_STREAM])
        v["interface_share"] = float(g.uniform(*ranges.interface_share))
        v["interface_seed"] = int(g.integers(2**31))
    return v
