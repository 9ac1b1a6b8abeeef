"""Where a picking process's memory goes, stage by stage.

One run picked as `infer` picks it (sparse_det.stream.infer_project, on the CPU), in this
process. For each call of each stage — reading, blank and shading, the tilt axis, the
feature volumes, the selection, the float16 copies kept, the network's passes, decoding,
the rescorer's profiles and probability shells — it prints the resident GB at the call's
start and end and the most while it ran: the kernel's high-water mark (VmHWM), reset as
the call starts, or where the kernel does not let it be reset, the highest of samples
taken every 5 ms (/proc/self/statm); then the process's high-water mark. What the
README's *Speed and memory* says about where the memory went was read from this table.

    python bench/memory_stages.py --project P [--run R] [--checkpoint PT] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_tools.atomic import atomic_write_text  # noqa: E402
from data_tools.copick_io import CopickProject  # noqa: E402
from sparse_det.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

# (module, function, stage): looked up by their modules' code at each call, so replacing
# the module's attribute sees every call.
STAGES = [
    ("data_tools.sparsify", "read_input", "read"),
    ("data_tools.sparsify", "without_blank", "blank and shading"),
    ("data_tools.sparsify", "_tilt_axis_of", "tilt axis"),
    ("data_tools.sparsify", "_feature_volumes_on", "feature volumes"),
    ("data_tools.sparsify", "_select_from", "selection"),
    ("data_tools.sparsify", "held", "float16 copies"),
    ("sparse_det.inference", "predict_passes", "network passes"),
    ("sparse_det.inference", "detections_from_outputs", "decode"),
    ("sparse_det.rescore", "radial_profiles", "rescorer profiles"),
    ("sparse_det.rescore", "probability_shells", "probability shells"),
]
SAMPLE_S = 0.005


def resident_GB() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


def high_water_GB() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


class HighWater:
    """The kernel's own peak of resident memory, reset at each stage's start (Linux: "5" to
    /proc/self/clear_refs), so a stage's peak is exact where 5 ms samples miss a spike
    (on the cellular tomogram the samples' highest was 0.13-0.39 GB under VmHWM). `most`
    keeps the process's peak across the resets."""

    def __init__(self):
        self.most = high_water_GB()
        self.works = self.reset()

    def reset(self) -> bool:
        self.most = max(self.most, high_water_GB())
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def since_reset(self) -> float:
        """The peak since the last reset (since the start where resetting does not work)."""
        peak = high_water_GB()
        self.most = max(self.most, peak)
        return peak


class Sampler:
    """Resident memory sampled in a daemon thread; peak(t0, t1) is the highest sample in
    that span, or the larger of the ends where the span held no sample."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), resident_GB()))
            time.sleep(SAMPLE_S)

    def peak(self, t0: float, t1: float, ends: tuple[float, float]) -> float:
        inside = [gb for t, gb in list(self.samples) if t0 <= t <= t1]
        return max(inside + list(ends))

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def stages_recorded(sampler: Sampler | None, hwm: HighWater, rows: list[dict]):
    """Inside, every call of a STAGES function appends a row to `rows` as it returns: its
    peak from `hwm`, or from `sampler` where the kernel's peak cannot be reset."""
    import importlib

    saved = []
    for module_name, name, stage in STAGES:
        module = importlib.import_module(module_name)
        fn = getattr(module, name)
        saved.append((module, name, fn))

        def timed(*args, _fn=fn, _stage=stage, **kwargs):
            hwm.reset()
            t0, start = time.perf_counter(), resident_GB()
            try:
                return _fn(*args, **kwargs)
            finally:
                t1, end = time.perf_counter(), resident_GB()
                # The kernel counts VmHWM and statm's resident pages apart, a few pages
                # out of step: the ends bound the peak from below either way.
                exact = hwm.since_reset()
                rows.append({"stage": _stage, "start_gb": start, "end_gb": end,
                             "peak_gb": max(exact, start, end) if sampler is None
                             else sampler.peak(t0, t1, (start, end)),
                             "seconds": t1 - t0, "t0": t0})

        setattr(module, name, timed)
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def measure(project: CopickProject, run: str, checkpoint: str) -> dict:
    """The stage rows of one pick of `run` (in call order) and the process's peak."""
    from sparse_det.stream import infer_project

    hwm, rows = HighWater(), []
    sampler = None if hwm.works else Sampler()  # samples only where VmHWM cannot be reset
    try:
        with stages_recorded(sampler, hwm, rows):
            picks = infer_project(project, checkpoint, runs=[run], device="cpu")
    finally:
        if sampler is not None:
            sampler.stop()
    rows.sort(key=lambda r: r.pop("t0"))
    hwm.reset()
    return {"run": run, "particles": len(picks), "stages": rows,
            "high_water_gb": hwm.most, "stage_peaks": "VmHWM" if hwm.works else "sampled"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--run", help="default: the project's first")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    project = CopickProject(a.project)
    res = measure(project, a.run or project.runs()[0], a.checkpoint)
    print(f"{res['run']}: {res['particles']} particles")
    print("| stage | GB at start | GB at end | peak GB while it ran | s |")
    print("|---|---|---|---|---|")
    for r in res["stages"]:
        print(f"| {r['stage']} | {r['start_gb']:.2f} | {r['end_gb']:.2f} | "
              f"{r['peak_gb']:.2f} | {r['seconds']:.2f} |")
    print(f"process high-water mark (VmHWM): {res['high_water_gb']:.2f} GB; stage peaks "
          f"{res['stage_peaks']}")
    if a.json:
        atomic_write_text(a.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
