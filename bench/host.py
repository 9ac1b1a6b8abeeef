"""How fast this machine is at the picker's two costly kinds of work, on fixed inputs.

    python bench/host.py [--threads 2] [--device cpu]

The same code and checkpoint took 2.6-3.7 s per held-out tomogram on one host of "this
2-core CPU" and 5.3-8.3 s on another (2026-12-01): seconds per tomogram say as much about the
host as about the picker. `bench/detector.py` stores these reference seconds beside its own
(`host_reference_s`), so two benches compare by their ratio to the host, not by the clock.

The workload never changes with the project: Gaussian filters of a seeded 92x315x315 volume
at the sparsifier's four scales (scipy, what sparsifying costs), and one forward pass of the
shipped architecture (channels 16/32/64/64, fixed seed, untrained) over a seeded set of
about 220k voxels clustered in blobs as a kept set is, through spconv's own CPU path (what the
network cost before 2026-12-01's gather + GEMM path, kept as the reference so that the
reference never moves with the project). `sparse_network_picker` is the same pass as the
picker runs it now (sparse_det/model/cpu_conv.py on the CPU): the ratio of the two is that
path's speed-up on this host.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE_ZYX = (92, 315, 315)  # a full-size tomogram on the 20 Å working grid
FILTER_SIGMAS_VOX = (1.0, 1.5, 3.0, 5.0)  # the sparsifier's 20/30/60/100 Å at 20 Å
BLOB_RADIUS_VOX = 4
TARGET_VOXELS = 220_000
REPEATS = 3


def clustered_coords(seed: int = 0) -> np.ndarray:
    """About TARGET_VOXELS unique z,y,x voxels in balls of BLOB_RADIUS_VOX: a kept set's
    geometry (its neighbour counts set spconv's work), not uniform scatter."""
    rng = np.random.default_rng(seed)
    r = BLOB_RADIUS_VOX
    g = np.arange(-r, r + 1)
    ball = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    ball = ball[(ball**2).sum(1) <= r * r]
    n_blobs = TARGET_VOXELS // len(ball) * 11 // 10  # overlaps merge about a tenth
    centres = rng.integers(r, np.array(SHAPE_ZYX) - r, size=(n_blobs, 3))
    coords = (centres[:, None, :] + ball[None]).reshape(-1, 3)
    return np.unique(coords, axis=0).astype(np.int32)


def sync(device: str | torch.device) -> None:
    """Waits for a GPU's queued work, so that what is timed has run (no-op on the CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _median_seconds(fn) -> float:
    fn()  # warm-up: allocator, spconv's first index build
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def host_reference(device: str = "cpu") -> dict[str, float]:
    """{"filters": s, "sparse_network": s, "sparse_network_picker": s, "voxels": n}: median
    seconds of the fixed workloads above (the filters on the CPU always; the network on
    `device`, through spconv's own path, then through the picker's)."""
    from scipy import ndimage

    from sparse_det.model import build_model, spconv_compat
    from sparse_det.structures import SparseBatch

    vol = np.random.default_rng(0).standard_normal(SHAPE_ZYX, dtype=np.float32)
    filters = _median_seconds(
        lambda: [ndimage.gaussian_filter(vol, s, truncate=3.0) for s in FILTER_SIGMAS_VOX])

    coords = clustered_coords()
    feats = np.random.default_rng(1).standard_normal((len(coords), 5), dtype=np.float32)
    batch = SparseBatch.from_numpy([coords], [feats], SHAPE_ZYX).to(device)
    torch.manual_seed(0)
    model = build_model(in_channels=5, num_classes=6, channels=(16, 32, 64, 64),
                        blocks_per_level=1, device=device).eval()

    def forward():
        with torch.inference_mode():
            model(batch)
        sync(device)

    picker_path = spconv_compat.CPU_GATHER_GEMM
    spconv_compat.CPU_GATHER_GEMM = False
    try:
        reference = _median_seconds(forward)
    finally:
        spconv_compat.CPU_GATHER_GEMM = picker_path
    return {"filters": filters, "sparse_network": reference,
            "sparse_network_picker": _median_seconds(forward), "voxels": len(coords)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ref = host_reference(a.device)
    print(f"host reference ({a.threads} threads, {a.device}): filters {ref['filters']:.3f} s, "
          f"sparse network {ref['sparse_network']:.3f} s on {ref['voxels']} voxels "
          f"(the picker's path: {ref['sparse_network_picker']:.3f} s)")
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
