"""The `ray:` section of a training config: how ray_jobs.train spreads training over a Ray
cluster. The library (sparse_det) never reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sparse_det.config import (
    Config,
    ConfigError,
    build_section,
    config_from_dict,
    read_config_file,
    resolve_path,
)

CHECKPOINT_FILE = "checkpoint.pt"  # inside each Ray checkpoint folder; sparse_det.infer loads it


@dataclass
class RayConfig:
    num_workers: int = 1  # DDP workers; train.batch_size is split between them
    use_gpu: bool = False  # one GPU per worker, NCCL; else gloo on CPUs
    cpus_per_worker: int = 1  # also each worker's torch threads
    max_failures: int = 3  # worker-group restarts from the last checkpoint
    storage_path: str = ""  # Ray Train storage (shared by all nodes); empty: train.out_dir
    name: str = "ray_train"  # run folder under storage_path; the same name resumes

    def to_dict(self) -> dict:
        return asdict(self)


def ray_config_from_dict(d: dict | None, base_dir: Path | None = None) -> RayConfig:
    rc = build_section(RayConfig, d or {}, "config.ray")
    rc.storage_path = resolve_path(rc.storage_path, base_dir)
    return rc


def load_train_config(path: str | Path, root: str | Path | None = None
                      ) -> tuple[Config, RayConfig]:
    """The library's config and the `ray:` section of one YAML file."""
    d, base = read_config_file(path, root)
    try:
        return config_from_dict(d, base), ray_config_from_dict(d.get("ray"), base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
