"""infer_project (sparse_det/stream.py) starts reading the first run before torch is imported
where the device is surely the CPU, and picks the same as the run-by-run path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.stream import surely_cpu, torch_builds_for

ROOT = Path(__file__).resolve().parents[1]

# In a fresh interpreter: is torch absent after importing the streaming module, which run
# each thread was started for and whether torch was loaded then, and the picks.
CHILD = """
import json, sys
import sparse_det.stream as stream
from data_tools.copick_io import CopickProject
torch_at_import = "torch" in sys.modules
started = []
real = stream.in_own_thread
def spy(fn, *args, name=stream.READER_THREAD):
    started.append([name, list(map(str, args)), "torch" in sys.modules])
    return real(fn, *args, name=name)
stream.in_own_thread = spy
kw = json.loads(sys.argv[2])
rows = stream.infer_project(CopickProject(sys.argv[1]), sys.argv[3], device="auto",
                            precision="fp32", **kw)
print(json.dumps({"torch_at_import": torch_at_import, "started": started,
                  "rows": rows.round(3).values.tolist()}))
"""


def _child(project: Path, **kw) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(project), json.dumps(kw),
                          str(DEFAULT_CHECKPOINT)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_surely_cpu_agrees_with_the_installed_torch():
    assert surely_cpu("cpu") and not surely_cpu("cuda") and not surely_cpu("cuda:0")
    hip = getattr(torch.version, "hip", None)
    assert torch_builds_for() == {"cuda": torch.version.cuda is not None, "hip": hip is not None}
    if torch.version.cuda is None and hip is None:
        assert surely_cpu("auto")
    if torch.cuda.is_available():
        assert not surely_cpu("auto")


def test_a_cuda_build_is_surely_on_the_cpu_only_without_the_drivers_devices(tmp_path):
    cuda = {"cuda": True, "hip": False}
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "null").touch()
    assert surely_cpu("auto", cuda, "linux", dev)
    assert not surely_cpu("auto", cuda, "win32", dev)  # no device files to tell by
    assert not surely_cpu("auto", {"cuda": False, "hip": True}, "linux", dev)
    assert surely_cpu("auto", {"cuda": False, "hip": False}, "win32", dev)
    (dev / "dxg").touch()  # WSL2's GPU
    assert not surely_cpu("auto", cuda, "linux", dev)
    (dev / "dxg").unlink()
    (dev / "nvidiactl").touch()  # the control file alone: no GPU behind it
    assert surely_cpu("auto", cuda, "linux", dev)
    (dev / "nvidia0").touch()
    assert not surely_cpu("auto", cuda, "linux", dev)


@pytest.mark.skipif(not surely_cpu("auto"), reason="a torch build with CUDA or ROCm: "
                    "the device is decided by torch first")
def test_the_first_run_is_read_before_torch_loads(small_project, tmp_path):
    from sparse_det.stream import infer_project

    runs = small_project.runs()
    got = _child(small_project.path)
    assert not got["torch_at_import"], "sparse_det.stream must not import torch"
    first = got["started"][0]
    assert first[0] == "sparse_det-reader" and first[1] == [runs[0]] and not first[2], first
    assert got["started"][1][0] == "sparse_det-loader"
    # Every run read once, in order, and the same picks as a call in this process.
    readers = [s[1][0] for s in got["started"] if s[0] == "sparse_det-reader"]
    assert readers == runs
    here = infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu", precision="fp32")
    assert got["rows"] == here.round(3).values.tolist() and len(here) > 0

    # With the first run's picks kept from an earlier call, the early read is the second's.
    parts = tmp_path / "parts"
    infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu", precision="fp32",
                  runs=runs[:1], parts_dir=parts)
    got = _child(small_project.path, parts_dir=str(parts))
    readers = [s for s in got["started"] if s[0] == "sparse_det-reader"]
    assert [r[1] for r in readers] == [[runs[1]]] and not readers[0][2], readers
    assert got["rows"] == here.round(3).values.tolist()


def test_the_cold_call_bench_times_fresh_processes(small_project, tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.cold_call import main

    out = tmp_path / "cold.json"
    # This checkout against itself: the same CSV, two timings each.
    assert main(["--project", str(small_project.path), "--repeat", "2", "--against",
                 str(ROOT), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["run"] == small_project.runs()[0] and got["same_csv"] is True
    assert all(len(v) == 2 and min(v) > 0 for v in got["seconds"].values())


def test_a_run_too_large_for_the_memory_left_is_read_after_the_one_before(small_project,
                                                                           monkeypatch, caplog):
    """Where the next run's estimated peak does not fit half the memory available, it is read
    on the main thread once the run before it is picked, not in the reader thread while it
    is: the same picks either way. Runs that fit are read ahead as before. A run whose
    estimate is more than the memory available is named in a warning before it is read."""
    import gc
    import threading
    import weakref

    from data_tools.peak_memory import estimated_peak_bytes
    from data_tools.sparsify import plan_input
    from sparse_det import stream

    runs = small_project.runs()
    seen, earlier, alive_at_read = [], [], []
    real = stream.load_sparse

    def spy(project, run, *args, **kw):
        seen.append((run, threading.current_thread().name))
        if threading.current_thread().name == "MainThread":
            gc.collect()  # the runs before it picked and let go of, the first one's included
            alive_at_read.append([ref() is not None for ref in earlier])
        sv = real(project, run, *args, **kw)
        earlier.append(weakref.ref(sv))
        return sv

    monkeypatch.setattr(stream, "load_sparse", spy)
    ahead = stream.infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu",
                                 precision="fp32")
    assert [r for r, _ in seen] == runs and {t for _, t in seen} == {stream.READER_THREAD}
    # read as is from the 20.024 Å level: its voxels
    cfg = stream.checkpoint_settings(DEFAULT_CHECKPOINT).config.sparsify
    level_shape = small_project.tomogram_scales(runs[1])[1][2]
    assert plan_input(small_project, runs[1], cfg).working_voxels == int(np.prod(level_shape))

    seen.clear()
    earlier.clear()
    monkeypatch.setattr(stream, "available_memory_bytes", lambda: 2**20)  # 1 MiB left
    with caplog.at_level("INFO", logger="sparse_det.stream"):
        after = stream.infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu",
                                     precision="fp32")
    assert seen[0] == (runs[0], stream.READER_THREAD), seen  # nothing else is held yet
    assert seen[1:] == [(r, "MainThread") for r in runs[1:]], seen
    # no run's volumes held while the next is read (the first run's read was a Future the
    # caller kept, and it held them to the end)
    assert alive_at_read == [[False] * i for i in range(1, len(runs))], alive_at_read
    assert f"{runs[1]}: read after the run before it is picked, not while" in caplog.text
    for run in runs:  # and each run's read is said to be more than there is, by name
        gb = estimated_peak_bytes(small_project, run, cfg) / 2**30
        assert f"{run}: about {gb:.1f} GB to read and pick, 0.0 GB available now" in caplog.text
    assert after.equals(ahead) and len(after) > 0
