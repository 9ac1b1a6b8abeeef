"""infer reads the next run in a thread of its own that ends with the read (not a pool
thread, whose OpenMP team slowed the network's passes while it idled: bench/threads.py)."""

import threading
import time

import pytest
import torch

from sparse_det.stream import READER_THREAD, in_own_thread


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == READER_THREAD]


def _wait_until_no_reader(seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while _readers() and time.monotonic() < end:
        time.sleep(0.01)
    return not _readers()


def test_the_reader_returns_the_value_and_ends():
    future = in_own_thread(lambda a, b: torch.arange(100_000).sum().item() + a * b, 2, 3)
    assert future.result(timeout=30) == 4_999_950_000 + 6
    assert _wait_until_no_reader()


def test_the_reader_hands_its_error_to_the_caller_and_ends():
    def broken(path):
        raise ValueError(f"{path}: NaNs in the tomogram")

    future = in_own_thread(broken, "run_001")
    with pytest.raises(ValueError, match="run_001: NaNs"):
        future.result(timeout=30)
    assert _wait_until_no_reader()


def test_one_reader_at_a_time_in_a_streamed_project(small_project, monkeypatch):
    """Over a project's runs no reader outlives its run: at most the one reading ahead."""
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT
    from sparse_det.stream import infer_project

    seen = []
    real = threading.Thread.start

    def counting_start(self):
        if self.name == READER_THREAD:
            seen.append(len(_readers()))
        return real(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    picks = infer_project(small_project, DEFAULT_CHECKPOINT, device="cpu")
    runs = small_project.runs()
    assert len(runs) >= 2 and len(seen) == len(runs) and max(seen) <= 1
    assert _wait_until_no_reader() and len(picks) > 0


def test_the_threads_bench_times_each_way(small_project, tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.threads import WAYS, main

    out = tmp_path / "threads.json"
    assert main(["--project", str(small_project.path), "--repeat", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["run"] == small_project.runs()[0]
    assert all(result[k] > 0 for k in (*WAYS, "infer_project call"))
    assert _wait_until_no_reader()
