"""Seconds per full-size tomogram for the dense baseline (zarr → normalise → tiled U-Net →
max-pool peaks), on CUDA or CPU. Speed does not depend on the weights: without --weights a
freshly initialised network is timed.

    python bench/gpu_dense.py --project DIR [--weights runs/bench/dense_unet.pt]
                              [--device cuda] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dense_unet import DenseUNet, detect_dense, load_dense_run, predict_heatmap

from data_tools.copick_io import CopickProject


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    project = CopickProject(a.project)
    model = DenseUNet(len(project.particles)).to(dev)
    if a.weights:
        model.load_state_dict(torch.load(a.weights, map_location=dev, weights_only=True))

    def one(run: str) -> int:
        _, peaks = detect_dense(model, project, run, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return sum(len(s) for _, s in peaks.values())

    runs = project.runs()
    one(runs[0])  # warm-up: cuDNN autotuning, allocator
    times, net = [], []
    for run in runs:
        t0 = time.perf_counter()
        one(run)
        times.append(time.perf_counter() - t0)
    r = load_dense_run(project, runs[0], with_targets=False)
    t0 = time.perf_counter()
    predict_heatmap(model, r.vol, dev, as_tensor=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    net.append(time.perf_counter() - t0)
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else
           f"cpu x{a.threads}", "s_per_tomogram": sum(times) / len(times),
           "network_s": net[0], "runs": len(runs),
           "gpu_peak_gb": (torch.cuda.max_memory_allocated() / 2**30
                           if dev.type == "cuda" else None)}
    print(json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
