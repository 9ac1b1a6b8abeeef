"""MRC tomograms (IMOD, AreTomo, Warp, RELION) into a copick project the picker reads.

    python -m data_tools.import_mrc --out PROJECT TOMO.mrc [TOMO.mrc ...]
        [--tomo-type wbp] [--voxel-size A] [--bin N] [--thin-axis auto|z|y]

Each file becomes a run named after it (`TS_01.mrc` → run `TS_01`, `TS 01.mrc` too) with
one OME-Zarr of `--tomo-type` in its `VoxelSpacing{A}` folder, three pyramid levels,
float32; then
`python -m sparse_det.infer --project PROJECT --out picks.csv` picks it and the picks come
back in Å in the imported volume's frame; `--star-out DIR` writes them in pixels of the
original file (what the import did is kept in the tomogram's `.zattrs` and undone:
data_tools/source_frame.py).

- `--bin N` mean-bins N×N×N on import, a slab of sections at a time, so an unbinned
  tomogram of tens of GB imports in the memory of its binned copy.
- `--thin-axis auto` (default): a volume whose rows (y) are its thinnest axis, by 1.5× or
  more, is how IMOD's `tilt` writes a reconstruction before `trimvol -rx`; it is rotated
  −90° about x as `trimvol -rx` does (handedness kept) so that the beam runs along z, the
  axis the network learnt thin. `z` imports as stored; `y` always rotates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_tools.cli_args import expand_home
from data_tools.copick_io import RUNS_DIR, CopickProject
from data_tools.mrc import MrcVolume, pixel_size_unset, read_mrc
from data_tools.particles import DataError
from data_tools.run_names import as_run_name, validate_run_name
from data_tools.source_frame import IMPORT_KEY, SourceFrame
from data_tools.zarr_levels import bin_mean

THIN_RATIO = 1.5
SUFFIXES = {".mrc", ".rec", ".map", ".st"}


def run_name(path: Path) -> str:
    """The file's name without its volume suffixes: `TS_01.rec.mrc` → `TS_01`; characters a
    run's folder name may not hold (a space, '+', ...) become '_' (`TS 01.mrc` → `TS_01`)."""
    name = Path(path).name
    while Path(name).suffix.lower() in SUFFIXES:
        name = name[:-len(Path(name).suffix)]
    try:
        return validate_run_name(as_run_name(name))
    except DataError as exc:
        raise DataError(f"{path}: {exc}; rename the file") from exc


def binned(vol: MrcVolume, factor: int) -> np.ndarray:
    """factor³ mean binning (a trailing remainder dropped), read from the file `factor`
    sections at a time, so a volume is never in memory whole."""
    shape = vol.data_zyx.shape
    if factor == 1:
        return vol.read_z(0, shape[0])
    n_z, n_y, n_x = (n // factor for n in shape)
    if min(n_z, n_y, n_x) == 0:
        raise DataError(f"{vol.path}: a {shape} volume cannot be binned by {factor}")
    out = np.empty((n_z, n_y, n_x), dtype=np.float32)
    for k in range(n_z):
        out[k] = bin_mean(vol.read_z(k * factor, (k + 1) * factor), factor)[0]
    return out


def rotated_about_x(data_zyx: np.ndarray) -> np.ndarray:
    """−90° about x, IMOD's `trimvol -rx`: the new z is the old y reversed, the new y the
    old z (a rotation, so a right-handed volume stays right-handed)."""
    return np.ascontiguousarray(np.swapaxes(data_zyx, 0, 1)[::-1])


def needs_rotation(shape_zyx: tuple[int, int, int], thin_axis: str) -> bool:
    if thin_axis != "auto":
        return thin_axis == "y"
    n_z, n_y, n_x = shape_zyx
    return n_y * THIN_RATIO <= min(n_z, n_x)


def import_mrc(paths: list[Path], out: Path, tomo_type: str = "wbp",
               voxel_size_A: float | None = None, bin_factor: int = 1,
               thin_axis: str = "auto", log=print) -> CopickProject:
    """Writes each MRC file as a run of the copick project `out` (made where missing)."""
    validate_run_name(tomo_type)  # it names a folder too
    runs = [run_name(p) for p in paths]
    for run in sorted({r for r in runs if runs.count(r) > 1}):
        same = [str(p) for p, r in zip(paths, runs, strict=True) if r == run]
        raise DataError(f"{', '.join(same)}: these files would make the same run {run!r}; "
                        "import them into separate projects or rename one")
    vols = [read_mrc(p) for p in paths]  # every header checked before anything is written
    for vol in vols:
        if vol.voxel_size_A is None and voxel_size_A is None:
            raise DataError(f"{vol.path}: the header gives no voxel size (cell 0); "
                            "pass --voxel-size A")
        if voxel_size_A is None and pixel_size_unset(vol.voxel_size_A):
            # read as 1 Å, a tomogram would be binned 20x too far and picked at random
            raise DataError(f"{vol.path}: the header says 1 Å per voxel (cell = grid), what "
                            "IMOD and other writers leave when the pixel size was never "
                            "set; pass --voxel-size A (tomograms are mostly 5-20 Å)")
    (out / "static" / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    (out / "overlay").mkdir(exist_ok=True)
    project = CopickProject(out)
    if not (out / "copick_config.json").exists():
        project.write_config(out.name)
    for run, vol in zip(runs, vols, strict=True):
        size_A = (voxel_size_A or vol.voxel_size_A) * bin_factor
        data = binned(vol, bin_factor)
        frame = SourceFrame(file=str(Path(vol.path).resolve()),
                            shape_zyx=tuple(vol.data_zyx.shape),
                            pixel_size_A=size_A / bin_factor, bin=bin_factor,
                            rotated_about_x=needs_rotation(data.shape, thin_axis))
        if not np.isfinite(data).all():
            raise DataError(f"{vol.path}: {int((~np.isfinite(data)).sum())} NaN/inf voxels")
        how = ""
        if frame.rotated_about_x:
            data, how = rotated_about_x(data), ", rotated -90° about x (trimvol -rx)"
        elif data.shape[0] > min(data.shape[1:]):
            log(f"warning: {vol.path}: z ({data.shape[0]}) is not the thinnest axis of "
                f"{data.shape}; the network expects the beam along z (--thin-axis)")
        project.write_tomogram(run, data, voxel_size_A=size_A, tomo_type=tomo_type,
                               voxel_spacing_A=round(size_A, 3),
                               extra_attrs={IMPORT_KEY: frame.as_attrs()})
        log(f"{vol.path} -> {run}: {tomo_type} {'x'.join(map(str, data.shape))} (z, y, x) "
            f"at {size_A:.3f} Å{how}")
    return project


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mrc", nargs="+", type=Path, help="MRC tomograms, one run each")
    ap.add_argument("--out", required=True, type=Path, help="copick project to write into")
    ap.add_argument("--tomo-type", default="wbp",
                    help="the tomogram type to file them as (wbp, denoised, ...)")
    ap.add_argument("--voxel-size", type=float, help="Å per voxel where the header has none "
                    "or is wrong (it overrides the header)")
    ap.add_argument("--bin", type=int, default=1, dest="bin_factor",
                    help="mean-bin N×N×N on import")
    ap.add_argument("--thin-axis", choices=["auto", "z", "y"], default="auto")
    a = expand_home(ap.parse_args(argv))
    if a.bin_factor < 1:
        ap.error("--bin must be 1 or more")
    if a.voxel_size is not None and not a.voxel_size > 0:
        ap.error("--voxel-size must be positive")
    try:
        import_mrc(a.mrc, a.out, a.tomo_type, a.voxel_size, a.bin_factor, a.thin_axis)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"next: python -m sparse_det.infer --project {a.out} --out picks.csv "
          "[--star-out DIR (RELION, Warp) | --imod-out DIR (3dmod): picks in pixels of "
          "these files]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
