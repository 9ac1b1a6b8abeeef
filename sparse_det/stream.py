"""A project picked run after run (`infer_project`): each run read and sparsified in a thread
of its own while the run before it is picked (where its estimated peak fits half the memory
available; else after it), the model built while the first is read.

This module imports no torch: where the runs are surely read on the CPU (`--device cpu`, or
"auto" with a torch build that has no CUDA or ROCm, or a CUDA build on a Linux without the
NVIDIA driver's device files: surely_cpu), the first run's reading starts before
torch, spconv and the network's code are imported, which takes 2-3 s of a fresh process
(`python -m sparse_det.infer` on one tomogram). Elsewhere torch decides the device first.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.copick_io import CopickProject
from data_tools.peak_memory import estimated_peak_bytes
from data_tools.sparsify import shard_or_sparsify
from data_tools.sparsify_config import SparsifyConfig
from data_tools.tomo_input import with_overrides
from sparse_det.checkpoint import CheckpointError, checkpoint_settings
from sparse_det.config import INFER_PRECISION, PROFILE_CHANNELS, grows_kept_share
from sparse_det.run_parts import part_path
from sparse_det.structures import DETECTION_COLUMNS, Detections, SparseVolume

if TYPE_CHECKING:
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

READER_THREAD = "sparse_det-reader"  # the thread that reads the next run
LOADER_THREAD = "sparse_det-loader"  # the thread that builds the model


def in_own_thread(fn: Callable, *args, name: str = READER_THREAD) -> Future:
    """fn(*args) in a daemon thread that ends with it; its value or error comes from
    result(). Not a pool: a thread that has run torch's parallel ops keeps an OpenMP team
    alive while it lives, and an idle pool thread then slowed the network's passes on the
    main thread by 0.3-0.9 s a run (40-60 %; bench/threads.py); a thread that ends takes
    its team along. Daemon: an error on the main thread exits at once."""
    future: Future = Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the caller by result()
            future.set_exception(exc)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


# Reading the next run while one is picked adds most of its peak again (two runs of
# 368×1260×1260 voxels: 3.74 GB, one 2.28 GB), so the next run is read ahead only where its
# estimated peak (data_tools.peak_memory.estimated_peak_bytes) fits this part of the memory
# still available.
READ_AHEAD_SHARE = 0.5


def available_memory_bytes() -> int | None:
    """The memory the kernel says is available without swapping (MemAvailable; Linux), or
    None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def may_read_ahead(project: CopickProject, run: str, cfg: SparsifyConfig) -> bool:
    """Whether `run` may be read while the run before it is picked: where its estimated peak
    fits READ_AHEAD_SHARE of the memory available now, else it is read after."""
    peak, available = estimated_peak_bytes(project, run, cfg), available_memory_bytes()
    if peak is None or available is None or peak <= READ_AHEAD_SHARE * available:
        return True
    log.info("%s: read after the run before it is picked, not while (about %.1f GB at the "
             "peak; %.1f GB available)", run, peak / 2**30, available / 2**30)
    return False


def warn_if_over_memory(project: CopickProject, run: str, cfg: SparsifyConfig) -> None:
    """A warning naming `run` where its estimated peak is more than the memory available
    now: the kernel's out-of-memory killer stops a process with no word of which tomogram
    or why."""
    peak, available = estimated_peak_bytes(project, run, cfg), available_memory_bytes()
    if peak is not None and available is not None and peak > available:
        log.warning("%s: about %.1f GB to read and pick, %.1f GB available now: the process "
                    "may be killed for memory (free some, or pick it where there is more; "
                    "infer keeps the runs it has picked and resumes after them)", run,
                    peak / 2**30, available / 2**30)


def load_sparse(project: CopickProject, run: str, cfg: SparsifyConfig,
                feature_names: list[str], shards_dir: str | Path | None, *,
                device: torch.device | None = None, keep_dense: int = 0,
                reselectable: bool = False) -> SparseVolume:
    """The run's sparse volume as a checkpoint expects it (its shard when one matches),
    sparsified on `device` when it is an accelerator (scipy on the CPU is faster there).
    `keep_dense`: keep that many dense feature volumes with it where it is sparsified here
    rather than read from a shard (SparseVolume.dense); `reselectable`: keep what
    data_tools.sparsify.reselect needs to keep the run at another share."""
    on = device if device is not None and device.type != "cpu" else None
    if shards_dir is None:
        warn_if_over_memory(project, run, cfg)
    sv = shard_or_sparsify(project, run, cfg, shards_dir, device=on, keep_dense=keep_dense,
                           reselectable=reselectable)
    if sv.feature_names != feature_names:
        raise CheckpointError(f"run {run!r}: features {sv.feature_names} do not match the "
                              f"checkpoint's {feature_names}")
    return sv


def torch_builds_for() -> dict[str, bool] | None:
    """{"cuda": ..., "hip": ...}: which GPU runtimes the installed torch was built for, read
    from its torch/version.py without importing it; None where that cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    try:
        text = Path(spec.origin).with_name("version.py").read_text()
    except OSError:
        return None
    return {name: not re.search(rf"^{name}\b[^=\n]*=\s*None\s*$", text, re.M)
            for name in ("cuda", "hip")}


def surely_cpu(device: str, builds: dict[str, bool] | None = None,
               platform: str = sys.platform, dev_dir: Path = Path("/dev")) -> bool:
    """Whether `device` resolves to the CPU (sparse_det.device.resolve_device), told without
    importing torch: "cpu"; or "auto" where torch was built without CUDA and ROCm
    (`builds`: torch_builds_for()), or is a CUDA build on a Linux without the NVIDIA
    driver's device files (/dev/nvidia0..., or /dev/dxg under WSL2), through which alone
    CUDA reaches a GPU there. False when unsure."""
    if str(device) == "cpu":
        return True
    if str(device) != "auto":
        return False
    builds = torch_builds_for() if builds is None else builds
    if builds is None:
        return False
    if not any(builds.values()):
        return True
    return (platform.startswith("linux") and not builds["hip"]
            and not any(dev_dir.glob("nvidia[0-9]*")) and not (dev_dir / "dxg").exists())


# A tomogram read with less confidence than every tuning run, by more than this, is unlike
# them. Measured with the default checkpoint: the 3 held-out runs with every parameter beyond
# its range at 0.65-0.75 (weighted F4 0.16), the other 18 held-out runs at 0.81-0.92, the 27
# tuning runs at 0.83-0.92.
UNSURE_MARGIN = 0.05


def warn_if_unsure(dets: Detections, tuned_confidence: tuple[float, float] | None) -> None:
    """Warns when a run's confidence is below the tuning runs' by more than UNSURE_MARGIN:
    its picks come at thresholds set on tomograms unlike it."""
    if tuned_confidence is None or dets.confidence >= tuned_confidence[0] - UNSURE_MARGIN:
        return
    log.warning("%s: the network is unsure of this tomogram (confidence %.2f; the runs its "
                "thresholds were tuned on: %.2f-%.2f), so its picks may be far off; check "
                "them, or fine-tune on a few annotated runs (python -m sparse_det.finetune)",
                dets.run, dets.confidence, *tuned_confidence)


def _run_parts(project: CopickProject, checkpoint: str | Path, parts_dir: str | Path, dev,
               precision: str, tta: str, rescore: bool, input_overrides: dict | None,
               sparsify_cfg: SparsifyConfig):
    """The RunParts that keep each run's picks under `parts_dir` (sparse_det/run_parts.py)."""
    from sparse_det.inference import resolve_precision
    from sparse_det.run_parts import RunParts, parts_key, tomogram_stamp

    key = parts_key(checkpoint, resolve_precision(precision, dev), tta, rescore,
                    input_overrides)
    return RunParts(parts_dir, key, lambda run: tomogram_stamp(project, run, sparsify_cfg))


def infer_project(project: CopickProject, checkpoint: str | Path, *,
                  runs: list[str] | None = None, device: str = "auto",
                  shards_dir: str | Path | None = None, progress: bool = False,
                  input_overrides: dict | None = None, precision: str = INFER_PRECISION,
                  tta: str | None = None, rescore: bool = True,
                  parts_dir: str | Path | None = None,
                  class_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Detections of every run at the checkpoint's thresholds: DETECTION_COLUMNS (Å), each
    class called as the project's config calls it (sparse_det/class_match.py; `class_map`:
    the user's pairs, project class → checkpoint class), the others' picks left out.
    `tta` None: the checkpoint's test-time mirrors; `precision`, `rescore`: see
    Picker.load. `parts_dir`: each run's picks are kept there as they are made, and runs
    whose picks are there from the same checkpoint and settings are read instead of picked
    again (sparse_det/run_parts.py): an interrupted call resumes."""
    settings = checkpoint_settings(checkpoint)  # what the model reads, without building it
    names = _class_names(project, settings.particles, Path(checkpoint).name, class_map)
    sparsify_cfg = with_overrides(settings.config.sparsify, input_overrides)
    runs = runs or project.runs()
    load = partial(load_sparse, project, cfg=sparsify_cfg,
                   feature_names=settings.feature_names, shards_dir=shards_dir,
                   keep_dense=PROFILE_CHANNELS if rescore and settings.has_rescorer else 0,
                   reselectable=grows_kept_share(settings.config.postprocess))
    # Started before torch is imported where that cannot change where it runs: the first
    # run with no picks kept from an earlier call, read on the CPU; and the model, whose
    # thread imports torch and spconv while the run is read.
    first = next((r for r in runs if parts_dir is None or not part_path(parts_dir, r).is_file()),
                 None) if surely_cpu(device) else None
    early = in_own_thread(load, first) if first is not None else None
    start_loading = partial(in_own_thread, partial(_load_picker, checkpoint, device, tta,
                                                   input_overrides, precision, rescore),
                            name=LOADER_THREAD)
    loading = start_loading() if first is not None else None
    from sparse_det.device import resolve_device  # torch: the loader may be importing it

    dev = resolve_device(device)
    parts = None if parts_dir is None else _run_parts(
        project, checkpoint, parts_dir, dev, precision, tta or settings.config.postprocess.tta,
        rescore and settings.has_rescorer, input_overrides, sparsify_cfg)
    rows: dict[str, list[tuple]] = parts.read(runs) if parts is not None else {}
    # `first` has no kept picks, so it is to do: it goes first, as its read has begun.
    todo = sorted((run for run in runs if run not in rows), key=lambda run: run != first)
    if todo and loading is None:
        loading = start_loading()
    # Handed over in a list the callee empties: a Future holds its result, and one named here
    # would keep the first run's volumes alive through every later run.
    first_read = [early] if early is not None else []
    del early
    _pick_runs(project, todo, loading, first_read,
               partial(load, device=dev), settings.tuned_confidence, rows, parts, shards_dir,
               progress, partial(may_read_ahead, project, cfg=sparsify_cfg))
    import pandas as pd

    picks = pd.DataFrame([r for run in runs for r in rows[run]], columns=DETECTION_COLUMNS)
    picks = picks[picks["particle_type"].isin(names)].reset_index(drop=True)
    picks["particle_type"] = picks["particle_type"].map(names)
    return picks


def _class_names(project: CopickProject, particles, checkpoint_name: str,
                 class_map: dict[str, str] | None) -> dict[str, str]:
    """{checkpoint class: the project's name for it} for the classes the project lists
    (class_match.match_classes); the pairs of two names, the checkpoint's classes left out
    and the listed classes it cannot pick are logged."""
    from sparse_det.class_match import match_classes

    match = match_classes(particles, project.particles, class_map)
    for line in match.renamed():
        log.info("%s: %s", project.path, line)
    for line in match.warnings(particles, project.particles):
        log.warning("%s: %s", project.path, line)
    unlisted = match.unlisted(particles.names)
    if unlisted:
        # The project's config says what is picked there (copick writes no picks of an
        # object it does not list); the others' picks are dropped, not refused.
        log.warning("%s: its config lists no %s; the checkpoint's picks of %s are left out",
                    project.path, unlisted, "it" if len(unlisted) == 1 else "them")
    unpicked = match.unpicked(project.particles.names)
    if unpicked:
        log.warning("%s: %s has no class %s that the project's config lists, and picks "
                    "none (they may be taken for a class of like size); fine-tuned on a few "
                    "annotated runs it learns them (sparse_det.finetune), and one it knows "
                    "by another name is named with --class-map NAME=CLASS", project.path,
                    checkpoint_name, unpicked)
    return {ckpt: proj for proj, ckpt in match.pairs.items()}


def _load_picker(checkpoint, device, tta, input_overrides, precision, rescore):
    """Picker.load, importing torch and the network's code on first use."""
    from sparse_det.inference import Picker

    return Picker.load(checkpoint, device, tta=tta, input_overrides=input_overrides,
                       precision=precision, rescore=rescore)


def _pick_runs(project: CopickProject, todo: list[str], loading: Future | None,
               first_read: list[Future], load: Callable, tuned_confidence, rows: dict,
               parts, shards_dir, progress: bool,
               read_ahead: Callable[[str], bool] = lambda run: True) -> None:
    """Picks `todo` in order into `rows` (and `parts`), reading the next run in its own
    thread while one is picked where `read_ahead(run)` allows, else after it; `first_read`:
    the first run's read where it has started (taken out of the list)."""
    from tqdm import tqdm

    # Streaming: the next run is read and sparsified while this one is detected (zarr,
    # scipy and torch release the GIL); one ahead, so memory does not grow with the runs.
    ahead = first_read.pop() if first_read else (in_own_thread(load, todo[0]) if todo else None)
    for i, run in enumerate(tqdm(todo, desc="infer", unit="tomogram", disable=not progress)):
        t0 = time.perf_counter()
        sv = ahead.result() if ahead is not None else load(run)
        nxt = todo[i + 1] if i + 1 < len(todo) else None
        ahead = in_own_thread(load, nxt) if nxt is not None and read_ahead(nxt) else None
        picker = loading.result()  # waits for the model on the first run only
        dets = picker.detect_run(project, run, shards_dir, sv=sv)
        warn_if_unsure(dets, tuned_confidence)
        picked = picker.pick(dets)
        rows[run] = picked.rows()
        if parts is not None:
            parts.put(run, rows[run])
        log.info("%s: %d voxels, %d particles, %.2f s", run, len(sv), len(picked),
                 time.perf_counter() - t0)
        del sv, dets, picked  # gone before a run not read ahead is read here
