"""A cryoCARE-like denoiser (Noise2Noise; Buchholz et al. 2019): a small 3-D U-Net trained on
one tomogram's two frame-split half reconstructions to predict each from the other, then
applied to both and averaged. Many labs' `denoised` tomograms are made this way (cryoCARE
and its kin); the simulator writes the halves (TiltRanges.halves) so that the picker can be
judged on such tomograms (bench/denoisers.py --denoisers n2n).

`python -m data_tools.n2n --project P --out G.pt` trains one general network across every
run's halves instead (Topaz-Denoise's way): training's appearance randomisation
(data.appearance.learnt_denoiser) passes a share of its copies through it.

The halves carry the same signal and independent noise, so the network's least-squares
prediction of one from the other is the signal's conditional mean: a denoiser learnt from
the tomogram itself, with no clean target. The picker never runs it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from data_tools.cli_args import at_least, expand_home


@dataclass(frozen=True)
class N2NConfig:
    steps: int = 500  # cryoCARE trains far longer on a GPU; its loss flattens early here
    patch_vox: int = 32  # cube side, a multiple of 4 (two poolings)
    batch: int = 8
    channels: int = 16  # the first level's; doubled per level
    lr: float = 4e-4  # cryoCARE's
    seed: int = 0


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv3d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.1))


class UNet3d(nn.Module):
    """Two poolings, skip connections, one output channel: cryoCARE's network, smaller."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.enc1, self.enc2, self.bottom = _block(1, c), _block(c, 2 * c), _block(2 * c, 4 * c)
        self.dec2, self.dec1 = _block(6 * c, 2 * c), _block(3 * c, c)
        self.out = nn.Conv3d(c, 1, 1)
        self.pool = nn.MaxPool3d(2)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(b), e2], 1))
        return self.out(self.dec1(torch.cat([self.up(d2), e1], 1)))


def _patches(pair: tuple[np.ndarray, np.ndarray], cfg: N2NConfig, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random (input, target) cubes: a random half as input, the other as target,
    each pair mirrored and rotated in the plane (the tilt axis is y, so no z rotations)."""
    p = cfg.patch_vox
    shape = np.array(pair[0].shape)
    xs, ys = [], []
    for _ in range(cfg.batch):
        z, y, x = (rng.integers(0, n - p + 1) for n in shape)
        a, b = (pair[0], pair[1]) if rng.random() < 0.5 else (pair[1], pair[0])
        cube_a, cube_b = (v[z:z + p, y:y + p, x:x + p] for v in (a, b))
        k, flip = int(rng.integers(2)) * 2, rng.random() < 0.5  # 180° keeps the axis along y
        cube_a, cube_b = (np.rot90(c, k, axes=(1, 2)) for c in (cube_a, cube_b))
        if flip:
            cube_a, cube_b = cube_a[:, :, ::-1], cube_b[:, :, ::-1]
        xs.append(cube_a)
        ys.append(cube_b)
    return np.stack(xs)[:, None].copy(), np.stack(ys)[:, None].copy()


def train_n2n(even: np.ndarray, odd: np.ndarray, cfg: N2NConfig = N2NConfig(),
              device: str | torch.device = "cpu", log=None) -> tuple[UNet3d, float, float]:
    """(network, mean, std): the U-Net trained on the standardised halves, and the
    standardisation to apply before it and undo after."""
    if even.shape != odd.shape:
        raise ValueError(f"halves of different shapes {even.shape} and {odd.shape}")
    mean = float((even.mean() + odd.mean()) / 2)
    std = float(np.sqrt((even.var() + odd.var()) / 2)) or 1.0
    net = _fit([((even - mean) / std, (odd - mean) / std)], cfg, device, log)
    return net, mean, std


def _fit(pairs: list[tuple[np.ndarray, np.ndarray]], cfg: N2NConfig,
         device: str | torch.device, log) -> UNet3d:
    """The U-Net trained to predict one half from the other, each batch from one pair
    drawn at random."""
    for even, odd in pairs:
        if even.shape != odd.shape:
            raise ValueError(f"halves of different shapes {even.shape} and {odd.shape}")
        if min(even.shape) < cfg.patch_vox:
            raise ValueError(f"halves {even.shape} smaller than a {cfg.patch_vox}³ patch")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = UNet3d(cfg.channels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        # One pair for a single run: the generator draws exactly what it drew before.
        pair = pairs[int(rng.integers(len(pairs)))] if len(pairs) > 1 else pairs[0]
        x, y = (torch.from_numpy(a).to(device) for a in _patches(pair, cfg, rng))
        loss = nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None and (step + 1) % 100 == 0:
            log(f"n2n step {step + 1}/{cfg.steps}: loss {loss.item():.4f}")
    return net.eval()


@torch.no_grad()
def apply_n2n(net: UNet3d, vol: np.ndarray, mean: float, std: float,
              device: str | torch.device = "cpu", slab_vox: int = 96) -> np.ndarray:
    """The network over a whole tomogram, in y slabs with a margin beyond its reach (so the
    slabs join without seams), padded to a multiple of 4 in every axis."""
    margin = 32  # the U-Net's reach is about 26 voxels
    x = (np.asarray(vol, np.float32) - mean) / std
    pad = [(0, -n % 4) for n in x.shape]
    x = np.pad(x, pad, mode="reflect")
    out = np.empty_like(x)
    for y0 in range(0, x.shape[1], slab_vox):
        lo, hi = max(0, y0 - margin), min(x.shape[1], y0 + slab_vox + margin)
        lo -= lo % 4
        hi = min(x.shape[1], hi + (-(hi - lo) % 4))
        t = torch.from_numpy(np.ascontiguousarray(x[:, lo:hi]))[None, None].to(device)
        y = net(t)[0, 0].cpu().numpy()
        end = min(y0 + slab_vox, x.shape[1])
        out[:, y0:end] = y[:, y0 - lo:end - lo]
    z, yy, xx = vol.shape
    return (out[:z, :yy, :xx] * std + mean).astype(np.float32)


def denoise_n2n(even: np.ndarray, odd: np.ndarray, cfg: N2NConfig = N2NConfig(),
                device: str | torch.device = "cpu", log=None) -> np.ndarray:
    """The denoised tomogram: the network trained on the halves, applied to each, averaged
    (cryoCARE's output)."""
    net, mean, std = train_n2n(even, odd, cfg, device, log)
    return (apply_n2n(net, even, mean, std, device) + apply_n2n(net, odd, mean, std, device)) / 2


# A general denoiser (Topaz-Denoise's way): one Noise2Noise network trained across the
# halves of many runs, then applied to any tomogram, standardised by its own robust
# statistics. Training draws its output as an appearance (data_tools/appearance.py) on
# every run, halves or not: the look of a learnt denoiser without a network per run.
GENERAL_VOXEL_A = 20.0  # the grid it is trained and applied on


def train_general_n2n(pairs: list[tuple[np.ndarray, np.ndarray]], cfg: N2NConfig = N2NConfig(),
                      device: str | torch.device = "cpu", log=None) -> UNet3d:
    """One network trained on several runs' halves, each pair standardised by the robust
    statistics of its mean (the full reconstruction that users will denoise)."""
    from data_tools.appearance import robust_sigma

    scaled = []
    for even, odd in pairs:
        med, sigma = robust_sigma((np.asarray(even) + np.asarray(odd)) / 2)
        scaled.append(tuple(((np.asarray(h, np.float32) - med) / sigma).astype(np.float32)
                            for h in (even, odd)))
    return _fit(scaled, cfg, device, log)


def save_general(net: UNet3d, path, cfg: N2NConfig, trained_on: list[str]) -> None:
    """Weights and what made them, written atomically; loadable with weights_only=True."""
    from dataclasses import asdict

    from data_tools.atomic import atomic_path

    doc = {"model": net.state_dict(), "config": asdict(cfg), "trained_on": list(trained_on),
           "voxel_A": GENERAL_VOXEL_A}
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)


def load_general(path) -> UNet3d:
    """The general denoiser saved by save_general; a clear error when the file is not one."""
    from pathlib import Path

    from data_tools.particles import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no general denoiser there (make one: python -m "
                        f"data_tools.n2n --project P --out {path})")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: not a torch file ({exc})") from exc
    if not isinstance(doc, dict) or "model" not in doc or "config" not in doc:
        raise DataError(f"{path}: not a general denoiser (no model and config)")
    net = UNet3d(int(doc["config"]["channels"]))
    net.load_state_dict(doc["model"])
    return net.eval()


def denoise_general(net: UNet3d, vol: np.ndarray, voxel_A: float,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """`vol` denoised by a general network on its own grid, binned to the nearest multiple
    of its voxels to GENERAL_VOXEL_A first and brought back by linear interpolation;
    returned at the input's median and robust sigma."""
    from scipy import ndimage

    from data_tools.appearance import robust_sigma

    # the same scale for every tomogram, so a network trained on some reads any
    med, sigma = robust_sigma(vol)
    x = ((np.asarray(vol, np.float32) - med) / sigma).astype(np.float32)
    f = max(1, round(GENERAL_VOXEL_A / voxel_A))
    if f > 1:
        crop = tuple(slice(0, n - n % f) for n in x.shape)
        small = x[crop].reshape(x.shape[0] // f, f, x.shape[1] // f, f, x.shape[2] // f,
                                f).mean(axis=(1, 3, 5))
        out_small = apply_n2n(net, small, 0.0, 1.0, device)
        out = ndimage.zoom(out_small, [n / m for n, m in zip(x.shape, out_small.shape,
                                                              strict=True)], order=1)
        out = out[:x.shape[0], :x.shape[1], :x.shape[2]]
    else:
        out = apply_n2n(net, x, 0.0, 1.0, device)
    return (out * sigma + med).astype(np.float32)


def halves_of(project, run: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(even, odd, voxel size in Å): the run's frame-split halves (`wbp-*` or `sirt-*`) at
    its first voxel spacing."""
    from data_tools.particles import DataError

    spacing_A = project.voxel_spacings(run)[0]
    types = project.tomogram_types(run, spacing_A)
    raw = next((k for k in ("wbp", "sirt") if {f"{k}-even", f"{k}-odd"} <= set(types)), None)
    if raw is None:
        raise DataError(f"{project.path}: run {run} has no frame-split halves (wbp-even, "
                        f"wbp-odd; it has {sorted(types)}): simulate it with tilt_ranges "
                        f"halves: true")
    even, odd = (project.read_tomogram(run, spacing_A, f"{raw}-{k}") for k in ("even", "odd"))
    return (np.asarray(even.data, np.float32), np.asarray(odd.data, np.float32),
            even.voxel_size_A)


def main(argv: list[str] | None = None) -> int:
    """Trains the general denoiser on every run's halves of a project and saves it."""
    import argparse
    import time

    from data_tools.copick_io import CopickProject

    ap = argparse.ArgumentParser(prog="python -m data_tools.n2n", description=main.__doc__)
    ap.add_argument("--project", required=True, help="copick project of runs with halves")
    ap.add_argument("--out", required=True, help="the denoiser's weights (.pt)")
    ap.add_argument("--steps", type=at_least(1), default=N2NConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    args = expand_home(ap.parse_args(argv))
    project = CopickProject(args.project)
    runs = project.runs()
    pairs = [halves_of(project, r)[:2] for r in runs]
    cfg = N2NConfig(steps=args.steps, seed=args.seed)
    t0 = time.time()
    net = train_general_n2n(pairs, cfg, log=lambda m: print(m, flush=True))
    save_general(net, args.out, cfg, [f"{args.project}:{r}" for r in runs])
    print(f"trained on {len(runs)} runs' halves in {time.time() - t0:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
