"""Tomogram → sparse voxel set: blank areas and shading taken out, the feature volumes
(data_tools/features.py), the top share of voxels kept by an adaptive threshold.

    python -m data_tools.sparsify --project DIR --out SHARDS [--config FILE] [--report] [--json]

The recall ceiling is the price of sparsity: a particle keeps fewer than `min_voxels` voxels
within its radius of its centre, and nothing downstream can find it again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from data_tools.blank import without_blank
from data_tools.cli_args import add_runs_argument, expand_home
from data_tools.copick_io import CopickProject
from data_tools.features import feature_volumes, standardise_kept
from data_tools.particles import DataError
from data_tools.shards import read_shard, shard_matches, shard_path, write_shard
from data_tools.sparsify_config import (
    RAW_SUFFIX,
    WHITE_SUFFIX,
    SparsifyConfig,
    load_config,
)
from data_tools.tomo_input import (
    Plan,
    Source,
    add_input_arguments,
    choose_type,
    input_overrides,
    list_sources,
    plan_source,
    read_working,
    with_overrides,
)
from data_tools.truth_user import add_truth_user_argument
from data_tools.wedge import tilt_axis
from data_tools.zarr_levels import Tomogram, non_finite_count
from sparse_det.structures import SWAP_YX, SparseVolume

log = logging.getLogger(__name__)


def second_group_mask(feature_names: list[str]) -> np.ndarray:
    """Which channels belong to the second group (whitened_channels or raw_channels)."""
    return np.array([n.endswith((WHITE_SUFFIX, RAW_SUFFIX)) for n in feature_names])


def selection_score(smooth, fine, cfg: SparsifyConfig):
    """What ranks voxels for keeping (cfg.select_mode), from the smooth channel and the
    finest band: volumes, or the kept voxels' unstandardised columns."""
    return smooth + fine if cfg.select_mode == "smooth+fine" else smooth


def held(vols: list) -> list:
    """Feature volumes as a sparse volume keeps them once its voxels are selected (for the
    rescorer and reselect): float16 (numpy arrays or tensors), each converted in the list,
    so that each float32 volume goes as its copy comes. In float32 they were a picking
    process's largest allocation (five volumes: 0.73 GB of its 2.1 at 37 M voxels); float16
    keeps a robust-unit feature clipped at 6-20 sigma to 1 part in 2,000, finer than the
    network's bf16 products. Last to first: the first (the intensity channel) may be the
    caller's tomogram, alive until sparsify returns; converted first, its copy stood on
    every later conversion's peak (0.27 GB of a cellular tomogram's 4.03)."""
    for i in reversed(range(len(vols))):
        vols[i] = (as_float16(vols[i]) if isinstance(vols[i], np.ndarray)
                   else vols[i].half())
    return vols


def as_float16(a: np.ndarray) -> np.ndarray:
    """`a` in float16, rounded to nearest even as numpy rounds it, by torch's vectorised
    conversion where torch is already loaded (5x numpy's on 145 M voxels, 0.07 against
    0.34 s; the same bits), else numpy's (the sparsifier does not load torch for this)."""
    torch = sys.modules.get("torch")
    if torch is None or not a.flags.c_contiguous or a.dtype != np.float32:
        return a.astype(np.float16)
    return torch.from_numpy(a).to(torch.float16).numpy()


def volume_score(feats: list, cfg: SparsifyConfig, blank: np.ndarray | None = None,
                 part: tuple[slice, ...] = (...,)):
    """selection_score of feature volumes (the first five channels', float32 or held), in
    float32 and a new array, over `part` of them; blank voxels at -inf, never kept."""
    smooth, fine = feats[1][part], feats[2][part]
    if isinstance(smooth, np.ndarray):
        score = selection_score(smooth.astype(np.float32), fine, cfg)
        if blank is not None:
            score[blank[part]] = -np.inf
        return score
    import torch

    score = selection_score(smooth.float(), fine, cfg)  # "smooth": the volume itself
    if blank is not None:
        score = score.masked_fill(torch.as_tensor(blank[part], device=score.device),
                                  float("-inf"))
    return score


MAX_KEEP_SHARE = 0.5


def keep_share(cfg: SparsifyConfig, depth_vox: int, voxel_size_A: float) -> float:
    """The share of a tomogram's voxels to keep: keep_fraction of at most keep_max_depth_A
    of its depth (a deeper one keeps per column what one that deep keeps), or more in a
    slab too thin to hold keep_min_depth_A per column (at most MAX_KEEP_SHARE)."""
    depth_A = max(depth_vox * voxel_size_A, 1e-9)
    counted = min(1.0, cfg.keep_max_depth_A / depth_A) if cfg.keep_max_depth_A else 1.0
    return min(max(cfg.keep_fraction * counted, cfg.keep_min_depth_A / depth_A),
               MAX_KEEP_SHARE)


# z sections whose selection score is added up at once: the whole score was another volume
# at the sparsifier's peak.
SCORE_SLAB = 16


def select(feats: list[np.ndarray], cfg: SparsifyConfig, what: str, voxel_size_A: float,
           data_share: float = 1.0, blank: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(coords [N,3] int32, features [N,C] float32) of the top keep_share voxels of those
    that hold data (`data_share` of them; the `blank` ones are never kept:
    data_tools/blank.py), ranked by volume_score."""
    shape = feats[0].shape
    share = keep_share(cfg, shape[0], voxel_size_A) * data_share
    sample = (slice(None, None, 2),) * 3  # a sample: fast
    thr = float(np.quantile(volume_score(feats, cfg, blank, sample), 1.0 - share))
    mask = np.empty(shape, bool)
    for z in range(0, shape[0], SCORE_SLAB):
        part = (slice(z, z + SCORE_SLAB),)
        np.greater(volume_score(feats, cfg, blank, part), thr, out=mask[part])
    if cfg.dilate_vox > 0:
        from scipy import ndimage

        mask = ndimage.binary_dilation(mask, iterations=cfg.dilate_vox)
    # Flat indices (argwhere's C order) and one take per channel: 3x faster than indexing
    # each channel with the three coordinate arrays.
    flat = np.flatnonzero(mask)
    if len(flat) == 0:
        raise DataError(f"{what}: empty sparse set (threshold {thr:.3g} keeps no voxel)")
    coords = np.empty((len(flat), 3), np.int32)
    for ax, c in enumerate(np.unravel_index(flat, mask.shape)):
        coords[:, ax] = c
    f = np.empty((len(flat), len(feats)), np.float32)
    for i, v in enumerate(feats):
        f[:, i] = np.take(v.reshape(-1), flat)
    if cfg.feature_norm != "volume":
        f = standardise_kept(f, shared_bands=cfg.feature_norm == "kept_bands",
                             group_size=cfg.channel_group_size)
    return coords, f


def _feature_volumes_on(work: np.ndarray, cfg: SparsifyConfig, voxel_size_A: float, what: str,
                        device, threads: int | None, own: bool = False) -> tuple:
    """(feature volumes, polarity): numpy from scipy where `device` is None (`own`: `work`
    may be overwritten), else torch tensors on it (data_tools/sparsify_torch.py)."""
    if device is None:
        if non_finite_count(work):
            raise DataError(f"{what}: tomogram has NaN/inf voxels")
        return feature_volumes(work, cfg, voxel_size_A, what, threads, own)
    import torch

    from data_tools import sparsify_torch as st

    x = torch.as_tensor(work).to(device)
    if not torch.isfinite(x).all():
        raise DataError(f"{what}: tomogram has NaN/inf voxels")
    return st.feature_volumes(x, cfg, voxel_size_A, what)


def _select_from(feats: list, cfg: SparsifyConfig, what: str, voxel_size_A: float,
                 data_share: float = 1.0, blank: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """select, on numpy volumes or on tensors where they are."""
    if isinstance(feats[0], np.ndarray):
        return select(feats, cfg, what, voxel_size_A, data_share, blank)
    from data_tools import sparsify_torch as st

    return st.select(volume_score(feats, cfg, blank), feats, cfg, what, voxel_size_A,
                     data_share)


def _tilt_axis_of(vol: np.ndarray, cfg: SparsifyConfig, device
                  ) -> tuple[str, dict, str]:
    """(axis, what the SparseVolume records of it, how it was decided for the log)."""
    if cfg.tilt_axis != "auto":
        return cfg.tilt_axis, {"tilt_axis": cfg.tilt_axis, "tilt_axis_by": "setting"}, "as set"
    axis, ratio = tilt_axis(vol, device)
    return (axis, {"tilt_axis": axis, "wedge_ratio": round(ratio, 4), "tilt_axis_by": "auto"},
            f"missing-wedge power ratio {ratio:.3g}")


def _in_file_frame(coords: np.ndarray, dense: list | None) -> tuple[np.ndarray, list | None]:
    """Kept voxels and dense channels computed with y and x swapped, swapped back
    (contiguous: the rescorer gathers from flat views of them)."""
    coords = np.ascontiguousarray(coords[:, SWAP_YX])
    if dense is not None:
        dense = [np.ascontiguousarray(d.transpose(0, 2, 1)) if isinstance(d, np.ndarray)
                 else d.transpose(1, 2).contiguous() for d in dense]
    return coords, dense


def sparsify(vol: np.ndarray, voxel_size_A: float, cfg: SparsifyConfig, run: str, *,
             origin_A: float = 0.0, threads: int | None = None,
             input_info: dict | None = None, device=None, keep_dense: int = 0,
             reselectable: bool = False, own: bool = False) -> SparseVolume:
    """A tomogram (z,y,x) at the working resolution → SparseVolume of the kept voxels.
    `device` (a torch device or its name): compute there with torch (sparsify_torch.py);
    None: numpy and scipy on the CPU. `keep_dense` > 0 keeps the first that many dense
    feature volumes with it (SparseVolume.dense, float16: numpy arrays from scipy, tensors
    on `device` from torch; the candidate rescorer reads them there instead of filtering the
    tomogram again). `reselectable`: keep every feature volume (float16) and the blank mask
    too, for reselect. `own`: the caller hands `vol` over, and it is flattened, filled and
    normalised where it lies (a writable float32 volume, filtered on the CPU): two volumes
    less at the peak, the same numbers."""
    what = f"run {run!r}"
    if vol.ndim != 3:
        raise DataError(f"{what}: expected a 3-D tomogram, got shape {vol.shape}")
    own = own and device is None and vol.dtype == np.float32 and vol.flags.writeable
    data, blank, blank_info = without_blank(vol, what, cfg.flatten, voxel_size_A, in_place=own)
    if blank is not None:
        log.warning("%s: %.1f %% of the volume is blank (one value through the depth: no "
                    "data there); set to the data's median, and the kept share counts the "
                    "rest", what, 100 * blank_info["blank_share"])
    axis, axis_info, how = _tilt_axis_of(data, cfg, device)
    # A run tilted about x is filtered in the frame the network learnt, y and x swapped,
    # so that its features are exactly those of the same run tilted about y (whitening's
    # shell means count the real FFT's kx = 0 plane once, so they are not symmetric in y
    # and x); its kept voxels and dense channels come back in the file's frame.
    work = np.ascontiguousarray(data.transpose(0, 2, 1)) if axis == "x" else data
    if blank is not None and axis == "x":
        blank = blank.transpose(0, 2, 1)
    # The filters may overwrite the caller's volume where it was handed over, else only a
    # copy made here (flattened, filled or transposed).
    feats, polarity = _feature_volumes_on(work, cfg, voxel_size_A, what, device, threads,
                                          own or work is not vol)
    coords, f = _select_from(feats, cfg, what, voxel_size_A,
                             1.0 - blank_info.get("blank_share", 0.0), blank)
    # reselect adds the score up again from the features; only the blank mask it was cut
    # with is kept.
    del feats[len(feats) if reselectable else keep_dense:]
    dense = held(feats)[:keep_dense] or None
    selected_from = (blank, feats) if reselectable else None
    del feats
    if axis == "x":
        coords, dense = _in_file_frame(coords, dense)
    info = (input_info or {}) | polarity | axis_info | blank_info
    if axis != "y":
        log.info("%s: tilted about %s (%s); the network reads it with y and x swapped", what,
                 axis, how)
    log.info("%s: polarity %s (%s%s), %d voxels kept", what, info["polarity"],
             info["polarity_by"], f", skewness {info['polarity_skew']:+.2f}"
             if "polarity_skew" in info else "", len(coords))
    tomo_type = info.get("type", cfg.tomogram_type)
    return SparseVolume(coords, f, vol.shape, voxel_size_A, run, tomo_type,
                        cfg.feature_names, cfg.to_dict(), origin_A, info, dense, selected_from)


def reselect(sv: SparseVolume, keep_fraction: float) -> SparseVolume:
    """The run `sv` was sparsified from, kept at `keep_fraction` instead: selected again
    from the volumes sparsify kept (`reselectable`), without filtering the tomogram again.
    What sparsifying it again at that share gives, to their float16 rounding (held): the
    same voxels but those within that of the threshold, the same features to 1 part in
    2,000."""
    if sv.selected_from is None:
        raise ValueError(f"run {sv.run!r}: sparsified without reselectable=True")
    blank, feats = sv.selected_from
    cfg = replace(SparsifyConfig.from_dict(sv.config), keep_fraction=keep_fraction)
    coords, f = _select_from(feats, cfg, f"run {sv.run!r}", sv.voxel_size_A,
                             1.0 - sv.input.get("blank_share", 0.0), blank)
    if sv.tilted_about_x:
        coords, _ = _in_file_frame(coords, None)
    log.info("run %r: %d voxels kept at %.2f %%", sv.run, len(coords), 100 * keep_fraction)
    return replace(sv, coords_zyx=coords, feats=f, config=cfg.to_dict())


def read_input(project: CopickProject, run: str, cfg: SparsifyConfig,
               threads: int | None = None) -> tuple[Tomogram, dict]:
    """The run's tomogram on the working grid as `cfg` reads it, and how it was chosen: the
    one place that decides (data_tools/tomo_input.py has the rules); `threads`: the cores
    the read may use (default all)."""
    return read_working(project, run, tomo_type=cfg.tomogram_type,
                        type_fallback=cfg.type_fallback, working_A=cfg.working_spacing_A,
                        source_spacing_A=cfg.source_spacing_A, threads=threads)


def plan_input(project: CopickProject, run: str, cfg: SparsifyConfig) -> Plan:
    """Which level of which tomogram `cfg` reads for the run and how, from metadata alone:
    command lines call it on every run before any heavy work, so bad input fails at once."""
    tomo_type = choose_type(project, run, cfg.tomogram_type, cfg.type_fallback)
    return plan_source(list_sources(project, run, tomo_type, cfg.source_spacing_A or None),
                       cfg.working_spacing_A)


def full_resolution_source(project: CopickProject, run: str, cfg: SparsifyConfig) -> Source:
    """The finest level of the tomogram `cfg` reads (pictures, STAR pixel sizes)."""
    s = plan_input(project, run, cfg).source
    return list_sources(project, run, s.tomo_type, s.folder_spacing_A)[0]


def read_full_resolution(project: CopickProject, run: str, cfg: SparsifyConfig) -> Tomogram:
    s = full_resolution_source(project, run, cfg)
    return project.read_tomogram(run, s.folder_spacing_A, s.tomo_type, scale=s.level)


def sparsify_run(project: CopickProject, run: str, cfg: SparsifyConfig,
                 threads: int | None = None, device=None, keep_dense: int = 0,
                 reselectable: bool = False) -> SparseVolume:
    """threads: read and filter threads (default: all cores; 1 inside a one-CPU Ray task); device,
    keep_dense, reselectable: see sparsify."""
    tomo, info = read_input(project, run, cfg, threads)
    return sparsify(tomo.data, tomo.voxel_size_A, cfg, run, origin_A=tomo.origin_A,
                    threads=threads, input_info=info, device=device, keep_dense=keep_dense,
                    reselectable=reselectable, own=True)  # read for this call alone


def shard_or_sparsify(project: CopickProject, run: str, cfg: SparsifyConfig,
                      shards_dir: str | Path | None = None, *, write: bool = False,
                      threads: int | None = None, device=None, keep_dense: int = 0,
                      reselectable: bool = False) -> SparseVolume:
    """The run's shard when one made with exactly `cfg` is in `shards_dir`; else the run
    sparsified now (and its shard written when `write`)."""
    path = shard_path(shards_dir, run) if shards_dir else None
    if path is not None and shard_matches(path, cfg.to_dict()):
        return read_shard(path)
    sv = sparsify_run(project, run, cfg, threads, device, keep_dense, reselectable)
    if write and shards_dir:
        write_shard(sv, shards_dir)
    return sv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--out", help="shard folder (omit with --report to only measure)")
    ap.add_argument("--config", help="YAML with sparsify keys (or a 'sparsify:' section)")
    add_runs_argument(ap)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    add_input_arguments(ap)
    add_truth_user_argument(ap)
    a = expand_home(ap.parse_args(argv))
    from data_tools.sparsify_ceiling import ceiling_report, format_report

    try:
        cfg = with_overrides(load_config(a.config), input_overrides(a))
        project = CopickProject(a.project, truth_user=a.truth_user)
        out = Path(a.out) if a.out else None
        if out is None and not a.report:
            ap.error("give --out, --report or both")
        rep = ceiling_report(project, cfg, out, a.runs, progress=not a.quiet and
                             sys.stderr.isatty())
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback
        kept = f"; the same command reads back the shards kept in {a.out}" if a.out else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    if a.json:
        print(json.dumps(rep, indent=2))
    elif a.report:
        print(format_report(rep))
    if out is not None and not a.json:
        print(f"wrote {len(rep['runs'])} shard(s) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
