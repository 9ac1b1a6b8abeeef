"""The Ray Train worker: sparse_det.training.fit with a worker's hooks.

Each worker reads its own share of the training shards (nothing large passes through the
driver), steps with 1/world of the global batch, validates its share of the validation runs,
and all workers tune thresholds on the gathered detections. Rank 0 reports a checkpoint each
epoch; a restarted worker group resumes from the latest one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ray_jobs.config import CHECKPOINT_FILE, ray_config_from_dict
from sparse_det.checkpoint import read_checkpoint, save_checkpoint
from sparse_det.config import Config, config_from_dict
from sparse_det.train_state import TrainState
from sparse_det.training import Hooks, fit


def _all_gather(obj) -> list:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def flat_metrics(rec: dict) -> dict:
    """The epoch record as flat numbers, as dashboards and Result.metrics show them."""
    out = {k: v for k, v in rec.items() if isinstance(v, int | float)}
    for group in ("val_f4", "val_recall", "thresholds"):
        out |= {f"{group}/{k}": float(v) for k, v in rec[group].items()}
    return out


def _reporter(cfg: Config, rank: int, world: int):
    """Hooks.save for a worker: every rank reports the epoch's metrics; rank 0 attaches a
    resumable checkpoint (Ray Train keeps the best two by val_score, and the latest)."""
    import ray.train

    def save(state: TrainState, rec: dict, val: dict) -> None:
        report = flat_metrics(rec) | {"world_size": world}
        if rank != 0:
            ray.train.report(report)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp) / CHECKPOINT_FILE, **state.checkpoint_fields(cfg, val),
                            extra=state.resume_extra(val))
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    return save


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch as rtt

    cfg = config_from_dict(loop_config["config"])
    ray_cfg = ray_config_from_dict(loop_config["ray"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, ray_cfg.cpus_per_worker))
    resume_doc = None
    ck = ray.train.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            resume_doc = read_checkpoint(Path(d) / CHECKPOINT_FILE)
    hooks = Hooks(save=_reporter(cfg, rank, world), rank=rank, world=world,
                  wrap=rtt.prepare_model, gather=_all_gather)  # prepare_model: DDP if world > 1
    fit(cfg, hooks, device=rtt.get_device(), resume_doc=resume_doc)
