"""A cryoCARE-like denoiser (Noise2Noise; Buchholz et al. 2019): a small 3-D U-Net trained on
one tomogram's two frame-split half reconstructions to predict each from the other, then
applied to both and averaged. Many labs' `denoised` tomograms are made this way (cryoCARE
and its kin); the simulator writes the halves (TiltRanges.halves) so that the picker can be
judged on such tomograms (bench/denoisers.py --denoisers n2n).

The halves carry the same signal and independent noise, so the network's least-squares
prediction of one from the other is the signal's conditional mean: a denoiser learnt from
the tomogram itself, with no clean target. Used at benchmark time only; the picker never
runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


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
    if min(even.shape) < cfg.patch_vox:
        raise ValueError(f"halves {even.shape} smaller than a {cfg.patch_vox}³ patch")
    mean = float((even.mean() + odd.mean()) / 2)
    std = float(np.sqrt((even.var() + odd.var()) / 2)) or 1.0
    pair = ((even - mean) / std, (odd - mean) / std)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = UNet3d(cfg.channels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        x, y = (torch.from_numpy(a).to(device) for a in _patches(pair, cfg, rng))
        loss = nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None and (step + 1) % 100 == 0:
            log(f"n2n step {step + 1}/{cfg.steps}: loss {loss.item():.4f}")
    return net.eval(), mean, std


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
