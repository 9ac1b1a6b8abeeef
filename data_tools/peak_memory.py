"""About the most memory a process picking (or reading) a run takes, from the run's metadata
alone: Ray reserves it per task, and `infer` reads the next run ahead only where it fits."""

from __future__ import annotations

from data_tools.copick_io import CopickProject
from data_tools.particles import DataError
from data_tools.sparsify import plan_input
from data_tools.sparsify_config import SparsifyConfig
from data_tools.tomo_input import Plan

# A picking process's peak: the libraries and model, and per voxel of the working grid
# the feature volumes most of it. An upper line through the measured peaks, which move by
# 0.1 GB from run to run (GB at M voxels, 2026-12-07: 0.83-0.86 at 9.1, 1.72-1.78 at 36.5,
# 1.96-2.07 at 36.1 from a 7.84 Å level, 2.24-2.34 at 72 from a 13.48 Å one, 2.21-2.28 at
# 73, 3.66-3.75 at 145; bench/large_tomogram*.json). The 7.84 Å level sets the base: its
# peak is the network's passes (1.94 GB; its read 1.28, its features 1.39), above the 10 Å
# level's of as many voxels. 1.3 GB and 25 bytes a voxel until the sparsifier's peak came
# down (4.29 GB at 145 M voxels before).
PEAK_BASE_BYTES = int(1.4 * 2**30)

PEAK_BYTES_PER_VOXEL = 22

# Reading comes first, with the libraries and model loaded (0.3 GB) and only the working
# volume and the slabs being read in hand; from a level much finer than the working grid
# the slabs can be the larger part (bench/read_peak.py).
READ_BASE_BYTES = int(0.45 * 2**30)


def read_peak_bytes(plan: Plan) -> int:
    """About the most memory reading what `plan` reads takes."""
    return READ_BASE_BYTES + 4 * plan.working_voxels + plan.read_bytes


def peak_bytes(plan: Plan) -> int:
    """About the most memory a process picking what `plan` reads takes: the larger of the
    read's peak and the picking's."""
    return max(PEAK_BASE_BYTES + plan.working_voxels * PEAK_BYTES_PER_VOXEL,
               read_peak_bytes(plan))


def estimated_peak_bytes(project: CopickProject, run: str, cfg: SparsifyConfig) -> int | None:
    """peak_bytes of `run`, from its metadata alone; None where its plan fails (the read
    then says why)."""
    try:
        return peak_bytes(plan_input(project, run, cfg))
    except (DataError, OSError, ValueError):
        return None
