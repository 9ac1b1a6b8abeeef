"""One typed config tree, validated at load: unknown keys fail, defaults live here only.

Paths in a config file are resolved relative to the project root (see load_config), never the
working directory. A config file may also hold sections that other layers own and validate
(OWNED_ELSEWHERE: `ray:` belongs to ray_jobs/config.py); the library passes them by unread.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.sparsify_config import SparsifyConfig


class ConfigError(ValueError):
    pass


OWNED_ELSEWHERE = ("ray",)  # top-level sections read by ray_jobs, not by the library


@dataclass
class SimulateSpec:
    """A simulated project made when `data.project` is missing (smoke tests, demos)."""

    runs: int = 0  # 0: never simulate; a missing project is an error
    shape_zyx: tuple[int, int, int] = (64, 192, 192)  # 10 Å voxels
    seed: int = 0
    ranges: dict = field(default_factory=dict)  # SimRanges overrides; empty: the wide defaults


@dataclass
class DataConfig:
    project: str = "demo_data/project"  # copick project (or config JSON) with ground truth
    # Whose picks are the ground truth ("USER" or "USER:SESSION"); empty: the curation
    # user's, else people's, each particle one user's (data_tools.project_picks, truth_files).
    truth_user: str = ""
    shards: str = "demo_data/shards"  # sparse shards (made on demand when missing)
    # Runs or patterns ("TS_6*"; run_names.runs_named)
    train_runs: list[str] = field(default_factory=list)  # empty: all runs but val_runs
    val_runs: list[str] = field(default_factory=list)  # empty: the last `n_val` runs
    n_val: int = 2
    # Appearance-randomised copies of each training run (data_tools/appearance.py): band
    # gains, blur, added noise, gamma, polarity. Each is sparsified once and kept as a shard.
    appearance_variants: int = 0
    appearance: dict = field(default_factory=dict)  # AppearanceRanges overrides; empty: defaults
    simulate: SimulateSpec = field(default_factory=SimulateSpec)


@dataclass
class ModelConfig:
    channels: tuple[int, ...] = (16, 32, 64, 64)  # per level; len-1 stride-2 downsamplings
    blocks_per_level: int = 1


@dataclass
class TargetConfig:
    radius_fraction: float = 1.0  # voxels within this fraction of the radius are foreground
    # {particle name: fraction} for the classes whose fraction differs (others: the one above)
    class_radius_fraction: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    background_weight: float = 0.25
    focal_gamma: float = 1.0
    offset_weight: float = 1.0
    # Per particle name, the weight of its voxels in the class loss (others: 1). Per-voxel
    # cross-entropy gives each class a share of the gradient by its voxel count: a ribosome
    # has ~25 times a beta-galactosidase's voxels, so small complexes are learnt last.
    class_weights: dict = field(default_factory=dict)
    # A particle picked in part in a run (CopickProject.partly_picked): the share of its
    # copies there taken to be unpicked, the weight of p(particle) in a background voxel's
    # partial-label term (losses.detection_losses). 1: no background voxel of such a run
    # teaches background; 0.5, chosen before measuring: "about half picked".
    unpicked_share: float = 0.5
    # Learning without forgetting: the weight of KL(init ‖ model) between the class
    # probabilities of train.init_checkpoint (frozen: train_state._teacher) and of the model
    # on every voxel of every crop (losses.distill_loss). 0: off. A fine-tune on a few
    # runs can learn a rare class's look in those runs as background elsewhere.
    distill_weight: float = 0.0


@dataclass
class TrainConfig:
    steps: int = 3000
    steps_per_epoch: int = 250
    batch_size: int = 2
    crop_zyx: tuple[int, int, int] = (64, 128, 128)  # at the working resolution
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # fp16 autocast on CUDA. Off: under torch 2.11 autocast hands spconv 2.3 fp16 features
    # with fp32 weights and its implicit GEMM finds no kernel (seen on an H200).
    amp: bool = False
    num_threads: int = 0  # torch CPU threads; 0: leave torch's default
    flip_xy: bool = True  # random flips in x and y (keep the missing wedge about y)
    flip_z: bool = True  # random flips in z (the wedge is symmetric in z)
    intensity_jitter: float = 0.25
    # With two groups of channels (sparsify.whitened_channels or raw_channels): the share of
    # crops that lose one, the first five or the second (set to 0, the kept voxels' median),
    # so the network learns to read each on its own instead of leaning on the one it started
    # with.
    channel_group_dropout: float = 0.0
    out_dir: str = "runs/default"
    time_budget_s: float = 0.0  # stop after this many seconds (0: no limit)
    patience: int = 0  # stop after this many epochs without a better val F4 (0: never)
    init_checkpoint: str = ""  # start from these weights (fine-tuning), e.g. the shipped one
    # {project class: init checkpoint class} where the names' rules cannot pair them
    # (sparse_det/class_match.py); "" for a class the checkpoint does not have.
    class_map: dict = field(default_factory=dict)
    # [lo, hi]: each crop reads its run kept at a share drawn from lo..hi instead of
    # sparsify.keep_fraction (sparse_det/share_levels.py), so the network reads larger kept
    # sets as well; validation and the checkpoint keep sparsify's. Empty: off.
    keep_share_range: list[float] = field(default_factory=list)
    # An exponential moving average of the weights (and of BatchNorm's running statistics)
    # is what validation reads and the checkpoints hold, the raw weights only what the
    # optimiser steps: decay per step, warmed up as min(decay, (1 + step) / (10 + step)).
    # 0: off, the weights as trained.
    ema_decay: float = 0.0


# Test-time augmentation: the axes (0=z, 1=y, 2=x) each pass mirrors. The missing wedge (tilt
# about y) and the simulator's physics are symmetric under each mirror, and the network is
# not equivariant to them, so averaging the passes' per-voxel outputs removes part of its
# orientation-dependent error. "flip" doubles the network's time, "flip4" quadruples it.
TTA_MIRRORS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flip": ((), (1, 2)),
    "flip4": ((), (1, 2), (0,), (0, 1, 2)),
}

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# What infer, its Ray tasks and the demo use unless told. "auto" takes bf16 conv products on
# a CPU that multiplies bfloat16 natively: paired run by run against fp32 the picks move a
# little and F4 does not (+0.0005 ± 0.0003 over 21 held-out runs, -0.0003 ± 0.0006 over 45
# tuning runs), at 1.2-2x less time per tomogram, which the 4 s budget needs. Library calls
# that build checkpoints (tune, rescore_fit, finetune) stay on exact fp32 sums, so a checkpoint
# is the same whichever host made it.
INFER_PRECISION = "auto"


# The dense feature channels a sparse volume keeps for the rescorer's radial profiles (norm,
# smooth, dog30A, dog60A of the checkpoint's features; sparse_det/rescore.py).
PROFILE_CHANNELS = 4
FOREGROUND_SLACK = 1.5  # runs up to 1.5× the typical foreground share keep keep_fraction


@dataclass
class PostprocessConfig:
    prob_floor: float = 0.15  # voxels whose class probability passes this vote
    cluster_radius_fraction: float = 0.35  # votes closer than this × radius link up
    nms_radius_fraction: float = 0.5
    min_votes: int = 2
    default_threshold: float = 1.0  # score threshold before tuning (votes' probability mass)
    tta: str = "none"  # test-time mirrors (TTA_MIRRORS) the thresholds assume
    # The kept share follows the protein the network sees. This is the share of kept voxels
    # predicted foreground on a typical run (0.14-0.39 on simulated runs, 0.53-0.70 in
    # crowded ice); at FOREGROUND_SLACK times it or more, the tomogram is sparsified again
    # keeping the share it kept × foreground / this (at most keep_growth_max times it), and
    # predicted once more. 0: off (the kept share as sparsify sets it, as checkpoints
    # before it had).
    keep_follow_foreground: float = 0.0
    keep_growth_max: float = 2.4  # 2.5 % → at most 6 %
    # A crowded run's larger kept set is read with every test-time mirror (True) or by the
    # identity pass alone (False): its second pass costs 2.4 s of a crowded run's 7.4 on a
    # 2-core CPU, and leaving it out moved the 45 tuning runs by -0.000 ± 0.001 (the 7
    # crowded ones -0.002 on average).
    grown_mirrors: bool = True
    # BatchNorm statistics at inference: "training" (the running ones training kept) or
    # "tomogram" (each tomogram's own: the whole kept set is one batch of ~10^5 voxels, so
    # its statistics are exact; test-time normalisation against covariate shift).
    norm_stats: str = "training"
    # Vote masses are divided by c ** confidence_power, c the tomogram's confidence (its mean
    # top-class probability over the voxels predicted particle: 0.84-0.92 on simulated runs
    # within the training ranges, 0.65-0.74 with every parameter beyond them). A tomogram the
    # network reads less surely gives its true particles less vote mass, and one calibration
    # for every tomogram then drops them under the threshold. `tune --confidence-power`
    # chooses it on the tuning runs; 0: masses as voted.
    confidence_power: float = 0.0
    # Whose confidence: "tomogram" (one c per tomogram, dominated by the ribosome's many
    # voxels) or "class" (each class's mean top-class probability over the voxels whose
    # top class it is: in a hard tilt series beta-galactosidase's falls 0.57 -> 0.36-0.39
    # while the ribosome's stays at 0.97).
    confidence_by: str = "tomogram"


def grows_kept_share(post: PostprocessConfig) -> bool:
    """Whether a crowded run is kept at a larger share (inference.grown_keep_share can say
    so)."""
    return post.keep_follow_foreground > 0


NORM_STATS = ("training", "tomogram")  # PostprocessConfig.norm_stats
CONFIDENCE_BY = ("tomogram", "class")  # PostprocessConfig.confidence_by


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    sparsify: SparsifyConfig = field(default_factory=SparsifyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def to_dict(self) -> dict:
        return _to_plain(self)


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    return obj


def _build(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v, f"{where}.{k}")
        else:
            kwargs[k] = _coerce(t, v, f"{where}.{k}")
    return cls(**kwargs)


def _coerce(t, v, where: str):
    origin = typing.get_origin(t)
    if origin in (tuple, list):
        if not isinstance(v, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {v!r}")
        all_args = typing.get_args(t)
        if origin is tuple and Ellipsis not in all_args and len(v) != len(all_args):
            raise ConfigError(f"{where}: expected {len(all_args)} values, got {list(v)!r}")
        args = [a for a in all_args if a is not Ellipsis]
        items = [_coerce(args[0], x, where) for x in v] if args else list(v)
        return tuple(items) if origin is tuple else items
    if isinstance(t, types.UnionType):
        return v
    if t is float and isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if t is dict and not isinstance(v, dict):
        raise ConfigError(f"{where}: expected a mapping, got {v!r}")
    if t in (int, str, bool) and not isinstance(v, t):
        raise ConfigError(f"{where}: expected {t.__name__}, got {v!r}")
    if t is int and isinstance(v, bool):
        raise ConfigError(f"{where}: expected int, got {v!r}")
    return v


def build_section(cls, d: dict, where: str):
    """A config dataclass from a mapping, typed and checked like the main tree (for the
    sections other layers own)."""
    return _build(cls, d, where)


def resolve_path(value: str, base_dir: Path | None) -> str:
    """A config path relative to base_dir (URLs and absolute paths unchanged)."""
    if not value or base_dir is None or "://" in value or Path(value).is_absolute():
        return value
    return str((base_dir / value).resolve())


def config_from_dict(d: dict, base_dir: Path | None = None) -> Config:
    d = {k: v for k, v in (d or {}).items() if k not in OWNED_ELSEWHERE}
    sp = d.pop("sparsify", {})
    try:
        sparsify = SparsifyConfig.from_dict(sp or {})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sparsify: {exc}") from exc
    cfg = _build(Config, d, "config")
    cfg.sparsify = sparsify
    for sect, key in (("data", "project"), ("data", "shards"), ("train", "out_dir"),
                      ("train", "init_checkpoint")):
        obj = getattr(cfg, sect)
        setattr(obj, key, resolve_path(getattr(obj, key), base_dir))
    if len(cfg.model.channels) < 2:
        raise ConfigError("model.channels: need at least two levels")
    if cfg.postprocess.norm_stats not in NORM_STATS:
        raise ConfigError(f"postprocess.norm_stats: {cfg.postprocess.norm_stats!r}, expected "
                          f"one of {NORM_STATS}")
    if not 0 <= cfg.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: {cfg.train.ema_decay}, must be in [0, 1) "
                          "(0: off; 0.999 averages about the last thousand steps)")
    if not 0 <= cfg.train.channel_group_dropout <= 0.5:
        # A crop loses one group or the other with this probability each: above a half the
        # two probabilities would not fit in one draw.
        raise ConfigError(f"train.channel_group_dropout: {cfg.train.channel_group_dropout}, "
                          "expected 0-0.5")
    if cfg.postprocess.confidence_by not in CONFIDENCE_BY:
        raise ConfigError(f"postprocess.confidence_by: {cfg.postprocess.confidence_by!r}, "
                          f"expected one of {CONFIDENCE_BY}")
    if not 0 < cfg.loss.unpicked_share <= 1:
        raise ConfigError(f"loss.unpicked_share: {cfg.loss.unpicked_share}, expected 0-1 "
                          "(above 0)")
    _check_keep_share_range(cfg)
    _check_distill(cfg.loss)
    return cfg


def _check_distill(loss: LossConfig) -> None:
    # Whether train.init_checkpoint is set is checked when training starts
    # (train_state.build_state): `train --init` sets it after the config is read.
    if not loss.distill_weight >= 0:
        raise ConfigError(f"loss.distill_weight: {loss.distill_weight}, expected ≥ 0")


def _check_keep_share_range(cfg: Config) -> None:
    shares = cfg.train.keep_share_range
    if not shares:
        return
    if len(shares) != 2 or not 0 < shares[0] <= shares[1] < 0.5:
        raise ConfigError(f"train.keep_share_range: {shares}, expected [lo, hi] with "
                          "0 < lo <= hi < 0.5")
    if cfg.sparsify.feature_norm == "volume":
        raise ConfigError("train.keep_share_range needs sparsify.feature_norm 'kept' or "
                          "'kept_bands' (each share is standardised over its kept voxels)")


def read_config_file(path: str | Path, root: str | Path | None = None) -> tuple[dict, Path]:
    """(the YAML mapping, the folder its relative paths resolve against): `root` when
    given, else the project root (the config's parent's parent when the file sits in
    configs/, else the file's folder)."""
    import yaml

    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(d).__name__}")
    base = path.resolve().parent
    if base.name == "configs":
        base = base.parent
    if root is not None:
        base = Path(root).resolve()
    return d, base


def load_config(path: str | Path, root: str | Path | None = None) -> Config:
    """Loads a YAML config (see read_config_file for where relative paths resolve)."""
    d, base = read_config_file(path, root)
    try:
        return config_from_dict(d, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
