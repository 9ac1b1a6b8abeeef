"""Training: the one loop, run alone (`python -m sparse_det.train`) or as every worker of a
Ray Train job (ray_jobs/train_loop.py), read top to bottom in `fit`:

    shards + targets of this rank's runs (data.py) → random sparse crops → AdamW with a
    warm-up + cosine learning rate → each epoch: detections on the validation runs,
    gathered from all ranks → per-class thresholds tuned for F4 → checkpoint and metrics →
    stop at train.steps or when the time budget is spent.

A single process is the one-worker case. A Ray worker differs in its `Hooks` only: its rank,
how the model is wrapped (DDP), how validation detections are gathered, and where an epoch's
checkpoint and metrics go.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data_tools.atomic import atomic_write_text
from data_tools.particles import ParticleTable
from sparse_det.calibrated_tuning import calibrate_and_tune
from sparse_det.checkpoint import (
    CheckpointError,
    checkpoint_settings,
    read_checkpoint,
    save_checkpoint,
)
from sparse_det.config import Config, ConfigError, TrainConfig
from sparse_det.data import CropSampler, RunSample, annotated_project, load_samples, split_runs
from sparse_det.device import resolve_device
from sparse_det.inference import detect_sparse
from sparse_det.losses import detection_losses, distill_loss, label_weights
from sparse_det.model import build_model, load_deepened, remap_classes, widen_input
from sparse_det.structures import Detections

WARMUP_FRACTION = 0.05  # of all steps, linear warm-up of the learning rate
LR_FLOOR = 0.02  # the cosine decays to this fraction of train.lr
RANK_SEED_STRIDE = 100_003  # ranks draw different crops: seed + step + stride·rank


def lr_factor(step: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to LR_FLOOR — a pure function of the step, so a
    resumed (or extended) run continues the same curve."""
    warm = max(1, int(WARMUP_FRACTION * total_steps))
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(model: torch.nn.Module, train: TrainConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, train.steps))
    return opt, sched


@dataclass
class TrainState:
    """Everything a resumed run needs. `model` may be wrapped (DDP); `core` never is."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    particles: ParticleTable
    feature_names: list[str]
    step: int = 0
    best: float = -1.0
    history: list[dict] = field(default_factory=list)
    label_weight: torch.Tensor | None = None  # class-loss weight per label (losses.label_weights)
    # The init checkpoint's (thresholds, calibration): a class no validation run annotates
    # keeps its threshold, which those runs cannot set (calibrated_tuning.calibrate_and_tune).
    threshold_prior: tuple[dict, dict] | None = None
    # The init checkpoint's model, frozen (_teacher), where loss.distill_weight > 0, and the
    # labels it knew (0 and its classes): the term reads those alone.
    teacher: torch.nn.Module | None = None
    teacher_labels: torch.Tensor | None = None
    # The moving average of the weights, where train.ema_decay > 0 (update_ema).
    ema: torch.nn.Module | None = None

    @property
    def core(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)

    @property
    def weights(self) -> torch.nn.Module:
        """The model validation reads and checkpoints hold: the average where there is one."""
        return self.ema if self.ema is not None else self.core

    def checkpoint_fields(self, cfg: Config, val: dict) -> dict:
        """save_checkpoint's arguments but the extra: the model and what inference needs."""
        return {"model": self.weights, "config": cfg, "particles": self.particles,
                "feature_names": self.feature_names, "thresholds": val["thresholds"],
                "calibration": val.get("calibration")}

    def resume_extra(self, val: dict) -> dict:
        raw = {"raw_model": self.core.state_dict()} if self.ema is not None else {}
        return {"step": self.step, "best": self.best, "history": self.history, "val": val,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()} | raw

    def restore(self, doc: dict) -> None:
        """From a checkpoint written with resume_extra (the model must not be wrapped yet or
        be the same wrapped object: weights go into `core`; with a moving average, the
        document's model is the average and the raw weights are in its extra)."""
        ex = doc["extra"]
        if (self.ema is not None) != ("raw_model" in ex):
            raise CheckpointError("the run to resume was trained with"
                                  + ("out" if self.ema is not None else "")
                                  + " train.ema_decay; resume it with the same setting, or "
                                  "start afresh (--fresh or another --out-dir)")
        if self.ema is not None:
            self.ema.load_state_dict(doc["model"])
        self.core.load_state_dict(ex.get("raw_model", doc["model"]))
        self.opt.load_state_dict(ex["optimizer"])
        self.sched.load_state_dict(ex["scheduler"])
        self.step, self.best, self.history = ex["step"], ex["best"], ex["history"]


def _init_state(path: str, feature_names: list[str], particles: ParticleTable,
                class_map: dict[str, str] | None = None) -> tuple[dict, dict[str, str]]:
    """The init checkpoint's document, its weights made to read `feature_names` (new ones
    at weight 0) and to predict `particles`' classes, matched to the checkpoint's as
    sparse_det/class_match.py says (by name, by another name, by PDB ID, or `class_map`):
    a project whose config lists the classes in another order, by other names, fewer of
    them or new ones trains the rows that mean its classes. And {checkpoint class: its
    name in the project}."""
    from sparse_det.class_match import match_classes, rename_classes

    init = read_checkpoint(path)
    init_features = list(init["feature_names"])
    if init_features != feature_names[:len(init_features)]:
        raise CheckpointError(f"{path}: features {init_features} differ from {feature_names}")
    if len(init_features) < len(feature_names):
        init["model"] = widen_input(init["model"], len(feature_names))
        _say(f"{path}: reads {len(init_features)} features; the "
             f"{len(feature_names) - len(init_features)} new ones start at weight 0")
    known = ParticleTable.from_list(init["particles"])
    match = match_classes(known, particles, class_map)
    for line in match.renamed() + match.warnings(known, particles):
        _say(f"{path}: {line}")
    renaming = match.renaming(known.names)
    init = rename_classes(init, renaming)
    had = [p["name"] for p in init["particles"]]
    if had != particles.names:
        try:
            init["model"] = remap_classes(init["model"], had, particles.names)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: its class head does not fit its particle table "
                                  f"({exc})") from exc
        new = [n for n in particles.names if n not in had]
        dropped = [n for n in had if n not in particles]
        _say(f"{path}: classes matched by name to the project's {particles.names}"
             + (f"; new, learnt from the annotations alone: {new}" if new else "")
             + (f"; left out: {dropped}" if dropped else "")
             + (" (a class the checkpoint knows by another name starts from what it "
                "learnt with train.class_map / --class-map NAME=CLASS)"
                if new and dropped else ""))
    return init, renaming


def build_state(cfg: Config, feature_names: list[str], particles: ParticleTable,
                device: torch.device) -> TrainState:
    """A fresh model (or the init checkpoint's weights), optimiser and schedule."""
    label_weight = label_weights(particles, background_weight=cfg.loss.background_weight,
                                 class_weights=cfg.loss.class_weights)
    model = build_model(in_channels=len(feature_names), num_classes=len(particles),
                        channels=cfg.model.channels,
                        blocks_per_level=cfg.model.blocks_per_level, device=device)
    renaming: dict[str, str] = {}
    init_names: list[str] = []
    if cfg.train.init_checkpoint:
        init, renaming = _init_state(cfg.train.init_checkpoint, feature_names, particles,
                                     cfg.train.class_map)
        init_names = [p["name"] for p in init["particles"]]
        init_blocks = init["config"].get("model", {}).get("blocks_per_level", 1)
        try:
            if init_blocks < cfg.model.blocks_per_level:
                load_deepened(model, init["model"])
                _say(f"{cfg.train.init_checkpoint}: {init_blocks} encoder block(s) per level"
                     f" grown to {cfg.model.blocks_per_level}, the new ones the identity")
            else:
                model.load_state_dict(init["model"])
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{cfg.train.init_checkpoint}: weights do not fit this "
                                  f"config's model ({str(exc)[:200]})") from exc
    if cfg.loss.distill_weight > 0 and not cfg.train.init_checkpoint:
        raise ConfigError("loss.distill_weight > 0 keeps the model near the checkpoint it "
                          "starts from: set train.init_checkpoint (train --init PT)")
    teacher, taught = _teacher(model, init_names, particles) if cfg.loss.distill_weight > 0 \
        else (None, None)
    opt, sched = make_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.amp and device.type == "cuda" else None
    prior = (checkpoint_settings(cfg.train.init_checkpoint).network_prior(cfg.postprocess.tta)
             if cfg.train.init_checkpoint else None)
    if prior is not None:  # keyed by the checkpoint's names
        prior = tuple({renaming.get(k, k): v for k, v in d.items()} for d in prior)
    ema = (copy.deepcopy(model).eval().requires_grad_(False) if cfg.train.ema_decay > 0
           else None)
    return TrainState(model, opt, sched, scaler, particles, list(feature_names),
                      label_weight=label_weight, threshold_prior=prior, teacher=teacher,
                      teacher_labels=taught, ema=ema)


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


def _teacher(model: torch.nn.Module, init_names: list[str], particles: ParticleTable
             ) -> tuple[torch.nn.Module, torch.Tensor]:
    """A frozen copy of the model as initialised, and the labels its checkpoint knew (0 and
    the classes in `init_names`). A class new to it starts with a zero row (remap_classes):
    its probability there is no knowledge to keep, so the term compares the distributions
    over the known labels only (learning without forgetting), and the new class is free.
    The copy is in eval mode: its output is what the init would pick with. (With batch
    statistics, as the model trains, 4 tilt series fine-tuned to 0.805 out of fold against
    0.847: docs/experiments.md, *Learning without forgetting*.)"""
    labels = [0] + [particles.class_index(n) for n in particles.names if n in init_names]
    return (copy.deepcopy(model).eval().requires_grad_(False),
            torch.tensor(labels, dtype=torch.long, device=next(model.parameters()).device))


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


def _say(msg: str) -> None:
    """A log line; not print(), which Ray Train patches (every line would show twice)."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


@dataclass
class Hooks:
    """What a Ray Train worker changes in the loop; the defaults are a single process."""

    save: Callable[[TrainState, dict, dict], None]  # (state, epoch record, validation)
    rank: int = 0
    world: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m  # DDP
    gather: Callable[[object], list] = _alone  # every rank's object, in rank order
    say: Callable[[str], None] = _say


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
