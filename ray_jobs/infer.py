"""Ray-parallel inference: one task per run, gathered into one table in run order, identical
to sparse_det.stream.infer_project's. Workers read the tomograms and the checkpoint
themselves, so the project and checkpoint must be on storage every node sees."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from sparse_det.config import INFER_PRECISION


def _infer_one(project_path: str, checkpoint: str, run: str, device: str,
               shards_dir: str | None, input_overrides: dict | None,
               precision: str, tta: str | None, rescore: bool = True,
               parts_dir: str | None = None,
               class_map: dict[str, str] | None = None) -> pd.DataFrame:
    import torch

    from sparse_det.stream import infer_project

    torch.set_num_threads(1)  # a task holds one CPU
    return infer_project(CopickProject(project_path), checkpoint, runs=[run], device=device,
                         shards_dir=shards_dir, input_overrides=input_overrides,
                         precision=precision, tta=tta, rescore=rescore, parts_dir=parts_dir,
                         class_map=class_map)


def infer_project_ray(project: CopickProject, checkpoint: str | Path, *,
                      runs: list[str] | None = None, device: str = "auto",
                      shards_dir: str | Path | None = None, address: str | None = None,
                      progress: bool = False, input_overrides: dict | None = None,
                      precision: str = INFER_PRECISION, tta: str | None = None,
                      rescore: bool = True, parts_dir: str | Path | None = None,
                      class_map: dict[str, str] | None = None) -> pd.DataFrame:
    import ray
    from tqdm import tqdm

    from data_tools.peak_memory import estimated_peak_bytes
    from data_tools.tomo_input import with_overrides
    from ray_jobs.cluster import init_ray, largest_node_memory, task_memory
    from sparse_det.checkpoint import checkpoint_settings
    from sparse_det.structures import DETECTION_COLUMNS

    runs = runs or project.require_runs()
    unknown = sorted(set(runs) - set(project.runs()))
    if unknown:
        raise DataError(f"{project.path}: runs {unknown} not in project")
    init_ray(address)
    task = ray.remote(num_cpus=1, max_retries=1)(_infer_one)
    shards = str(Path(shards_dir).resolve()) if shards_dir else None
    # Each task keeps its run's picks there itself (infer_project's parts_dir): storage every
    # node sees, like the project's.
    parts = str(Path(parts_dir).resolve()) if parts_dir else None
    # Each task reserves its run's estimated peak: large tomograms run fewer at a time.
    cfg = with_overrides(checkpoint_settings(checkpoint).config.sparsify, input_overrides)
    largest = largest_node_memory()
    refs = {task.options(**task_memory(estimated_peak_bytes(project, run, cfg), largest)).remote(
                str(Path(project.path).resolve()), str(Path(checkpoint).resolve()), run, device,
                shards, input_overrides, precision, tta, rescore, parts, class_map): run
            for run in runs}
    tables, pending = {}, list(refs)
    with tqdm(total=len(refs), desc="infer (ray)", unit="tomogram", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            run = refs[done[0]]
            try:
                tables[run] = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                for ref in pending:
                    ray.cancel(ref)
                raise DataError(f"run {run!r}: {exc.cause or exc}") from exc
            bar.update(1)
    picked = [tables[r] for r in runs if len(tables[r])]
    return (pd.concat(picked, ignore_index=True) if picked
            else pd.DataFrame(columns=DETECTION_COLUMNS))
