"""PNG of a tomogram slice with picks circled per class.

    python -m data_tools.preview --project DIR --run RUN --out slice.png [--z Z]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_path
from data_tools.copick_io import CopickProject, xyz_A_to_zyx_vox


def slice_png(project: CopickProject, run: str, out: str | Path, z: int | None = None,
              predictions: dict[str, np.ndarray] | None = None, scale: int = 0) -> Path:
    """Central x-y slice (a 5-slice mean); ground truth as circles of the particle radius where
    the particle cuts the slice, predictions (if given) as crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tomo = project.read_tomogram(run, scale=scale)
    vol, vs = tomo.data, tomo.voxel_size_A
    z = vol.shape[0] // 2 if z is None else z
    img = vol[max(z - 2, 0):z + 3].mean(0)
    lo, hi = np.percentile(img, [1, 99])
    fig, ax = plt.subplots(figsize=(9, 9), dpi=100)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
    truth = project.read_picks(run)
    for p in project.particles:
        color = np.array(p.color[:3]) / 255
        gt = truth[p.name]
        for pts, marker in ((gt, "o"), ((predictions or {}).get(p.name), "x")):
            if pts is None or len(pts) == 0:
                continue
            zyx = xyz_A_to_zyx_vox(pts, vs)
            r = p.radius_A / vs
            cut = np.abs(zyx[:, 0] - z) < r
            for cz, cy, cx in zyx[cut]:
                rr = np.sqrt(max(r**2 - (cz - z) ** 2, 1.0))
                if marker == "o":
                    ax.add_patch(plt.Circle((cx, cy), rr, fill=False, color=color, lw=1.2))
                else:
                    ax.plot(cx, cy, "x", color=color, ms=6)
        ax.plot([], [], "o", mfc="none", color=color, label=p.name)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{run}  z={z}  ({vs:.2f} Å/voxel)")
    ax.axis("off")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--z", type=int)
    a = ap.parse_args(argv)
    print(slice_png(CopickProject(a.project), a.run, a.out, a.z))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
