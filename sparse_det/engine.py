"""Training: random sparse crops, AdamW + warm-up/cosine schedule, validation F4 with per-class
thresholds tuned on held-out runs, resumable checkpoints.

The pieces (TrainState, run_epoch, detect_runs, score_detections, epoch_record) are shared by
the single-process loop here and the Ray Train loop in ray_jobs/train_loop.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data_tools.atomic import atomic_write_text
from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from sparse_det.config import Config
from sparse_det.data import CropSampler, RunSample, load_run_sample
from sparse_det.losses import detection_losses
from sparse_det.model import build_model
from sparse_det.predict import detect_sparse, resolve_device
from sparse_det.tune import tune_thresholds


def split_runs(cfg: Config, project: CopickProject) -> tuple[list[str], list[str]]:
    runs = project.runs()
    val = cfg.data.val_runs or runs[-cfg.data.n_val:]
    train = cfg.data.train_runs or [r for r in runs if r not in val]
    missing = sorted(set(train + val) - set(runs))
    if missing:
        raise ValueError(f"{project.path}: runs {missing} not in project")
    if not train:
        raise ValueError(f"{project.path}: no training runs left (runs {runs}, val {val})")
    return train, val


def load_samples(cfg: Config, project: CopickProject, runs: list[str]) -> list[RunSample]:
    return [load_run_sample(project, cfg.data.shards, cfg.sparsify, r,
                            cfg.targets.radius_fraction) for r in runs]


def detect_runs(model: torch.nn.Module, samples: list[RunSample], particles: ParticleTable,
                cfg: Config, device: torch.device) -> list[dict]:
    """Unthresholded detections on whole runs (eval mode, restored to train mode after)."""
    model.eval()
    dets = [detect_sparse(model, s.sv, particles, cfg.postprocess, device, cfg.train.amp)
            for s in samples]
    model.train()
    return dets


def score_detections(dets: list[dict], truths: list[dict], particles: ParticleTable,
                     cfg: Config) -> dict:
    """Per-class thresholds that maximise F4 over all runs together; the micro-averaged
    metric at those thresholds."""
    thresholds, per_class, score = tune_thresholds(dets, truths, particles,
                                                   cfg.postprocess.default_threshold)
    return {"score": score, "per_class": {k: v.fbeta for k, v in per_class.items()},
            "recall": {k: v.recall for k, v in per_class.items()}, "thresholds": thresholds}


def validate(model: torch.nn.Module, samples: list[RunSample], project: CopickProject,
             cfg: Config, device: torch.device) -> dict:
    dets = detect_runs(model, samples, project.particles, cfg, device)
    return score_detections(dets, [s.truth_xyz_A for s in samples], project.particles, cfg)


def lr_factor(step: int, total_steps: int, warmup_fraction: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to 2 % — a pure function of the step, so a resumed
    (or extended) run continues the same curve."""
    warm = max(1, int(warmup_fraction * total_steps))
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(model, cfg: Config, total_steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps))
    return opt, sched


@dataclass
class TrainState:
    """Everything a resumed run needs. `model` may be wrapped (DDP); `core` never is."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    step: int = 0
    best: float = -1.0
    history: list[dict] = field(default_factory=list)

    @property
    def core(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)

    def resume_extra(self, val: dict) -> dict:
        return {"step": self.step, "best": self.best, "history": self.history, "val": val,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}

    def restore(self, doc: dict) -> None:
        """From a checkpoint written with resume_extra (the model must not be wrapped yet or
        be the same wrapped object: weights go into `core`)."""
        self.core.load_state_dict(doc["model"])
        ex = doc["extra"]
        self.opt.load_state_dict(ex["optimizer"])
        self.sched.load_state_dict(ex["scheduler"])
        self.step, self.best, self.history = ex["step"], ex["best"], ex["history"]


def build_state(cfg: Config, feature_names: list[str], num_classes: int,
                device: torch.device) -> TrainState:
    """A fresh model (or the init checkpoint's weights), optimiser and schedule."""
    model = build_model(in_channels=len(feature_names), num_classes=num_classes,
                        channels=cfg.model.channels,
                        blocks_per_level=cfg.model.blocks_per_level, device=device)
    if cfg.train.init_checkpoint:
        init = read_checkpoint(cfg.train.init_checkpoint)
        if init["feature_names"] != feature_names:
            raise CheckpointError(f"{cfg.train.init_checkpoint}: features "
                                  f"{init['feature_names']} differ from {feature_names}")
        try:
            model.load_state_dict(init["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{cfg.train.init_checkpoint}: weights do not fit this "
                                  f"config's model ({str(exc)[:200]})") from exc
    opt, sched = make_optimizer(model, cfg, cfg.train.steps)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.amp and device.type == "cuda" else None
    return TrainState(model, opt, sched, scaler)


def train_step(model, opt, sched, sampler: CropSampler, cfg: Config, device: torch.device,
               scaler, batch_size: int | None = None) -> dict[str, float]:
    batch, labels, offsets = sampler.batch(batch_size or cfg.train.batch_size)
    batch, labels, offsets = batch.to(device), labels.to(device), offsets.to(device)
    ctx = (torch.autocast("cuda", dtype=torch.float16) if scaler is not None
           else contextlib.nullcontext())
    with ctx:
        out = model(batch)
    losses = detection_losses(out["cls_logits"], out["offsets"], labels, offsets,
                              background_weight=cfg.loss.background_weight,
                              focal_gamma=cfg.loss.focal_gamma,
                              offset_weight=cfg.loss.offset_weight)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses["loss"]).backward()
        scaler.step(opt)
        scaler.update()
    else:
        losses["loss"].backward()
        opt.step()
    sched.step()
    return {k: float(v.detach()) for k, v in losses.items()} | {"voxels": len(labels)}


def run_epoch(state: TrainState, sampler: CropSampler, cfg: Config, device: torch.device,
              batch_size: int | None = None,
              on_step: Callable[[dict], None] | None = None) -> dict:
    """Up to steps_per_epoch steps (fewer at the end). Mean losses, voxels seen, seconds."""
    t0, sums, n_vox = time.perf_counter(), {}, 0
    n = min(cfg.train.steps_per_epoch, cfg.train.steps - state.step)
    for _ in range(n):
        m = train_step(state.model, state.opt, state.sched, sampler, cfg, device,
                       state.scaler, batch_size)
        n_vox += m.pop("voxels")
        sums = {k: sums.get(k, 0.0) + v for k, v in m.items()}
        state.step += 1
        if on_step:
            on_step(m)
    return {**{k: v / max(n, 1) for k, v in sums.items()}, "voxels": n_vox,
            "train_s": time.perf_counter() - t0}


def epoch_record(state: TrainState, metrics: dict, val: dict, epoch_s: float) -> dict:
    """One history line; updates state.history and state.best. Returns the record with
    `is_best` set when this epoch's validation score is the best so far."""
    rec = {"epoch": len(state.history) + 1, "step": state.step,
           **{k: v for k, v in metrics.items() if k not in ("voxels", "train_s")},
           "voxels_per_s": metrics["voxels"] / max(metrics["train_s"], 1e-9),
           "epoch_s": epoch_s, "val_score": val["score"], "val_f4": val["per_class"],
           "val_recall": val["recall"], "thresholds": val["thresholds"]}
    state.history.append(rec)
    rec["is_best"] = val["score"] > state.best
    if rec["is_best"]:
        state.best = val["score"]
    return rec


def epoch_line(rec: dict) -> str:
    return (f"epoch {rec['epoch']} step {rec['step']}: loss {rec.get('loss', 0):.3f} "
            f"{rec['voxels_per_s']:.0f} vox/s val F4 {rec['val_score']:.4f} "
            + " ".join(f"{k[:5]}={v:.2f}" for k, v in rec["val_f4"].items()))


def train(cfg: Config, *, progress: bool = True, resume: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Trains from cfg; writes <out_dir>/last.pt each epoch and best.pt on the best
    validation score. Returns the best checkpoint's path."""
    from tqdm import tqdm

    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    project = CopickProject(cfg.data.project)
    train_runs, val_runs = split_runs(cfg, project)
    train_s = load_samples(cfg, project, train_runs)
    val_s = load_samples(cfg, project, val_runs)
    feature_names = train_s[0].sv.feature_names
    state = build_state(cfg, feature_names, len(project.particles), device)
    if resume and (out / "last.pt").is_file():
        state.restore(read_checkpoint(out / "last.pt"))
    sampler = CropSampler(train_s, crop_zyx=cfg.train.crop_zyx, flip_xy=cfg.train.flip_xy,
                          intensity_jitter=cfg.train.intensity_jitter,
                          seed=cfg.train.seed + state.step)
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.train.steps, initial=state.step, desc="train", unit="step",
               disable=not progress)

    def tick(m):
        bar.update(1)
        bar.set_postfix(loss=f"{m['loss']:.3f}")

    state.model.train()
    while state.step < cfg.train.steps:
        t0 = time.perf_counter()
        metrics = run_epoch(state, sampler, cfg, device, on_step=tick)
        out_of_time = (cfg.train.time_budget_s > 0
                       and time.perf_counter() - t_start > cfg.train.time_budget_s)
        val = validate(state.model, val_s, project, cfg, device)
        rec = epoch_record(state, metrics, val, time.perf_counter() - t0)
        common = {"model": state.core, "config": cfg, "particles": project.particles,
                  "feature_names": feature_names, "thresholds": val["thresholds"]}
        if rec["is_best"]:
            save_checkpoint(out / "best.pt", **common,
                            extra={"step": state.step, "val": val, "history": state.history})
        save_checkpoint(out / "last.pt", **common, extra=state.resume_extra(val))
        atomic_write_text(out / "history.json", json.dumps(state.history, indent=1))
        bar.write(epoch_line(rec))
        if on_epoch:
            on_epoch(rec)
        if out_of_time:
            bar.write(f"time budget of {cfg.train.time_budget_s:.0f} s spent at step "
                      f"{state.step}")
            break
    bar.close()
    return out / "best.pt"
