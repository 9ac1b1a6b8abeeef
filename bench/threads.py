"""The network's passes on the main thread beside a reader thread, four ways: no other
thread; an idle pool thread that has run one torch op (how infer read the next run until
2026-12-02); a thread that ran it and ended (how it reads now, `stream.in_own_thread`);
an idle pool thread that has read and sparsified the run on the CPU (the reading runs one
torch op, the tilt-axis check's FFT: docs/results_history.md *The reader thread* says why
it stays torch's).

    python bench/threads.py [--project data/heldout_in] [--repeat 3] [--json F]

Why: torch runs its CPU ops on OpenMP, and a thread that has run a parallel op keeps a team
of OpenMP threads of its own while it lives; on 2 cores an idle pool thread's team slowed
the main thread's network 40-60 %. Each way is timed `--repeat` times in turn (the host's
speed drifts) and the least of each printed, with the seconds of one `infer_project` call
of the run (read, sparsify, network, rescore), which reads the run in such a thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from data_tools.copick_io import CopickProject
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.inference import Picker
from sparse_det.stream import infer_project

WAYS = ("alone", "idle pool thread", "ended thread", "idle pool thread that read")


def torch_op() -> float:
    """One parallel torch op, like the tilt-axis check's FFT in the reader."""
    return torch.randn(4_000_000).mul(2.0).sum().item()


def network_seconds(picker: Picker, sv, way: str, read=None) -> float:
    """Seconds of the picker's passes over `sv` with the other thread as `way` says
    (`read`: what the last way's thread runs)."""
    def passes() -> float:
        t0 = time.perf_counter()
        picker.outputs(sv)
        return time.perf_counter() - t0

    if way in ("idle pool thread", "idle pool thread that read"):
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(torch_op if way == "idle pool thread" else read).result()
            return passes()
    if way == "ended thread":
        thread = threading.Thread(target=torch_op)
        thread.start()
        thread.join()
    return passes()


def bench(project_path: str, checkpoint: str, repeat: int) -> dict:
    project = CopickProject(project_path)
    run = project.runs()[0]
    picker = Picker.load(checkpoint, "cpu", precision="auto")
    sv = picker.sparse(project, run)
    picker.outputs(sv)  # warm-up
    times: dict[str, list[float]] = {w: [] for w in (*WAYS, "infer_project call")}
    for _ in range(repeat):
        for way in WAYS:
            times[way].append(network_seconds(picker, sv, way,
                                              read=lambda: picker.sparse(project, run)))
        t0 = time.perf_counter()
        infer_project(project, checkpoint, runs=[run], device="cpu")
        times["infer_project call"].append(time.perf_counter() - t0)
    return {"project": project_path, "run": run, "repeat": repeat,
            **{k: min(v) for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default="data/heldout_in")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    result = bench(a.project, a.checkpoint, a.repeat)
    print(f"| {result['run']} | " + " | ".join(f"{k}" for k in (*WAYS, "infer_project call"))
          + " |")
    print("|---|" + "---|" * (len(WAYS) + 1))
    print("| least seconds | " + " | ".join(f"{result[k]:.2f}" for k in
                                          (*WAYS, "infer_project call")) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    sys.exit(run(main))
