"""Fine-tuning as a Ray job: sparse_det.finetune's recipe with its folds trained at once, one
Ray task per fold, on as many machines as the cluster has.

    python -m ray_jobs.finetune --project DIR --out my.pt [the options of sparse_det.finetune]
        [--address ADDR] [--cpus-per-fold N]

The folds are independent trainings from the same base weights, so they run in parallel;
the out-of-fold thresholds and the final model follow on the driver as in the single-process
command. Before the folds start, the driver makes every shard they read (each run and its
appearance copies), so no two tasks ever write the same shard. The project, the base
checkpoint and `--work` must be on storage every node sees.
"""

from __future__ import annotations

from pathlib import Path

from data_tools.cli_args import at_least, expand_home
from sparse_det.finetune import finetune_arguments, run_finetune_command


def _train_fold(cfg) -> str:
    from sparse_det.training import train

    return str(train(cfg, progress=False))  # on cfg.train.num_threads CPU threads


def _make_shards(cfgs) -> None:
    """Every shard the folds will read, made here one after the other."""
    from sparse_det.data import annotated_project, load_samples

    cfg = cfgs[0]
    project = annotated_project(cfg)
    runs = sorted({r for c in cfgs for r in c.data.train_runs + c.data.val_runs})
    load_samples(cfg, project, runs, variants=cfg.data.appearance_variants)


def _abs(path: str) -> str:
    return str(Path(path).resolve()) if path else path


def ray_trainer(address: str | None, cpus_per_fold: int):
    """A `trainer` for sparse_det.finetune.finetune: one Ray task per fold."""

    def run(cfgs) -> list[str]:
        import ray

        from ray_jobs.cluster import init_ray

        _make_shards(cfgs)
        init_ray(address)
        task = ray.remote(num_cpus=cpus_per_fold, max_retries=1)(_train_fold)
        for c in cfgs:  # workers need not share the driver's working directory
            c.train.num_threads = cpus_per_fold
            c.data.project, c.data.shards = _abs(c.data.project), _abs(c.data.shards)
            c.train.out_dir, c.train.init_checkpoint = (_abs(c.train.out_dir),
                                                        _abs(c.train.init_checkpoint))
        return ray.get([task.remote(c) for c in cfgs])

    return run


def main(argv: list[str] | None = None) -> int:
    ap = finetune_arguments(__doc__)
    ap.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS, else a private "
                    "local Ray)")
    ap.add_argument("--cpus-per-fold", type=at_least(1), default=1)
    a = expand_home(ap.parse_args(argv))
    return run_finetune_command(a, trainer=ray_trainer(a.address, a.cpus_per_fold))


if __name__ == "__main__":
    raise SystemExit(main())
