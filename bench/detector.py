"""Accuracy and speed of a checkpoint on held-out projects, end to end from zarr to CSV.

    python bench/detector.py --project data/heldout_ood [--project ...] [--checkpoint PT]
    python bench/detector.py --no-stages @configs/heldout_21.args   # the 7 held-out families
                             [--stream] [--json bench/detector.json]

Prints a markdown table: per-class F4 (with the checkpoint's thresholds), weighted F4,
seconds per tomogram (read + sparsify + network + voting + clustering; each run picked by a
call of its own), with `--stream` the seconds per tomogram of one call over each project's
runs as users pick a project (the picks must be the same), and peak RSS; then
per-stage seconds (read, sparsify, network, decode, rescore; on the given device, synced) and
the streaming throughput of one infer_project call over every run (the next run is read
while the current one is detected). Each result also stores `host_reference_s`
(bench/host.py: the host's seconds for a fixed filter and network workload), since the
same picker's seconds differ twofold between hosts of the same kind.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.host import host_reference, sync
from data_tools.copick_io import CopickProject
from data_tools.datasets import require_projects
from sparse_det.argfile import ArgumentFileParser
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.config import INFER_PRECISION, PRECISIONS, TTA_MIRRORS
from sparse_det.device import resolve_device
from sparse_det.inference import resolve_precision
from sparse_det.metric import score_tables
from sparse_det.stream import infer_project
from sparse_det.writers import project_solution, to_submission


def bench_project(path: str, checkpoint: str, device: str, overrides: dict | None = None,
                  tta: str | None = None, precision: str = INFER_PRECISION,
                  rescore: bool = True, stream: bool = False) -> dict:
    """F4 and seconds of each run picked alone (one infer_project call each); `stream`: also
    the seconds per tomogram of one call over all the project's runs, as a user's project is
    picked (the next run read and sparsified while this one is picked)."""
    project = CopickProject(path)
    runs = project.runs()
    kw = {"device": device, "input_overrides": overrides, "tta": tta, "precision": precision,
          "rescore": rescore}
    # warm-up (imports, allocator); its run's warnings come again when it is timed below
    quiet = logging.getLogger("sparse_det.inference")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        infer_project(project, checkpoint, runs=runs[:1], **kw)
    finally:
        quiet.setLevel(level)
    rows, times = [], []
    for run in runs:
        t0 = time.perf_counter()
        rows.append(infer_project(project, checkpoint, runs=[run], **kw))
        times.append(time.perf_counter() - t0)
    alone = pd.concat(rows)
    streamed = _streamed(project, checkpoint, runs, kw, alone) if stream else {}
    sub = to_submission(alone)
    solution = project_solution(project)
    score = score_tables(solution, sub, project.particles)
    # score_tables keeps only the solution's experiments: one run's solution scores that run
    by_run = {run: score_tables(solution[solution["experiment"] == run], sub, project.particles)
              for run in runs}
    return {"project": path, "runs": len(runs), "score": score.score,
            "per_run": {run: s.score for run, s in by_run.items()},
            # bench/families.py pools these over a family's runs, and resamples them
            "per_run_counts": {run: {k: [c.tp, c.fp, c.fn] for k, c in s.per_class.items()}
                               for run, s in by_run.items()},
            "per_class": {k: v.fbeta for k, v in score.per_class.items()},
            "recall": {k: v.recall for k, v in score.per_class.items()},
            "class_precision": {k: v.precision for k, v in score.per_class.items()},
            "infer_s_per_tomogram": sum(times) / len(times),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            **streamed}


def _streamed(project, checkpoint, runs, kw, alone: pd.DataFrame) -> dict:
    t0 = time.perf_counter()
    picks = infer_project(project, checkpoint, runs=runs, **kw)
    seconds = (time.perf_counter() - t0) / len(runs)
    same = picks.reset_index(drop=True).equals(alone.reset_index(drop=True))
    return {"stream_s_per_tomogram": seconds, "stream_same_picks": same}


class _Timed:
    """A resparsify callable that adds up the seconds it takes."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, share: float):
        t0 = time.perf_counter()
        out = self.fn(share)
        self.seconds += time.perf_counter() - t0
        return out


def run_stage_seconds(picker, project: CopickProject, run: str, device: str) -> dict:
    """Seconds of each stage of one run, as infer runs them (a crowded run's passes are
    read on its larger kept set: "reselect" is that selection)."""
    from data_tools.sparsify import read_input, sparsify
    from sparse_det.config import grows_kept_share
    from sparse_det.inference import detections_from_outputs, network_outputs
    from sparse_det.rescore import PROFILE_CHANNELS, channels_for
    from sparse_det.rescore import rescore as rescore_detections

    cfg, dev = picker.sparsify_config, picker.device
    t0 = time.perf_counter()
    tomo, info = read_input(project, run, cfg)
    t1 = time.perf_counter()
    keep = PROFILE_CHANNELS if picker.ckpt.rescorer is not None else 0
    sv = sparsify(tomo.data, tomo.voxel_size_A, cfg, run, origin_A=tomo.origin_A,
                  input_info=info, device=dev if dev.type != "cpu" else None,
                  keep_dense=keep, reselectable=grows_kept_share(picker.ckpt.config.postprocess))
    t2 = time.perf_counter()
    grow = _Timed(picker.resparsifier(project, run, None, sv))
    final, probs, offsets = picker.outputs(sv, resparsify=grow)
    sync(device)
    t4 = time.perf_counter()
    dets = detections_from_outputs(final, probs, offsets, picker.particles,
                                   picker.ckpt.config.postprocess)
    sync(device)
    t5 = time.perf_counter()
    if picker.ckpt.rescorer is not None:  # the dense channels, profiles and MLP
        channels, voxel_A, origin_A = channels_for(sv, project, run, cfg)
        rescore_detections(dets, picker.ckpt.rescorer, channels, voxel_A, origin_A,
                           picker.particles, network_outputs(final, probs))
    t6 = time.perf_counter()
    return {"read": t1 - t0, "sparsify": t2 - t1, "reselect": grow.seconds,
            "network": t4 - t2 - grow.seconds, "decode": t5 - t4, "rescore": t6 - t5}


def stage_seconds(path: str, checkpoint: str, device: str, tta: str | None = None,
                  precision: str = INFER_PRECISION, rescore: bool = True) -> dict:
    """Mean seconds per run of each stage, and tomograms/s streaming over all runs."""
    from sparse_det.inference import Picker

    project = CopickProject(path)
    runs = project.runs()
    picker = Picker.load(checkpoint, device, tta=tta, precision=precision, rescore=rescore)
    per_run = [run_stage_seconds(picker, project, run, device) for run in runs]
    t0 = time.perf_counter()
    infer_project(project, checkpoint, runs=runs, device=device, tta=tta, precision=precision,
                  rescore=rescore)
    stream = time.perf_counter() - t0
    gpu_gb = (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda")
              else None)
    return {k: sum(r[k] for r in per_run) / len(per_run) for k in per_run[0]} | {
        "stream_tomograms_per_s": len(runs) / stream, "stream_runs": len(runs),
        "gpu_peak_gb": gpu_gb}


def markdown(results: list[dict]) -> str:
    names = list(results[0]["per_class"])
    stream = "stream_s_per_tomogram" in results[0]
    head = ("| project | " + " | ".join(n for n in names) + " | weighted F4 | s/tomogram | "
            + ("streamed s/tomogram | " if stream else "") + "peak GB |")
    lines = [head, "|" + "---|" * (len(names) + 4 + stream)]
    for r in results:
        cells = " | ".join(f"{r['per_class'][n]:.3f} (R {r['recall'][n]:.2f})" for n in names)
        streamed = (f"{r['stream_s_per_tomogram']:.2f}"
                    + ("" if r["stream_same_picks"] else " (other picks!)") + " | "
                    if stream else "")
        lines.append(f"| {Path(r['project']).name} | {cells} | **{r['score']:.3f}** | "
                     f"{r['infer_s_per_tomogram']:.2f} | {streamed}{r['peak_rss_gb']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = ArgumentFileParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--precision", choices=PRECISIONS, default=INFER_PRECISION,
                    help="as infer's (default auto: bf16 on a CPU with bf16 instructions)")
    ap.add_argument("--tomo-type", help="read this tomogram type (e.g. wbp)")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage timing")
    ap.add_argument("--stream", action="store_true",
                    help="also time one call over each project's runs (streamed)")
    ap.add_argument("--tta", choices=sorted(TTA_MIRRORS),
                    help="test-time mirrors (default: the checkpoint's)")
    ap.add_argument("--no-rescore", dest="rescore", action="store_false",
                    help="the network alone, not the checkpoint's candidate rescorer")
    a = ap.parse_args()
    require_projects(a.project, a.dataset_sets)  # every one not made yet named at once
    torch.set_num_threads(a.threads)
    host = host_reference(a.device)
    overrides = {"tomogram_type": a.tomo_type, "type_fallback": False} if a.tomo_type else None
    results = [bench_project(p, a.checkpoint, a.device, overrides, a.tta, a.precision,
                             a.rescore, a.stream)
               for p in a.project]
    for r in results:  # what was read and how it was picked
        r |= {"tomo_type": a.tomo_type or "denoised", "tta": a.tta or "the checkpoint's",
              "checkpoint": a.checkpoint, "device": a.device,
              "precision": resolve_precision(a.precision, resolve_device(a.device)),
              "rescore": a.rescore, "host_reference_s": host}
    print(markdown(results))
    print(f"\nhost reference (bench/host.py): filters {host['filters']:.3f} s, sparse network "
          f"{host['sparse_network']:.3f} s (the picker's path "
          f"{host['sparse_network_picker']:.3f} s)")
    if a.no_stages:
        return _save(results, a.json)
    stages = stage_seconds(a.project[0], a.checkpoint, a.device, a.tta, a.precision, a.rescore)
    print(f"\nper stage on {a.device} ({Path(a.project[0]).name}, s/tomogram): "
          + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()
                      if k != "stream_runs" and v is not None)
          + f"; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    results[0]["stages"] = stages
    return _save(results, a.json)


def _save(results: list[dict], path: str | None) -> int:
    if path:
        Path(path).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
