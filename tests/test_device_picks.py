"""The shipped default on the device path picks what it picks on the CPU path: on a device
the torch sparsifier hands the rescorer its dense channels as tensors there, the network's
probabilities stay there, and the rescorer's gathers run there; only its [M, F] features
come back. On the CPU the torch sparsifier stands in for a device; on CUDA (skipped
without one) the whole path runs there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from data_tools.copick_io import CopickProject
from data_tools.sparsify import read_input, sparsify
from sparse_det.checkpoint import DEFAULT_CHECKPOINT
from sparse_det.inference import Picker
from sparse_det.rescore import PROFILE_CHANNELS
from sparse_det.structures import Detections


def assert_same_picks(a: Detections, b: Detections, picker: Picker) -> int:
    """Per class: as many picks within 5 % (a pick at its threshold may fall the other way
    on float rounding), 95 % of a's with one of b's within 0.1 radius, scores within 0.02;
    returns how many picks a holds."""
    n = 0
    for p in picker.particles:
        (ca, sa), (cb, sb) = a[p.name], b[p.name]
        n += len(ca)
        assert abs(len(ca) - len(cb)) <= max(1, 0.05 * len(ca)), (a.run, p.name)
        if len(ca) == 0:
            continue
        d, j = (cKDTree(cb).query(ca, distance_upper_bound=0.1 * p.radius_A) if len(cb)
                else (np.full(len(ca), np.inf), np.zeros(len(ca), int)))
        found = np.isfinite(d)
        assert found.mean() >= 0.95, (a.run, p.name, found.mean())
        np.testing.assert_allclose(sb[j[found]], sa[found], atol=0.02)
    return n


def test_the_torch_sparsifiers_tensors_give_the_cpu_picks(small_project):
    picker = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    assert picker.ckpt.rescorer is not None and picker.tta == "flip"
    project = CopickProject(small_project.path)
    n = 0
    for run in project.runs():
        tomo, info = read_input(project, run, picker.sparsify_config)
        sv = sparsify(tomo.data, tomo.voxel_size_A, picker.sparsify_config, run,
                      origin_A=tomo.origin_A, input_info=info, device="cpu",
                      keep_dense=PROFILE_CHANNELS)
        assert all(isinstance(ch, torch.Tensor) for ch in sv.dense)
        n += assert_same_picks(picker.pick(picker.detect_run(project, run)),
                               picker.pick(picker.detect_run(project, run, sv=sv)), picker)
    assert n > 20  # the comparison saw real picks


@pytest.mark.gpu
def test_cuda_default_picks_equal_the_cpu(small_project):
    cpu = Picker.load(DEFAULT_CHECKPOINT, "cpu")
    gpu = Picker.load(DEFAULT_CHECKPOINT, "cuda")
    assert gpu.device.type == "cuda" and gpu.tta == cpu.tta == "flip"
    project = CopickProject(small_project.path)
    n = 0
    for run in project.runs():
        sv = gpu.sparse(project, run)
        assert sv.dense[0].device.type == "cuda"  # the rescorer gathers there
        n += assert_same_picks(cpu.pick(cpu.detect_run(project, run)),
                               gpu.pick(gpu.detect_run(project, run, sv=sv)), cpu)
    assert n > 20
