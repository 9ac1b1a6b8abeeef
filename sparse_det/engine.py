"""Training: random sparse crops, AdamW + warm-up/cosine schedule, AMP on GPU, validation F4 with
per-class thresholds tuned on held-out runs, resumable checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from data_tools.atomic import atomic_write_text
from data_tools.copick_io import CopickProject
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


def validate(model: torch.nn.Module, samples: list[RunSample], project: CopickProject,
             cfg: Config, device: torch.device) -> dict:
    """Detections on whole validation runs; per-class thresholds that maximise F4 over them
    all together; the micro-averaged metric at those thresholds."""
    model.eval()
    dets = [detect_sparse(model, s.sv, project.particles, cfg.postprocess, device,
                          cfg.train.amp) for s in samples]
    thresholds, per_class, score = tune_thresholds(
        dets, [s.truth_xyz_A for s in samples], project.particles,
        cfg.postprocess.default_threshold)
    model.train()
    return {"score": score, "per_class": {k: v.fbeta for k, v in per_class.items()},
            "recall": {k: v.recall for k, v in per_class.items()}, "thresholds": thresholds}


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


def train_step(model, opt, sched, sampler: CropSampler, cfg: Config, device: torch.device,
               scaler) -> dict[str, float]:
    batch, labels, offsets = sampler.batch(cfg.train.batch_size)
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
    model = build_model(in_channels=len(feature_names), num_classes=len(project.particles),
                        channels=cfg.model.channels,
                        blocks_per_level=cfg.model.blocks_per_level, device=device)
    opt, sched = make_optimizer(model, cfg, cfg.train.steps)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.amp and device.type == "cuda" else None
    step, best, history = 0, -1.0, []
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
    if resume and (out / "last.pt").is_file():
        doc = read_checkpoint(out / "last.pt")
        model.load_state_dict(doc["model"])
        opt.load_state_dict(doc["extra"]["optimizer"])
        sched.load_state_dict(doc["extra"]["scheduler"])
        step, best, history = doc["extra"]["step"], doc["extra"]["best"], doc["extra"]["history"]
    sampler = CropSampler(train_s, crop_zyx=cfg.train.crop_zyx, flip_xy=cfg.train.flip_xy,
                          intensity_jitter=cfg.train.intensity_jitter,
                          seed=cfg.train.seed + step)
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.train.steps, initial=step, desc="train", unit="step",
               disable=not progress)
    model.train()
    while step < cfg.train.steps:
        t0, sums, n_vox = time.perf_counter(), {}, 0
        n = min(cfg.train.steps_per_epoch, cfg.train.steps - step)
        for _ in range(n):
            m = train_step(model, opt, sched, sampler, cfg, device, scaler)
            n_vox += m.pop("voxels")
            sums = {k: sums.get(k, 0.0) + v for k, v in m.items()}
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{m['loss']:.3f}")
        out_of_time = (cfg.train.time_budget_s > 0
                       and time.perf_counter() - t_start > cfg.train.time_budget_s)
        train_time = time.perf_counter() - t0
        val = validate(model, val_s, project, cfg, device)
        rec = {"epoch": len(history) + 1, "step": step, **{k: v / n for k, v in sums.items()},
               "voxels_per_s": n_vox / train_time, "epoch_s": time.perf_counter() - t0,
               "val_score": val["score"], "val_f4": val["per_class"],
               "val_recall": val["recall"], "thresholds": val["thresholds"]}
        history.append(rec)
        common = {"model": model, "config": cfg, "particles": project.particles,
                  "feature_names": feature_names, "thresholds": val["thresholds"]}
        if val["score"] > best:
            best = val["score"]
            save_checkpoint(out / "best.pt", **common,
                            extra={"step": step, "val": val, "history": history})
        save_checkpoint(out / "last.pt", **common, extra={
            "step": step, "best": best, "history": history, "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict()})
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))
        bar.write(f"epoch {rec['epoch']} step {step}: loss {rec.get('loss', 0):.3f} "
                  f"val F4 {val['score']:.4f} " + " ".join(
                      f"{k[:5]}={v:.2f}" for k, v in val["per_class"].items()))
        if on_epoch:
            on_epoch(rec)
        if out_of_time:
            bar.write(f"time budget of {cfg.train.time_budget_s:.0f} s spent at step {step}")
            break
    bar.close()
    return out / "best.pt"
