"""What a training run carries from step to step and across a resume (TrainState), and how
it starts: a fresh model or an init checkpoint's weights made to read this config's
features and predict the project's classes, the optimiser with its warm-up and cosine
schedule, the frozen teacher of a distilling fine-tune and the moving average."""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field

import torch

from data_tools.particles import ParticleTable
from sparse_det.checkpoint import CheckpointError, checkpoint_settings, read_checkpoint
from sparse_det.config import Config, ConfigError, TrainConfig
from sparse_det.losses import label_weights
from sparse_det.model import build_model, load_deepened, remap_classes, widen_input

WARMUP_FRACTION = 0.05  # of all steps, linear warm-up of the learning rate
LR_FLOOR = 0.02  # the cosine decays to this fraction of train.lr


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
        say(f"{path}: reads {len(init_features)} features; the "
             f"{len(feature_names) - len(init_features)} new ones start at weight 0")
    known = ParticleTable.from_list(init["particles"])
    match = match_classes(known, particles, class_map)
    for line in match.renamed() + match.warnings(known, particles):
        say(f"{path}: {line}")
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
        say(f"{path}: classes matched by name to the project's {particles.names}"
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
                say(f"{cfg.train.init_checkpoint}: {init_blocks} encoder block(s) per level"
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


def say(msg: str) -> None:
    """A log line; not print(), which Ray Train patches (every line would show twice)."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()
