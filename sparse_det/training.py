"""Training: the one loop, run alone (`python -m sparse_det.train`) or as every worker of a
Ray Train job (ray_jobs/train_loop.py), read top to bottom in `fit`:

    shards + targets of this rank's runs (data.py) → random sparse crops → AdamW with a
    warm-up + cosine learning rate → each epoch: detections on the validation runs,
    gathered from all ranks → per-class thresholds tuned for F4 → checkpoint and metrics →
    stop at train.steps or when the time budget is spent.

A single process is the one-worker case. A Ray worker differs in its `Hooks` only: its rank,
how the model is wrapped (DDP), how validation detections are gathered, and where an epoch's
checkpoint and metrics go. What a run carries from step to step and how it starts:
sparse_det/train_state.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from data_tools.atomic import atomic_write_text
from data_tools.particles import ParticleTable
from sparse_det.calibrated_tuning import calibrate_and_tune
from sparse_det.checkpoint import (
    CheckpointError,
    read_checkpoint,
    save_checkpoint,
)
from sparse_det.config import Config
from sparse_det.data import CropSampler, RunSample, annotated_project, load_samples, split_runs
from sparse_det.device import resolve_device
from sparse_det.inference import detect_sparse
from sparse_det.losses import detection_losses, distill_loss
from sparse_det.structures import Detections
from sparse_det.train_state import TrainState, build_state, say

RANK_SEED_STRIDE = 100_003  # ranks draw different crops: seed + step + stride·rank


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int
               ) -> None:
    """ema ← d·ema + (1 − d)·model for every float parameter and buffer (BatchNorm's running
    statistics averaged like the weights), d = min(decay, (1 + step) / (10 + step)): the
    first steps, far from where training ends, are forgotten fast. Integer buffers (the
    batch counts) are copied."""
    d = min(decay, (1 + step) / (10 + step))
    live = model.state_dict()
    for name, avg in ema.state_dict().items():
        if avg.is_floating_point():
            avg.mul_(d).add_(live[name].detach(), alpha=1 - d)
        else:
            avg.copy_(live[name])


def train_step(*, state: TrainState, sampler: CropSampler, cfg: Config, device: torch.device,
               batch_size: int) -> dict[str, float]:
    """One optimiser step on a fresh batch of crops: the losses and the voxels seen."""
    batch, labels, offsets, unknown = sampler.batch(batch_size)
    batch, labels, offsets = batch.to(device), labels.to(device), offsets.to(device)
    unknown = unknown.to(device) if bool(unknown.any()) else None
    scaler = state.scaler
    ctx = (torch.autocast("cuda", dtype=torch.float16) if scaler is not None
           else contextlib.nullcontext())
    with ctx:
        out = state.model(batch)
    losses = detection_losses(out["cls_logits"], out["offsets"], labels, offsets,
                              background_weight=cfg.loss.background_weight,
                              focal_gamma=cfg.loss.focal_gamma,
                              offset_weight=cfg.loss.offset_weight,
                              label_weight=state.label_weight, unknown_bits=unknown,
                              unpicked_share=cfg.loss.unpicked_share)
    if state.teacher is not None:
        with torch.no_grad(), ctx:
            taught = state.teacher(batch)["cls_logits"]
        losses["loss_distill"] = cfg.loss.distill_weight * distill_loss(
            out["cls_logits"], taught, classes=state.teacher_labels)
        losses["loss"] = losses["loss"] + losses["loss_distill"]
    state.opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses["loss"]).backward()
        scaler.step(state.opt)
        scaler.update()
    else:
        losses["loss"].backward()
        state.opt.step()
    state.sched.step()
    if state.ema is not None:
        update_ema(state.ema, state.core, cfg.train.ema_decay, state.step)
    return {k: float(v.detach()) for k, v in losses.items()} | {"voxels": len(labels)}


def run_epoch(state: TrainState, sampler: CropSampler, cfg: Config, device: torch.device, *,
              batch_size: int, on_step: Callable[[dict], None] | None = None) -> dict:
    """Up to steps_per_epoch steps (fewer at the end). Mean losses, voxels seen, seconds."""
    t0, sums, n_vox = time.perf_counter(), {}, 0
    n = min(cfg.train.steps_per_epoch, cfg.train.steps - state.step)
    for _ in range(n):
        m = train_step(state=state, sampler=sampler, cfg=cfg, device=device,
                       batch_size=batch_size)
        n_vox += m.pop("voxels")
        sums = {k: sums.get(k, 0.0) + v for k, v in m.items()}
        state.step += 1
        if on_step:
            on_step(m)
    return {**{k: v / max(n, 1) for k, v in sums.items()}, "voxels": n_vox,
            "train_s": time.perf_counter() - t0}


def detect_runs(model: torch.nn.Module, samples: list[RunSample], particles: ParticleTable,
                cfg: Config, device: torch.device) -> list[Detections]:
    """Unthresholded detections on whole runs (eval mode, restored to train mode after)."""
    model.eval()
    dets = [detect_sparse(model, s.sv, particles, cfg.postprocess, device, amp=cfg.train.amp)
            for s in samples]
    model.train()
    return dets


def epoch_record(state: TrainState, metrics: dict, val: dict, epoch_s: float) -> dict:
    """One history line; updates state.history and state.best. Returns the record with
    `is_best` set when this epoch's validation score is the best so far."""
    rec = {"epoch": len(state.history) + 1, "step": state.step,
           **{k: v for k, v in metrics.items() if k not in ("voxels", "train_s")},
           "voxels_per_s": metrics["voxels"] / max(metrics["train_s"], 1e-9),
           "epoch_s": epoch_s, "val_score": val["score"], "val_f4": val["per_class"],
           "val_recall": val["recall"], "val_references": val.get("references", {}),
           "thresholds": val["thresholds"]}
    state.history.append(rec)
    rec["is_best"] = val["score"] > state.best
    if rec["is_best"]:
        state.best = val["score"]
    return rec


def epoch_line(rec: dict) -> str:
    distill = f" (distill {rec['loss_distill']:.4f})" if "loss_distill" in rec else ""
    return (f"epoch {rec['epoch']} step {rec['step']}: loss {rec.get('loss', 0):.3f}{distill} "
            f"{rec['voxels_per_s']:.0f} vox/s val F4 {rec['val_score']:.4f} "
            + " ".join(f"{k}=" + ("-" if rec.get("val_references", {}).get(k, 1) == 0
                                  else f"{v:.2f}") for k, v in rec["val_f4"].items()))


def start_line(cfg: Config, train_s: list[RunSample], val_s: list[RunSample], world: int
               ) -> str:
    """What is about to happen, before the first (long) epoch."""
    t = cfg.train
    n_vox = sum(len(s.sv) for s in train_s)
    init = f"from {Path(t.init_checkpoint).name}" if t.init_checkpoint else "from scratch"
    each = " per worker" if world > 1 else ""
    variants = cfg.data.appearance_variants
    runs = (f"{len(train_s) // (variants + 1)} run(s) and {variants} appearance variant(s) "
            f"of each" if variants else f"{len(train_s)} run(s)")
    return (f"training {init} on {runs}{each} ({n_vox:,} voxels), "
            f"validating on {len(val_s)}{each}, {world} worker(s): {t.steps} steps in epochs of "
            f"{t.steps_per_epoch}, batch {t.batch_size}, lr {t.lr:g}"
            + (f", time budget {t.time_budget_s:.0f} s" if t.time_budget_s > 0 else "")
            + (f", weights averaged (EMA {t.ema_decay:g})" if t.ema_decay > 0 else ""))


def share(items: list, rank: int, world: int, at_least_one: bool = False) -> list:
    """Rank's slice of `items`; with `at_least_one` a rank past the end reuses one item."""
    mine = items[rank::world]
    return mine or ([items[rank % len(items)]] if at_least_one and items else [])


def _alone(obj) -> list:
    return [obj]


@dataclass
class Hooks:
    """What a Ray Train worker changes in the loop; the defaults are a single process."""

    save: Callable[[TrainState, dict, dict], None]  # (state, epoch record, validation)
    rank: int = 0
    world: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m  # DDP
    gather: Callable[[object], list] = _alone  # every rank's object, in rank order
    say: Callable[[str], None] = say


def _validate(state: TrainState, val_s: list[RunSample], cfg: Config, device: torch.device, *,
              hooks: Hooks, payload: dict) -> tuple[dict, list[dict]]:
    """This rank's validation detections, gathered with every rank's; thresholds tuned on
    all of them together. Returns (validation summary, every rank's payload)."""
    dets = detect_runs(state.weights, val_s, state.particles, cfg, device)
    parts = hooks.gather(payload | {"dets": dets, "truths": [s.truth_xyz_A for s in val_s]})
    tuning, calibration = calibrate_and_tune([d for p in parts for d in p["dets"]],
                                             [t for p in parts for t in p["truths"]],
                                             state.particles,
                                             unannotated_from=state.threshold_prior)
    return tuning.summary() | {"calibration": calibration}, parts


def fit(cfg: Config, hooks: Hooks, *, device: torch.device, resume_doc: dict | None = None,
        progress: bool = False) -> TrainState:
    """Trains until cfg.train.steps (or the time budget); `resume_doc` continues a run."""
    from tqdm import tqdm

    torch.manual_seed(cfg.train.seed)
    project = annotated_project(cfg)
    train_runs, val_runs = split_runs(cfg, project)
    train_s = load_samples(cfg, project, share(train_runs, hooks.rank, hooks.world, True),
                           variants=cfg.data.appearance_variants,
                           share_range=tuple(cfg.train.keep_share_range) or None)
    val_s = load_samples(cfg, project, share(val_runs, hooks.rank, hooks.world))
    state = build_state(cfg, train_s[0].sv.feature_names, project.particles, device)
    if hooks.rank == 0:
        hooks.say(start_line(cfg, train_s, val_s, hooks.world))
    if resume_doc is not None:
        state.restore(resume_doc)
        if hooks.rank == 0:
            hooks.say(f"resumed from checkpoint at step {state.step} "
                      f"(epoch {len(state.history)})")
    state.model = hooks.wrap(state.core)
    sampler = CropSampler(train_s, cfg.train,
                          seed=cfg.train.seed + state.step + RANK_SEED_STRIDE * hooks.rank)
    batch_size = max(1, cfg.train.batch_size // hooks.world)
    bar = tqdm(total=cfg.train.steps, initial=state.step, desc="train", unit="step",
               disable=not progress or hooks.rank != 0)
    t_start = time.perf_counter()
    state.model.train()
    while state.step < cfg.train.steps:
        t0 = time.perf_counter()
        metrics = run_epoch(state, sampler, cfg, device, batch_size=batch_size,
                            on_step=lambda m: bar.update(1) or bar.set_postfix(
                                loss=f"{m['loss']:.3f}"))
        val, parts = _validate(state, val_s, cfg, device, hooks=hooks, payload={
            "voxels": metrics["voxels"], "elapsed": time.perf_counter() - t_start})
        metrics["voxels"] = sum(p["voxels"] for p in parts)  # the whole cluster's throughput
        rec = epoch_record(state, metrics, val, time.perf_counter() - t0)
        hooks.save(state, rec, val)
        if hooks.rank == 0:
            hooks.say(epoch_line(rec))
        reason = (stop_reason(cfg, state, max(p["elapsed"] for p in parts))
                  if state.step < cfg.train.steps else None)
        if reason:
            if hooks.rank == 0:
                hooks.say(f"{reason}: stopping at step {state.step}")
            break
    bar.close()
    return state


def stop_reason(cfg: Config, state: TrainState, elapsed_s: float) -> str | None:
    """Why to stop before train.steps, if at all. Every rank decides alike (the slowest
    rank's clock, the gathered validation), so all report equally often."""
    budget = cfg.train.time_budget_s
    if budget > 0 and elapsed_s > budget:
        return f"time budget of {budget:.0f} s spent"
    patience = cfg.train.patience
    scores = [h["val_score"] for h in state.history]
    if patience > 0 and len(scores) - 1 - scores.index(max(scores)) >= patience:
        return f"no better validation F4 in {patience} epoch(s)"
    return None


def check_same_start(path: Path, resume_doc: dict, cfg: Config) -> None:
    """A run folder resumes only the run it holds: one started from other weights than
    train.init_checkpoint would silently ignore --init."""
    was = resume_doc.get("config", {}).get("train", {}).get("init_checkpoint", "")
    now = cfg.train.init_checkpoint
    if (Path(was).resolve() if was else None) != (Path(now).resolve() if now else None):
        raise CheckpointError(
            f"{path}: this folder holds a run started from {was or 'scratch'}, not from "
            f"{now or 'scratch'}; resuming it would ignore that. Pass --fresh to start over "
            "here, or another --out-dir")


def train(cfg: Config, *, progress: bool = True, resume: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> Path:
    """Single-process training. Writes <out_dir>/last.pt and history.json each epoch and
    best.pt on the best validation score; resumes from last.pt unless `resume` is False.
    Returns the best checkpoint's path."""
    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    resume_doc = read_checkpoint(last) if resume and last.is_file() else None
    if resume_doc is not None:
        check_same_start(last, resume_doc, cfg)

    def save(state: TrainState, rec: dict, val: dict) -> None:
        common = state.checkpoint_fields(cfg, val)
        if rec["is_best"]:
            save_checkpoint(out / "best.pt", **common,
                            extra={"step": state.step, "val": val, "history": state.history})
        save_checkpoint(last, **common, extra=state.resume_extra(val))
        atomic_write_text(out / "history.json", json.dumps(state.history, indent=1))
        if on_epoch:
            on_epoch(rec)

    fit(cfg, Hooks(save=save), device=device, resume_doc=resume_doc, progress=progress)
    return out / "best.pt"
