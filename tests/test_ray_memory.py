"""Ray tasks reserve their run's estimated peak memory (ray_jobs.cluster.task_memory), so a
node runs no more of them at once than its memory holds: on a real local Ray whose memory
holds one run's estimate, the two runs are sparsified one after the other."""

from itertools import pairwise

import pytest

from data_tools.peak_memory import PEAK_BASE_BYTES, PEAK_BYTES_PER_VOXEL, estimated_peak_bytes
from data_tools.sparsify import plan_input
from data_tools.sparsify_config import SparsifyConfig
from ray_jobs.preprocess import preprocess_project

pytestmark = pytest.mark.slow  # a real local Ray


def test_tasks_reserve_their_runs_memory_and_wait_for_it(small_project, tmp_path):
    import ray

    from ray_jobs.cluster import task_memory

    cfg = SparsifyConfig()
    runs = small_project.runs()
    peaks = [estimated_peak_bytes(small_project, r, cfg) for r in runs]
    assert peaks == [PEAK_BASE_BYTES + plan_input(small_project, r, cfg).working_voxels
                     * PEAK_BYTES_PER_VOXEL for r in runs] and min(peaks) > 0
    if ray.is_initialized():
        ray.shutdown()
    # Two CPUs, and memory for one run's estimate and a half: one task at a time.
    ray.init(num_cpus=2, _memory=int(1.5 * max(peaks)), include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    try:
        assert task_memory(peaks[0]) == {"memory": peaks[0]}
        # more than any node has: capped at the largest node's, so it can still run
        assert task_memory(10 * max(peaks)) == {"memory": int(1.5 * max(peaks))}
        assert task_memory(None) == {}
        assert task_memory(10 * max(peaks), largest_bytes=12345) == {"memory": 12345}
        res = preprocess_project(small_project.path, tmp_path / "shards", cfg, progress=False)
    finally:
        ray.shutdown()
    assert [r["status"] for r in res] == ["done"] * len(runs), res
    spans = sorted((r["ended_at"] - r["seconds"], r["ended_at"]) for r in res)
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in pairwise(spans)), (
        "runs overlapped although the node's memory holds one", spans)
