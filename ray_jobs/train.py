"""Distributed training with Ray Train: DDP workers (gloo on CPUs, NCCL on GPUs).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m ray_jobs.train --config configs/smoke.yaml
    python -m ray_jobs.train --config configs/NAME.yaml [--num-workers N] [--use-gpu]
        [--cpus-per-worker C] [--steps N] [--root DIR] [--address ADDR] [--fresh]

The driver makes the project when the config says to simulate one, sparsifies missing shards
as Ray tasks, then runs a TorchTrainer. Checkpoints go to <storage_path>/<name> (default
<train.out_dir>/ray_train); a resubmitted job with the same name resumes from the latest one,
and up to ray.max_failures worker-group failures are recovered from it. At the end the best
and last checkpoints are copied to <train.out_dir>/best.pt and last.pt, the same format
`python -m sparse_det.infer --checkpoint` loads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from data_tools.atomic import atomic_path, atomic_write_text
from data_tools.cli_args import at_least, expand_home
from data_tools.particles import DataError
from ray_jobs.config import CHECKPOINT_FILE, RayConfig, load_train_config
from sparse_det.checkpoint import read_checkpoint
from sparse_det.config import Config, ConfigError

ROOT_ENV = "SPARSE_DET_ROOT"  # where relative config paths resolve; `make ray-up` sets it


def prepare_data(cfg: Config, address: str | None, progress: bool) -> None:
    """Simulates the project if the config asks for one and it is missing; writes every
    missing shard with Ray tasks."""
    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import ensure_project
    from ray_jobs.preprocess import preprocess_project
    from sparse_det.data import annotated_project, split_runs

    sim = cfg.data.simulate
    if sim.runs > 0:
        ensure_project(cfg.data.project, sim.runs, sim.seed, sim.shape_zyx,
                       SimRanges.from_dict(sim.ranges), progress=progress)
    project = annotated_project(cfg)
    train_runs, val_runs = split_runs(cfg, project)
    runs = sorted(set(train_runs + val_runs))
    results = preprocess_project(project.path, cfg.data.shards, cfg.sparsify, runs=runs,
                                 address=address, progress=progress)
    failed = [f"{r['run']}: {r['error']}" for r in results if r["status"] == "failed"]
    if failed:
        raise DataError("preprocessing failed for " + "; ".join(failed))


def storage_path(cfg: Config, ray_cfg: RayConfig) -> str:
    """Ray Train's storage: ray.storage_path, else train.out_dir; the run is <it>/<name>."""
    return ray_cfg.storage_path or cfg.train.out_dir


def make_trainer(cfg: Config, ray_cfg: RayConfig):
    # The dashboard's Train view lists a run only with state tracking on (off by default).
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ray_jobs.train_loop import train_loop_per_worker

    r = ray_cfg
    resources = {"CPU": r.cpus_per_worker} | ({"GPU": 1} if r.use_gpu else {})
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "ray": r.to_dict()},
        torch_config=TorchConfig(backend="nccl" if r.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=r.name, storage_path=storage_path(cfg, r),
            failure_config=FailureConfig(max_failures=r.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2,
                                               checkpoint_score_attribute="val_score",
                                               checkpoint_score_order="max")))


def _copy_out(checkpoint, dest: Path) -> dict:
    with checkpoint.as_directory() as d, atomic_path(dest) as tmp:
        shutil.copyfile(Path(d) / CHECKPOINT_FILE, tmp)
    return read_checkpoint(dest)


def export_result(result, out_dir: Path) -> dict:
    """best.pt, last.pt and history.json in out_dir, from the Ray Train result."""
    if result.checkpoint is None:
        raise RuntimeError(f"{result.path}: training reported no checkpoint")
    out_dir.mkdir(parents=True, exist_ok=True)
    last = _copy_out(result.checkpoint, out_dir / "last.pt")
    best_ck = max(result.best_checkpoints or [(result.checkpoint, {"val_score": -1})],
                  key=lambda cm: cm[1].get("val_score", -1))[0]
    best = _copy_out(best_ck, out_dir / "best.pt")
    history = last["extra"]["history"]
    atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    return {"run_dir": str(result.path), "last": str(out_dir / "last.pt"),
            "best": str(out_dir / "best.pt"), "best_val_score": best["extra"]["val"]["score"],
            "epochs": len(history), "steps": last["extra"]["step"],
            "epoch_s": [round(h["epoch_s"], 2) for h in history]}


def train_distributed(cfg: Config, ray_cfg: RayConfig, *, address: str | None = None,
                      fresh: bool = False, progress: bool = False) -> dict:
    from ray_jobs.cluster import init_ray

    init_ray(address, quiet=False, dashboard=True)
    t0 = time.perf_counter()
    prepare_data(cfg, address, progress)
    prep_s = time.perf_counter() - t0
    where = f"{storage_path(cfg, ray_cfg).rstrip('/')}/{ray_cfg.name}"
    if fresh and "://" not in where and Path(where).exists():
        shutil.rmtree(where)
        print(f"--fresh: removed {where}", flush=True)
    result = make_trainer(cfg, ray_cfg).fit()
    summary = export_result(result, Path(cfg.train.out_dir))
    return summary | {"prepare_s": round(prep_s, 1),
                      "train_s": round(time.perf_counter() - t0 - prep_s, 1)}


def resolve_root(arg: str | None) -> str | None:
    root = arg or os.environ.get(ROOT_ENV)
    if root is None and "runtime_resources" in Path.cwd().parts:
        raise ConfigError(
            f"running inside Ray's temporary copy of the working dir ({Path.cwd()}): relative "
            f"config paths would put data and checkpoints there. Pass --root /path/to/checkout "
            f"or start the head with `make ray-up`, which sets {ROOT_ENV}")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--root", help=f"relative config paths resolve here (default: ${ROOT_ENV}, "
                                   "else the checkout the config is in)")
    ap.add_argument("--num-workers", type=at_least(1))
    ap.add_argument("--cpus-per-worker", type=at_least(1))
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--max-failures", type=at_least(0))
    ap.add_argument("--steps", type=at_least(1))
    ap.add_argument("--out-dir")
    ap.add_argument("--name", help="Ray Train run name (the same name resumes)")
    ap.add_argument("--address", help="Ray address; default: RAY_ADDRESS (set by `ray job "
                                      "submit`), else a private local Ray on 127.0.0.1")
    ap.add_argument("--fresh", action="store_true", help="delete this run's checkpoints first")
    ap.add_argument("--quiet", action="store_true")
    a = expand_home(ap.parse_args(argv))
    try:
        cfg, ray_cfg = load_train_config(a.config, root=resolve_root(a.root))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, value in (("num_workers", a.num_workers), ("cpus_per_worker", a.cpus_per_worker),
                       ("max_failures", a.max_failures), ("name", a.name)):
        if value is not None:
            setattr(ray_cfg, key, value)
    ray_cfg.use_gpu = ray_cfg.use_gpu or a.use_gpu
    if a.steps is not None:
        cfg.train.steps = a.steps
    if a.out_dir:
        cfg.train.out_dir = str(Path(a.out_dir).resolve())
    if "/" in ray_cfg.name or ray_cfg.name in ("", ".", ".."):
        print(f"error: run name {ray_cfg.name!r} must be a plain folder name", file=sys.stderr)
        return 2
    try:
        summary = train_distributed(cfg, ray_cfg, address=a.address, fresh=a.fresh,
                                    progress=not a.quiet and sys.stderr.isatty())
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # ray.train.TrainingFailedError and friends: one line, exit 1
        print(f"error: training failed: {type(exc).__name__}: {str(exc)[:500]}",
              file=sys.stderr)
        return 1
    print("result " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
