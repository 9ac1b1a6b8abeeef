"""From a run to its detections: the one inference path, for infer, tune, training
validation, pictures and Ray tasks alike.

    run ──(shard or sparsify)──► SparseVolume ──model──► probs [N, K+1], offsets [N,3]
        ──postprocess.detect──► centres (voxels) ──► Detections (centres Å, scores)
        ──threshold──► rows (DETECTION_COLUMNS)

`Picker` holds a loaded checkpoint and runs these steps for one run; `stream.infer_project`
runs them over a project.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from data_tools.coords import zyx_vox_to_xyz_A
from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from data_tools.sparsify import reselect
from data_tools.sparsify_config import SparsifyConfig
from data_tools.tomo_input import with_overrides
from sparse_det.calibration import CALIBRATED_DEFAULT_THRESHOLD, apply_calibration
from sparse_det.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
)
from sparse_det.confidence import confidences
from sparse_det.config import (
    FOREGROUND_SLACK,
    PRECISIONS,
    PROFILE_CHANNELS,
    TTA_MIRRORS,
    PostprocessConfig,
    grows_kept_share,
)
from sparse_det.device import resolve_device
from sparse_det.postprocess import detect
from sparse_det.rescore import channels_for, rescore
from sparse_det.stream import load_sparse
from sparse_det.structures import (
    SWAP_YX,
    Detections,
    SparseBatch,
    SparseVolume,
    swap_yx,
)

log = logging.getLogger(__name__)


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them torch
    emulates bf16 products, slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, dev: torch.device) -> str:
    """The precision a Picker runs at: `precision`, with "auto" made bf16 on a CPU with
    bf16 instructions and fp32 elsewhere (CUDA: spconv's fp32 kernels)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if dev.type == "cpu" and cpu_multiplies_bf16() else "fp32"


def tta_mirrors(tta: str) -> tuple[tuple[int, ...], ...]:
    """The mirrors of test-time setting `tta` (config.TTA_MIRRORS); unknown: ValueError."""
    if tta not in TTA_MIRRORS:
        raise ValueError(f"tta must be one of {sorted(TTA_MIRRORS)}, got {tta!r}")
    return TTA_MIRRORS[tta]


def mirrored(sv: SparseVolume, axes: tuple[int, ...]) -> SparseVolume:
    """The sparse volume mirrored along `axes` (0=z, 1=y, 2=x), voxels in the same order;
    features are scalars, so they do not change."""
    if not axes:
        return sv
    coords = sv.coords_zyx.copy()
    ax = list(axes)
    coords[:, ax] = np.asarray(sv.shape_zyx)[ax] - 1 - coords[:, ax]
    return replace(sv, coords_zyx=coords, dense=None, selected_from=None)


@contextlib.contextmanager
def tomogram_norm_stats(model: torch.nn.Module, on: bool = True):
    """Inside, the model's BatchNorm layers normalise with the statistics of the batch they
    see (one whole tomogram) instead of the running ones training kept; the running
    statistics and counters come out unchanged. `on` False: nothing changes."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not on or not bns:
        yield
        return
    saved = [(m.training, m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.train()
        m.momentum = 0.0  # the running statistics stay as they are: (1 - 0)·old + 0·batch
    try:
        yield
    finally:
        for m, (training, momentum, count) in zip(bns, saved, strict=True):
            m.train(training)
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


@torch.no_grad()
def predict_passes(model: torch.nn.Module, sv: SparseVolume, device: torch.device,
                   mirrors: tuple[tuple[int, ...], ...], *, amp: bool,
                   norm_stats: str = "training") -> tuple[torch.Tensor, torch.Tensor]:
    """The sums over `mirrors` (each a tuple of axes to mirror) of the network's
    probabilities [N, K+1] and offsets [N,3] (voxels, mirrored back), in the volume's voxel
    order, as float32 tensors on `device`; predict_sparse's passes."""
    dtype = next(model.parameters()).dtype  # fp16 weights take fp16 features
    ctx = (torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda"
           else contextlib.nullcontext())  # autocast("cuda") warns on a CPU-only torch
    probs_sum = offsets_sum = None
    swapped = sv.tilted_about_x
    base = swap_yx(sv) if swapped else sv
    for axes in mirrors:
        view = mirrored(base, axes)
        batch = SparseBatch.from_numpy([view.coords_zyx], [view.feats], view.shape_zyx).to(
            device, dtype=dtype)
        with ctx, tomogram_norm_stats(model, norm_stats == "tomogram"):
            out = model(batch)
        probs = torch.softmax(out["cls_logits"].float(), dim=1)
        offsets = out["offsets"].float()
        if axes:
            offsets[:, list(axes)] *= -1  # an offset along a mirrored axis points back
        if swapped:
            offsets = offsets[:, SWAP_YX]
        probs_sum = probs if probs_sum is None else probs_sum + probs
        offsets_sum = offsets if offsets_sum is None else offsets_sum + offsets
    return probs_sum, offsets_sum


def predict_sparse(model: torch.nn.Module, sv: SparseVolume, device: torch.device, *,
                   amp: bool, tta: str = "none", norm_stats: str = "training"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns probs [N, K+1] and offsets [N,3] (voxels) in the volume's voxel order, as
    float32 tensors on `device` (decoding stays there).
    `amp`: fp16 autocast on CUDA (config train.amp; spconv 2.3 has no fp16 kernel under
    autocast with fp32 weights, so it is off by default).
    `tta`: a key of TTA_MIRRORS; the passes' probabilities and offsets (mirrored back) are
    averaged voxel by voxel.
    `norm_stats`: "tomogram" normalises with each pass's own BatchNorm statistics
    (PostprocessConfig.norm_stats).
    A volume tilted about x (SparseVolume.tilted_about_x) is read with y and x swapped and
    its offsets swapped back."""
    mirrors = tta_mirrors(tta)
    probs_sum, offsets_sum = predict_passes(model, sv, device, mirrors, amp=amp,
                                            norm_stats=norm_stats)
    n = len(mirrors)
    return (probs_sum, offsets_sum) if n == 1 else (probs_sum / n, offsets_sum / n)


def detections_from_outputs(sv: SparseVolume, probs, offsets, particles: ParticleTable,
                            post: PostprocessConfig) -> Detections:
    """Per-voxel outputs (numpy, or tensors on the device that decodes them) → unthresholded
    Detections, vote masses divided by the tomogram's (or each class's) confidence **
    post.confidence_power; the one voxel → Å conversion."""
    radii_vox = [p.radius_A / sv.voxel_size_A for p in particles]
    per_class = detect(sv.coords_zyx, probs, offsets, radii_vox, prob_floor=post.prob_floor,
                       cluster_radius_fraction=post.cluster_radius_fraction,
                       nms_radius_fraction=post.nms_radius_fraction, min_votes=post.min_votes)
    dets = Detections(sv.run, {
        p.name: (zyx_vox_to_xyz_A(c, sv.voxel_size_A, sv.origin_A), s)
        for p, (c, s) in zip(particles, per_class, strict=True)},
        *confidences(probs, [p.name for p in particles]))
    return dets.with_confidence_power(0.0, post.confidence_power, post.confidence_by)


def grown_keep_share(probs: torch.Tensor, sv: SparseVolume, post: PostprocessConfig
                     ) -> float | None:
    """The larger share of voxels to keep when the predicted foreground crowds the kept
    set (PostprocessConfig.keep_follow_foreground), else None."""
    target = post.keep_follow_foreground
    if not grows_kept_share(post) or len(sv) == 0:
        return None
    foreground = float((probs.argmax(dim=1) != 0).float().mean())
    if foreground < FOREGROUND_SLACK * target:
        return None
    kept = len(sv) / float(np.prod(sv.shape_zyx))
    return kept * min(post.keep_growth_max, foreground / target)


def detect_sparse(model: torch.nn.Module, sv: SparseVolume, particles: ParticleTable,
                  post: PostprocessConfig, device: torch.device, *, amp: bool,
                  tta: str = "none") -> Detections:
    """Unthresholded detections of one sparse volume."""
    probs, offsets = predict_sparse(model, sv, device, amp=amp, tta=tta,
                                    norm_stats=post.norm_stats)
    return detections_from_outputs(sv, probs, offsets, particles, post)


def network_outputs(sv: SparseVolume, probs) -> tuple[np.ndarray, torch.Tensor]:
    """(kept coords_zyx, probabilities [N, K+1] float32 where the network made them), for
    the rescorer, whose probability shells are gathered there."""
    return sv.coords_zyx, torch.as_tensor(probs).float()


@dataclass
class Picker:
    """A loaded checkpoint on a device: run → sparse volume → detections → thresholded."""

    ckpt: LoadedCheckpoint
    device: torch.device
    sparsify_config: SparsifyConfig  # the checkpoint's, with the user's input choices
    tta: str = "none"  # a key of TTA_MIRRORS
    precision: str = "fp32"  # as resolved: never "auto"
    # Candidates are scored with the checkpoint's rescorer (sparse_det/rescore.py) where it
    # has one: its thresholds were tuned on those scores. Picker.load(rescore=False) drops
    # it from the checkpoint and takes the thresholds tuned for the network alone.

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "auto", *,
             input_overrides: dict | None = None, precision: str = "fp32",
             tta: str | None = None, rescore: bool = True) -> Picker:
        """`input_overrides`: sparsify fields the user set (tomo_input.input_overrides).
        `precision` "auto": bf16 or fp32 (resolve_precision). "fp16": weights and features
        in half precision (spconv needs both in one dtype, which autocast does not give it;
        bf16 has no spconv kernel). "bf16" (the CPU only): the submanifold convs' products
        in bfloat16 (cpu_conv), everything else in fp32 — for CPUs with bf16 instructions
        (AVX512-BF16, AMX); elsewhere slower.
        `tta`: test-time mirrors (TTA_MIRRORS); None takes the checkpoint's, the setting
        its thresholds were tuned with. `rescore` False: the network alone, at the
        thresholds tuned for its vote masses, where the checkpoint carries a rescorer."""
        if tta is not None:
            tta_mirrors(tta)  # an unknown setting fails before the model loads
        dev = resolve_device(device)
        asked, precision = precision, resolve_precision(precision, dev)
        if asked == "auto":
            log.info("network products in %s on %s (--precision auto; fp32 gives the same "
                     "picks on every host)", precision, dev.type)
        if precision == "bf16" and dev.type != "cpu":
            raise ValueError(f"precision bf16 is for the CPU's convs, not {dev.type}: use "
                             "fp16 there")
        ckpt = load_checkpoint(checkpoint, dev)
        if not rescore:
            ckpt.without_rescorer()
        if precision == "fp16":
            ckpt.model.half()
        elif precision == "bf16":
            from sparse_det.model.spconv_compat import set_product_dtype

            set_product_dtype(ckpt.model, torch.bfloat16)
        tuned_for = ckpt.config.postprocess.tta
        if tta is not None and not ckpt.use_tta(tta):
            warnings.warn(f"{checkpoint}: its thresholds were tuned with --tta {tuned_for}, "
                          f"not {tta}; `python -m sparse_det.tune --tta {tta}` tunes a set "
                          "for it", stacklevel=2)
        return cls(ckpt, dev, with_overrides(ckpt.config.sparsify, input_overrides),
                   tta or tuned_for, precision)

    @property
    def particles(self) -> ParticleTable:
        return self.ckpt.particles

    @property
    def thresholds(self) -> dict[str, float]:
        return self.ckpt.thresholds

    def sparse(self, project: CopickProject, run: str,
               shards_dir: str | Path | None = None, *,
               keep_fraction: float | None = None) -> SparseVolume:
        cfg = self.sparsify_config
        if keep_fraction is not None:
            cfg = replace(cfg, keep_fraction=keep_fraction)
        keep = PROFILE_CHANNELS if self.ckpt.rescorer is not None else 0
        # Only the share sparsify sets can grow; a grown copy is not selected from again.
        grows = keep_fraction is None and grows_kept_share(self.ckpt.config.postprocess)
        return load_sparse(project, run, cfg, self.ckpt.feature_names, shards_dir,
                           device=self.device, keep_dense=keep, reselectable=grows)

    def resparsifier(self, project: CopickProject, run: str,
                     shards_dir: str | Path | None, sv: SparseVolume
                     ) -> Callable[[float], SparseVolume]:
        """detect's `resparsify` for `sv`, the run's sparse volume: selected again from the
        volumes it kept where it kept them (sparsify.reselect), else sparsified again."""
        if sv.selected_from is not None:
            return partial(reselect, sv)
        return lambda share: self.sparse(project, run, shards_dir, keep_fraction=share)

    def detect(self, sv: SparseVolume, *, calibrated: bool = True,
               resparsify: Callable[[float], SparseVolume] | None = None) -> Detections:
        """Unthresholded detections (centres x,y,z Å); scores calibrated to probabilities
        when the checkpoint has a calibration, else (or `calibrated=False`) vote masses.
        `resparsify(keep_fraction)`: the same run kept at another share; given, a crowded
        tomogram is picked from the larger kept set (grown_keep_share)."""
        if calibrated:
            self._check_vote_masses_calibrated()
        dets, _, _ = self.detect_outputs(sv, resparsify=resparsify)
        return self.calibrate(dets) if calibrated else dets

    def _check_vote_masses_calibrated(self) -> None:
        if self.ckpt.rescorer is not None:
            # Its calibration maps the rescorer's scores, not vote masses.
            raise ValueError(f"{self.ckpt.path}: its thresholds and calibration are its "
                             "candidate rescorer's, which reads the dense tomogram: use "
                             "detect_run, or Picker.load(..., rescore=False)")

    def outputs(self, sv: SparseVolume, *,
                resparsify: Callable[[float], SparseVolume] | None = None
                ) -> tuple[SparseVolume, torch.Tensor, torch.Tensor]:
        """(the sparse volume the network read last — `sv`, or its resparsified copy where
        it is crowded —, its per-voxel probabilities [N, K+1] and offsets [N,3]); see
        detect. Crowding is decided from the first of the test-time mirrors alone (their
        foreground shares differ by under 0.01 on the 66 held-out and tuning runs, and no
        decision changes), so a crowded run's other mirrors are read on the larger set
        only, and there only where PostprocessConfig.grown_mirrors says so."""
        cfg = self.ckpt.config
        mirrors = tta_mirrors(self.tta)
        passes = partial(predict_passes, self.ckpt.model, device=self.device,
                         amp=cfg.train.amp, norm_stats=cfg.postprocess.norm_stats)
        probs, offsets = passes(sv, mirrors=mirrors[:1])
        share = grown_keep_share(probs, sv, cfg.postprocess) if resparsify else None
        if share is not None:
            log.info("%s: predicted foreground crowds the kept voxels; keeping %.2f %%",
                     sv.run, 100 * share)
            sv = resparsify(share)
            probs, offsets = passes(sv, mirrors=mirrors[:1])
            if not cfg.postprocess.grown_mirrors:
                mirrors = mirrors[:1]
        if len(mirrors) > 1:
            more_probs, more_offsets = passes(sv, mirrors=mirrors[1:])
            probs = (probs + more_probs) / len(mirrors)
            offsets = (offsets + more_offsets) / len(mirrors)
        return sv, probs, offsets

    def detect_outputs(self, sv: SparseVolume, *,
                       resparsify: Callable[[float], SparseVolume] | None = None
                       ) -> tuple[Detections, SparseVolume, torch.Tensor]:
        """(uncalibrated detections, the sparse volume they came from — `sv` or its
        resparsified copy —, its per-voxel probabilities [N, K+1]); see detect."""
        sv, probs, offsets = self.outputs(sv, resparsify=resparsify)
        post = self.ckpt.config.postprocess
        return detections_from_outputs(sv, probs, offsets, self.particles, post), sv, probs

    def detect_run(self, project: CopickProject, run: str,
                   shards_dir: str | Path | None = None, *, calibrated: bool = True,
                   sv: SparseVolume | None = None, rescored: bool = True
                   ) -> Detections:
        """detect() of one run of a project, re-sparsified when it is crowded; its
        candidates scored by the checkpoint's rescorer from the dense tomogram where it
        carries one (unless `rescored` is False)."""
        rescorer = self.ckpt.rescorer if rescored else None
        if calibrated and rescorer is None:
            self._check_vote_masses_calibrated()
        sv = sv if sv is not None else self.sparse(project, run, shards_dir)
        dets, final, probs = self.detect_outputs(
            sv, resparsify=self.resparsifier(project, run, shards_dir, sv))
        if rescorer is not None:
            # The first sparsification's dense channels: a resparsified copy holds the same.
            channels, voxel_A, origin_A = channels_for(sv, project, run, self.sparsify_config)
            dets = rescore(dets, rescorer, channels, voxel_A, origin_A, self.particles,
                           network_outputs(final, probs))
        return self.calibrate(dets) if calibrated else dets

    def calibrate(self, dets: Detections) -> Detections:
        return apply_calibration(dets, self.ckpt.calibration)

    def pick(self, dets: Detections) -> Detections:
        """Calibrated detections at the checkpoint's thresholds."""
        default = (CALIBRATED_DEFAULT_THRESHOLD if self.ckpt.calibration
                   else self.ckpt.config.postprocess.default_threshold)
        return dets.threshold(self.thresholds, default)
