"""Sparsifies every run of a project in parallel with Ray: one task per run.

    python -m ray_jobs.preprocess --project DIR --out SHARDS [--config FILE] [--address ADDR]
                                  [--workers N] [--force]

Idempotent and resumable: a run whose complete shard matches the config is skipped; shards
are written under a temporary name and renamed; a failing run is reported by name while the
others finish, and the exit code is 1. Workers read the tomograms themselves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data_tools.cli_args import add_runs_argument, at_least, expand_home
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from data_tools.peak_memory import estimated_peak_bytes
from data_tools.run_names import runs_named
from data_tools.shards import shard_matches, shard_path, write_shard
from data_tools.sparsify import sparsify_run
from data_tools.sparsify_config import SparsifyConfig, load_config
from data_tools.tomo_input import add_input_arguments, input_overrides, with_overrides
from ray_jobs.cluster import init_ray, largest_node_memory, task_memory


def preprocess_run(project_path: str, run: str, cfg_dict: dict, out_dir: str,
                   force: bool = False) -> dict:
    """One run, in a worker. Never raises: the result says done, skipped or failed."""
    t0 = time.perf_counter()
    try:
        cfg = SparsifyConfig.from_dict(cfg_dict)
        if not force and shard_matches(shard_path(out_dir, run), cfg.to_dict()):
            return {"run": run, "status": "skipped", "seconds": 0.0}
        # A task holds one CPU: one filter thread and one blosc thread, so that N workers
        # do not fight over the cores.
        import numcodecs

        numcodecs.blosc.set_nthreads(1)
        sv = sparsify_run(CopickProject(project_path), run, cfg, threads=1)
        write_shard(sv, out_dir)
        return {"run": run, "status": "done", "voxels": len(sv),
                "seconds": time.perf_counter() - t0, "ended_at": time.time()}
    except Exception as exc:  # reported by name; the other runs go on
        return {"run": run, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}


def preprocess_project(project_path: str | Path, out_dir: str | Path, cfg: SparsifyConfig, *,
                       runs: list[str] | None = None, force: bool = False,
                       address: str | None = None, workers: int | None = None,
                       progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    project = CopickProject(project_path)  # a missing project or run fails before Ray starts
    project.require_runs()
    runs = runs_named([project], runs)[0]
    ray = init_ray(address, num_cpus=workers)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    task = ray.remote(num_cpus=1, max_retries=1)(preprocess_run)
    # Each task reserves its run's estimated peak: large tomograms run fewer at a time.
    largest = largest_node_memory()
    pending = [task.options(**task_memory(estimated_peak_bytes(project, r, cfg), largest)).remote(
        str(Path(project_path).resolve()), r, cfg.to_dict(), str(Path(out_dir).resolve()),
        force) for r in runs]
    results = []
    with tqdm(total=len(pending), desc="preprocess", unit="run", disable=not progress) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            res = ray.get(ready[0])
            results.append(res)
            bar.update(1)
            if res["status"] == "failed":
                bar.write(f"FAILED {res['run']}: {res['error']}")
    return sorted(results, key=lambda r: r["run"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config")
    add_runs_argument(ap)
    ap.add_argument("--address", help="Ray address; default: a local Ray on 127.0.0.1")
    ap.add_argument("--workers", type=at_least(1), help="CPUs of the local Ray (default: all)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    add_input_arguments(ap)
    a = expand_home(ap.parse_args(argv))
    try:
        cfg = with_overrides(load_config(a.config), input_overrides(a))
        CopickProject(a.project)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = preprocess_project(a.project, a.out, cfg, runs=a.runs, force=a.force,
                                 address=a.address, workers=a.workers,
                                 progress=not a.quiet and sys.stderr.isatty())
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
          f"in {time.perf_counter() - t0:.1f} s -> {a.out}")
    for r in results:
        if r["status"] == "failed":
            print(f"failed: {r['run']}: {r['error']}", file=sys.stderr)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
