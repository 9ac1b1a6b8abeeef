"""Training data: which runs train and validate, their shards with targets, and random
sparse crops with augmentation."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from data_tools.appearance import AppearanceRanges, randomise_appearance
from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from data_tools.run_names import runs_named
from data_tools.shards import read_shard, shard_matches, shard_path, write_shard
from data_tools.sparsify import read_input, second_group_mask, shard_or_sparsify, sparsify
from data_tools.sparsify_config import SparsifyConfig
from data_tools.truth_user import scoring_truth
from sparse_det.config import Config, ConfigError, TrainConfig
from sparse_det.losses import unknown_bits_of
from sparse_det.share_levels import ShareLevels, share_levels, wide_config, wide_shards_dir
from sparse_det.structures import SWAP_YX, SparseBatch, SparseVolume, swap_yx
from sparse_det.targets import make_targets, particle_fractions

# Share of crops centred near a particle (of a class drawn uniformly); the rest fall anywhere.
PARTICLE_FOCUS = 0.8
# A focused crop's centre is moved from the particle by up to this fraction of the crop size,
# so particles are seen at every position in a crop, edges included.
CROP_JITTER = 0.3


@dataclass
class RunSample:
    sv: SparseVolume
    labels: np.ndarray  # [N] int64, 0 = background
    offsets: np.ndarray  # [N,3] float32 voxels
    centers_zyx: np.ndarray  # [M,3] ground-truth centres, working voxels
    center_class: np.ndarray  # [M] 1..K
    truth_xyz_A: dict[str, np.ndarray]
    # Set where training reads the run at several kept shares (train.keep_share_range): sv
    # then holds the largest share's unstandardised features.
    levels: ShareLevels | None = None
    # Bit k set: network class k is not annotated in this run; bit PARTLY_SHIFT + k: picked
    # in part (CopickProject.training_truth). A background voxel here may be one of it
    # (losses.detection_losses). truth_xyz_A is then the scoring truth (read_truth).
    unknown_bits: int = 0


class Crop(NamedTuple):
    """One training crop: voxels (crop frame), features, targets, and per voxel the classes
    it may also be (RunSample.unknown_bits on background voxels, else 0)."""
    coords_zyx: np.ndarray
    feats: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    unknown_bits: np.ndarray


def in_network_frame(r: RunSample) -> RunSample:
    """`r` as the network reads it: a run tilted about x with y and x swapped (voxels,
    offsets and centres), as predict_sparse hands it over; any other run as it is."""
    if not r.sv.tilted_about_x:
        return r
    return replace(r, sv=swap_yx(r.sv), offsets=r.offsets[:, SWAP_YX],
                   centers_zyx=r.centers_zyx[:, SWAP_YX])


def annotated_project(cfg: Config) -> CopickProject:
    """The config's project, its ground truth the picks cfg.data.truth_user names
    (CopickProject.truth_files)."""
    return CopickProject(cfg.data.project, truth_user=cfg.data.truth_user or None)


def split_runs(cfg: Config, project: CopickProject) -> tuple[list[str], list[str]]:
    """(training runs, validation runs): the config's lists, else of the annotated runs
    (CopickProject.annotated_runs) the last `n_val` validate and the others train. A list
    names runs or patterns (`val_runs: ["TS_6*"]`: run_names.runs_named, which names a
    run no pattern or name finds)."""
    train, val = ((runs_named([project], names)[0] if names else [])
                  for names in (cfg.data.train_runs, cfg.data.val_runs))
    listed = train + val
    unannotated = sorted(set(listed) - set(project.annotated_runs(listed)))
    if unannotated:
        raise ValueError(f"{project.path}: runs {unannotated} have no ground-truth picks "
                         "(python -m data_tools.info shows whose picks are read)")
    runs = listed if val and train else project.annotated_runs()
    val = val or runs[-cfg.data.n_val:]
    train = train or [r for r in runs if r not in val]
    if not train:
        raise ValueError(f"{project.path}: no training runs left (runs {runs}, val {val})")
    return train, val


def truth_in_voxels(sv: SparseVolume, truth_xyz_A: dict[str, np.ndarray],
                    particles: ParticleTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres [M,3] working voxels, classes [M] 1..K, radii [M] voxels)."""
    cs, ks, rs = [np.zeros((0, 3))], [np.zeros(0, np.int64)], [np.zeros(0)]
    for name, pts in truth_xyz_A.items():
        cs.append(xyz_A_to_zyx_vox(pts, sv.voxel_size_A, sv.origin_A))
        ks.append(np.full(len(pts), particles.class_index(name), np.int64))
        rs.append(np.full(len(pts), particles[name].radius_A / sv.voxel_size_A))
    return np.concatenate(cs), np.concatenate(ks), np.concatenate(rs)


def class_fractions(project: CopickProject, fractions: dict) -> dict[int, float]:
    """targets.class_radius_fraction as {network class: fraction}, or a ConfigError naming
    the project's particles or the fraction that is not a number above 0."""
    by_class = {}
    for name, fraction in fractions.items():
        if name not in project.particles:
            raise ConfigError(f"targets.class_radius_fraction names {name!r}, which "
                              f"{project.path} does not have; its particles: "
                              f"{', '.join(project.particles.names)}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not fraction > 0:
            raise ConfigError(f"targets.class_radius_fraction: {name}: {fraction!r} is not a "
                              "share of its radius above 0")
        by_class[project.particles.class_index(name)] = float(fraction)
    return by_class


def appearance_variant(project: CopickProject, shards_dir: str | Path, cfg: SparsifyConfig,
                       run: str, variant: int, seed: int,
                       ranges: AppearanceRanges | None = None) -> SparseVolume:
    """The run sparsified after appearance randomisation number `variant` (1, 2, ...),
    from its shard when one was made with the same config, ranges, seed and variant."""
    ranges = ranges or AppearanceRanges()
    folder = Path(shards_dir) / f"appearance_{ranges.key()}_seed{seed}_v{variant}"
    path = shard_path(folder, run)
    if shard_matches(path, cfg.to_dict()):
        return read_shard(path)
    rng = np.random.default_rng([seed, variant, zlib.crc32(run.encode())])
    params = ranges.draw(rng)
    # The variant's polarity is known: the run's own, flipped when the draw flipped it.
    # Estimating it again would mislabel the noisiest copies (2 of 57 at noise up to 2.5σ),
    # and a copy read inverted teaches the network its features upside down.
    original = shard_or_sparsify(project, run, cfg, shards_dir, write=True).input["polarity"]
    polarity = {"dark": "bright", "bright": "dark"}[original] if params["flip"] else original
    tomo, info = read_input(project, run, cfg)
    vol = randomise_appearance(tomo.data, tomo.voxel_size_A, params)
    sv = sparsify(vol, tomo.voxel_size_A, replace(cfg, polarity=polarity), run,
                  origin_A=tomo.origin_A, input_info=info | {"appearance": params}, own=True)
    sv.config = cfg.to_dict()  # the config it stands for: its shard matches that one
    sv.input["polarity_by"] = "the run's, through the appearance draw"
    write_shard(sv, folder)
    return sv


def load_run_sample(project: CopickProject, shards_dir: str | Path, cfg: SparsifyConfig,
                    run: str, radius_fraction: float, *, variant: int = 0,
                    seed: int = 0, ranges: AppearanceRanges | None = None,
                    class_radius_fraction: dict[str, float] | None = None) -> RunSample:
    """The run's shard (sparsified and written when none matches `cfg`) with its targets
    (`class_radius_fraction`: {particle name: fraction} where a class's differs from
    `radius_fraction`); `variant` > 0: an appearance-randomised copy of it
    (appearance_variant)."""
    sv = (appearance_variant(project, shards_dir, cfg, run, variant, seed, ranges) if variant
          else shard_or_sparsify(project, run, cfg, shards_dir, write=True))
    truth, unknown = project.training_truth(run)
    centers, classes, radii = truth_in_voxels(sv, truth, project.particles)
    by_class = class_fractions(project, class_radius_fraction or {})
    labels, offsets = make_targets(sv.coords_zyx, centers, classes, radii,
                                   radius_fraction=particle_fractions(classes, radius_fraction,
                                                                      by_class))
    unannotated = project.unannotated_particles(run)
    bits = unknown_bits_of(project.particles, unannotated,
                           [n for n in unknown if n not in unannotated])
    return RunSample(sv, labels, offsets, centers, classes, scoring_truth(truth, unknown),
                     unknown_bits=bits)


def load_samples(cfg: Config, project: CopickProject, runs: list[str], *,
                 variants: int = 0, share_range: tuple[float, float] | None = None
                 ) -> list[RunSample]:
    """Each run's sample, and `variants` appearance-randomised copies of each (drawn from
    cfg.data.appearance's ranges). `share_range` (lo, hi): each is read at several kept
    shares (sparse_det/share_levels.py)."""
    ranges = appearance_ranges(cfg.data.appearance)
    class_fractions(project, cfg.targets.class_radius_fraction)  # before any run is read
    sp, shards = cfg.sparsify, cfg.data.shards
    if share_range:
        sp, shards = wide_config(sp, share_range), wide_shards_dir(shards, share_range)
    samples = [load_run_sample(project, shards, sp, r, cfg.targets.radius_fraction,
                               variant=v, seed=cfg.train.seed, ranges=ranges,
                               class_radius_fraction=cfg.targets.class_radius_fraction)
               for r in runs for v in range(variants + 1)]
    if share_range:
        samples = [replace(s, levels=share_levels(s.sv, cfg.sparsify, share_range))
                   for s in samples]
    return samples


def appearance_ranges(overrides: dict) -> AppearanceRanges:
    """AppearanceRanges with a config's overrides; an unknown name is a ConfigError."""
    known = {f.name for f in fields(AppearanceRanges)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"data.appearance: unknown fields {unknown} (known: {sorted(known)})")
    bad = {k: v for k, v in overrides.items()
           if k.endswith("_probability")
           and not (isinstance(v, (int, float)) and 0 <= v <= 1)}
    if bad:
        raise ConfigError(f"data.appearance: probabilities must lie in [0, 1], got {bad}")
    if overrides.get("learnt_denoiser_probability"):
        weights = overrides.get("learnt_denoiser")
        if not weights:
            raise ConfigError("data.appearance: learnt_denoiser_probability needs "
                              "learnt_denoiser (a general denoiser's weights: python -m "
                              "data_tools.n2n)")
        if not Path(weights).is_file():
            raise ConfigError(f"data.appearance.learnt_denoiser {weights}: no such file "
                              f"(make it: python -m data_tools.n2n --project P --out it)")
    return AppearanceRanges(**{k: v if k.endswith("_probability") or k == "learnt_denoiser"
                               else tuple(v) for k, v in overrides.items()})


class CropSampler:
    """Random crops of the kept voxels. Most crops are centred near a particle of a class
    drawn uniformly, so rare classes are seen as often as common ones. Flips in x, y and z
    keep the missing wedge (about the y tilt axis, symmetric in z) where it is; a flip
    mirrors the voxels and their offsets together, so every offset still points at its
    particle's centre. Runs tilted about x are seen with y and x swapped (in_network_frame),
    as inference reads them."""

    def __init__(self, runs: list[RunSample], train: TrainConfig, *, seed: int):
        if not runs:
            raise ValueError("no training runs")
        self.runs = [in_network_frame(r) for r in runs]
        self.crop = np.asarray(train.crop_zyx)
        self.flip_xy, self.flip_z = train.flip_xy, train.flip_z
        self.jitter = train.intensity_jitter
        self.group_dropout = train.channel_group_dropout
        self.second = second_group_mask(runs[0].sv.feature_names)
        self.rng = np.random.default_rng(seed)

    def _origin(self, r: RunSample, crop: np.ndarray) -> np.ndarray:
        shape = np.asarray(r.sv.shape_zyx)
        if len(r.centers_zyx) and self.rng.random() < PARTICLE_FOCUS:
            classes = np.unique(r.center_class)
            k = self.rng.choice(classes)
            i = self.rng.choice(np.flatnonzero(r.center_class == k))
            centre = r.centers_zyx[i] + self.rng.uniform(-CROP_JITTER, CROP_JITTER, 3) * crop
        else:
            centre = self.rng.uniform(0, 1, 3) * shape
        return np.clip(np.round(centre - crop / 2), 0, np.maximum(shape - crop, 0)).astype(int)

    def sample(self) -> Crop:
        r = self.runs[self.rng.integers(len(self.runs))]
        crop = np.minimum(self.crop, r.sv.shape_zyx)
        o = self._origin(r, crop)
        inside = np.all((r.sv.coords_zyx >= o) & (r.sv.coords_zyx < o + crop), axis=1)
        if r.levels is not None:
            level = self.rng.integers(len(r.levels.counts))
            inside, feats = r.levels.read(r.sv.feats, inside, level)
        else:
            feats = r.sv.feats[inside].copy()
        coords = r.sv.coords_zyx[inside] - o
        labels, offsets = r.labels[inside], r.offsets[inside].copy()
        axes = ((1, 2) if self.flip_xy else ()) + ((0,) if self.flip_z else ())
        for ax in axes:
            if self.rng.random() < 0.5:
                coords[:, ax] = crop[ax] - 1 - coords[:, ax]
                offsets[:, ax] *= -1
        if self.jitter:
            c = feats.shape[1]
            feats = feats * (1 + self.rng.uniform(-self.jitter, self.jitter, c)).astype(
                np.float32) + self.rng.normal(0, self.jitter / 2, c).astype(np.float32)
        if self.second.any() and self.rng.random() < self.group_dropout:
            feats[:, self.second if self.rng.random() < 0.5 else ~self.second] = 0.0
        return Crop(coords, feats, labels, offsets,
                    np.where(labels == 0, np.int64(r.unknown_bits), np.int64(0)))

    def batch(self, batch_size: int
              ) -> tuple[SparseBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crops as one batch: (voxels and features, labels, offsets, unknown bits)."""
        items = [self.sample() for _ in range(batch_size)]
        b = SparseBatch.from_numpy([i.coords_zyx for i in items], [i.feats for i in items],
                                   tuple(int(s) for s in self.crop))
        labels = torch.from_numpy(np.concatenate([i.labels for i in items]))
        offsets = torch.from_numpy(np.concatenate([i.offsets for i in items]))
        unknown = torch.from_numpy(np.concatenate([i.unknown_bits for i in items]))
        return b, labels, offsets, unknown
