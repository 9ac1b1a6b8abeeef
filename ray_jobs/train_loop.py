"""The Ray Train worker loop: DDP around the same pieces sparse_det.engine uses.

Each worker reads its own share of the training shards (nothing large passes through the
driver), steps with 1/world of the global batch, validates its share of the validation runs,
and all workers tune thresholds on the gathered detections. Rank 0 reports a checkpoint each
epoch; a restarted worker group resumes from the latest one.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from data_tools.copick_io import CopickProject
from sparse_det.checkpoint import read_checkpoint, save_checkpoint
from sparse_det.config import config_from_dict
from sparse_det.data import CropSampler
from sparse_det.engine import (
    build_state,
    detect_runs,
    epoch_line,
    epoch_record,
    load_samples,
    run_epoch,
    score_detections,
    split_runs,
)

CHECKPOINT_FILE = "checkpoint.pt"  # inside each Ray checkpoint folder; sparse_det.infer loads it


def say(msg: str) -> None:
    """A line for `ray job logs`. Not print(): Ray Train patches it and the line shows twice."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def share(items: list, rank: int, world: int, at_least_one: bool = False) -> list:
    """Rank's slice of `items`; with `at_least_one` a rank past the end reuses one item."""
    mine = items[rank::world]
    return mine or ([items[rank % len(items)]] if at_least_one and items else [])


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


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch as rtt

    cfg = config_from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = rtt.get_device()
    torch.set_num_threads(max(1, cfg.ray.cpus_per_worker))
    torch.manual_seed(cfg.train.seed)
    project = CopickProject(cfg.data.project)
    particles = project.particles
    train_runs, val_runs = split_runs(cfg, project)
    train_s = load_samples(cfg, project, share(train_runs, rank, world, at_least_one=True))
    val_s = load_samples(cfg, project, share(val_runs, rank, world))
    feature_names = train_s[0].sv.feature_names
    state = build_state(cfg, feature_names, len(particles), device)
    ck = ray.train.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            state.restore(read_checkpoint(Path(d) / CHECKPOINT_FILE))
        if rank == 0:
            say(f"resumed from checkpoint at step {state.step} (epoch {len(state.history)})")
    state.model = rtt.prepare_model(state.core)  # DDP when world > 1
    batch_size = max(1, cfg.train.batch_size // world)
    # Different crops per rank; a resumed run does not replay the crops it has seen.
    sampler = CropSampler(train_s, crop_zyx=cfg.train.crop_zyx, flip_xy=cfg.train.flip_xy,
                          intensity_jitter=cfg.train.intensity_jitter,
                          seed=cfg.train.seed + state.step + 100_003 * rank)
    t_start = time.perf_counter()
    state.model.train()
    while state.step < cfg.train.steps:
        t0 = time.perf_counter()
        metrics = run_epoch(state, sampler, cfg, device, batch_size=batch_size)
        dets = detect_runs(state.core, val_s, particles, cfg, device)
        parts = _all_gather({"dets": dets, "truths": [s.truth_xyz_A for s in val_s],
                             "voxels": metrics["voxels"],
                             "elapsed": time.perf_counter() - t_start})
        metrics["voxels"] = sum(p["voxels"] for p in parts)  # the whole cluster's throughput
        val = score_detections([d for p in parts for d in p["dets"]],
                               [t for p in parts for t in p["truths"]], particles, cfg)
        rec = epoch_record(state, metrics, val, time.perf_counter() - t0)
        # Every rank decides alike (the slowest rank's clock), so all report equally often.
        out_of_time = (cfg.train.time_budget_s > 0
                       and max(p["elapsed"] for p in parts) > cfg.train.time_budget_s)
        report = flat_metrics(rec) | {"world_size": world}
        if rank == 0:
            say(epoch_line(rec))
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(Path(tmp) / CHECKPOINT_FILE, model=state.core, config=cfg,
                                particles=particles, feature_names=feature_names,
                                thresholds=val["thresholds"], extra=state.resume_extra(val))
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report)
        if out_of_time:
            if rank == 0:
                say(f"time budget of {cfg.train.time_budget_s:.0f} s spent at step {state.step}")
            break
