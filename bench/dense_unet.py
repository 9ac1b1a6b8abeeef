"""The dense baseline of the competition winners' kind, in plain torch: a 3-D U-Net on 2×
binned (20 Å) tomograms predicting one centre heatmap per class (CenterNet-style Gaussians,
penalty-reduced focal loss), max-pool NMS at 0.5·radius, per-class thresholds tuned for F4 on
the validation runs. Used only by bench/run.py; nothing in the library depends on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_tools.coords import xyz_A_to_zyx_vox, zyx_vox_to_xyz_A
from data_tools.copick_io import CopickProject
from data_tools.features import robust_normalise
from data_tools.particles import ParticleTable

SCALE = 1  # multiscale level 1: 2× binned, the sparse detector's working resolution
CLIP_SIGMA = 6.0


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out),
                         nn.ReLU(inplace=True), nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class DenseUNet(nn.Module):
    """Encoder-decoder with skip connections; input spatial sizes divisible by 2^(levels-1)."""

    def __init__(self, num_classes: int, channels=(16, 32, 64)):
        super().__init__()
        c = list(channels)
        self.enc = nn.ModuleList([block(1, c[0])] + [block(c[i - 1], c[i])
                                                     for i in range(1, len(c))])
        self.up = nn.ModuleList([nn.ConvTranspose3d(c[i], c[i - 1], 2, stride=2)
                                 for i in range(len(c) - 1, 0, -1)])
        self.dec = nn.ModuleList([block(2 * c[i - 1], c[i - 1]) for i in range(len(c) - 1, 0, -1)])
        self.head = nn.Conv3d(c[0], num_classes, 1)
        nn.init.constant_(self.head.bias, -4.0)  # heatmaps start near 0 (CenterNet's prior)
        self.levels = len(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1]), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.ge(0.999).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p ** alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


@dataclass
class DenseRun:
    run: str
    vol: np.ndarray  # normalised, protein bright, clipped; (z, y, x) at 20 Å
    voxel_size_A: float
    origin_A: float
    heat: np.ndarray | None  # [K, z, y, x] float16 targets (None unless asked for)
    centers: list[np.ndarray]  # per class, centres in working voxels
    truth_xyz_A: dict[str, np.ndarray]


def load_dense_run(project: CopickProject, run: str, with_targets: bool = True) -> DenseRun:
    t = project.read_tomogram(run, scale=SCALE)
    x = -robust_normalise(t.data, f"run {run!r}")
    np.clip(x, -CLIP_SIGMA, CLIP_SIGMA, out=x)
    truth = project.read_picks(run)
    centers = [xyz_A_to_zyx_vox(truth.get(p.name, np.zeros((0, 3))), t.voxel_size_A, t.origin_A)
               for p in project.particles]
    heat = (heatmaps(x.shape, centers, project.particles, t.voxel_size_A)
            if with_targets else None)
    return DenseRun(run, x, t.voxel_size_A, t.origin_A, heat, centers, truth)


def heatmaps(shape, centers: list[np.ndarray], particles: ParticleTable,
             voxel_size_A: float) -> np.ndarray:
    """Per class, max over particles of a Gaussian (σ = 0.25·radius) peaking at 1 on the
    voxel nearest each centre."""
    out = np.zeros((len(particles), *shape), np.float32)
    for k, (p, cs) in enumerate(zip(particles, centers, strict=True)):
        sigma = max(1.0, 0.25 * p.radius_A / voxel_size_A)
        r = math.ceil(3 * sigma)
        for c in cs:
            ci = np.round(c).astype(int)
            lo = np.maximum(ci - r, 0)
            hi = np.minimum(ci + r + 1, shape)
            if np.any(lo >= hi):
                continue
            grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)],
                                indexing="ij")
            d2 = sum((g - cc) ** 2 for g, cc in zip(grids, ci, strict=True))
            sl = (k, *[slice(a, b) for a, b in zip(lo, hi, strict=True)])
            np.maximum(out[sl], np.exp(-d2 / (2 * sigma**2)), out=out[sl])
    return out.astype(np.float16)


class PatchSampler:
    """Random patches, most centred near a particle of a uniformly drawn class; x/y/z flips."""

    def __init__(self, runs: list[DenseRun], patch_zyx=(32, 96, 96), focus: float = 0.8,
                 seed: int = 0):
        self.runs, self.patch, self.focus = runs, np.asarray(patch_zyx), focus
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.runs[self.rng.integers(len(self.runs))]
        shape = np.asarray(r.vol.shape)
        classes = [k for k, c in enumerate(r.centers) if len(c)]
        if classes and self.rng.random() < self.focus:
            k = self.rng.choice(classes)
            c = r.centers[k][self.rng.integers(len(r.centers[k]))]
            centre = c + self.rng.uniform(-0.3, 0.3, 3) * self.patch
        else:
            centre = self.rng.uniform(0, 1, 3) * shape
        o = np.clip(np.round(centre - self.patch / 2), 0, shape - self.patch).astype(int)
        sl = tuple(slice(a, a + s) for a, s in zip(o, self.patch, strict=True))
        x, y = r.vol[sl], r.heat[(slice(None), *sl)].astype(np.float32)
        for ax in range(3):
            if self.rng.random() < 0.5:
                x, y = np.flip(x, ax), np.flip(y, ax + 1)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.sample() for _ in range(n)]
        return (torch.from_numpy(np.stack([i[0] for i in items]))[:, None],
                torch.from_numpy(np.stack([i[1] for i in items])))


@torch.no_grad()
def predict_heatmap(model: DenseUNet, vol: np.ndarray, device: torch.device,
                    tile_zyx=(96, 320, 320), overlap: int = 16,
                    as_tensor: bool = False) -> np.ndarray | torch.Tensor:
    """Sigmoid heatmaps [K, z, y, x] by overlapping tiles (each tile's border discarded). The
    default tile holds a whole 2×-binned competition tomogram (92×315×315) in one pass: tiling
    it 64×160×160 cost 3× the voxels in overlap (75 s against 40 s on 2 cores). `as_tensor`
    keeps the result on the device for heatmap_peaks (on a GPU the copy back and CPU pooling
    took 20 of 21 s)."""
    model.eval()
    mult = 2 ** (model.levels - 1)
    shape = np.array(vol.shape)
    tile = np.minimum(np.array(tile_zyx), ((shape + mult - 1) // mult) * mult)
    out = torch.zeros((model.head.out_channels, *vol.shape), dtype=torch.float32, device=device)
    step = np.maximum(tile - 2 * overlap, 1)
    starts = [sorted({*range(0, max(s - t, 0) + 1, st), max(s - t, 0)})
              for s, t, st in zip(shape, tile, step, strict=True)]
    for z0 in starts[0]:
        for y0 in starts[1]:
            for x0 in starts[2]:
                o = np.array([z0, y0, x0])
                sl = tuple(slice(a, a + t) for a, t in zip(o, tile, strict=True))
                x = vol[sl]
                pad = [(0, int(t - s)) for t, s in zip(tile, x.shape, strict=True)]
                x = np.pad(x, pad, mode="reflect") if any(p[1] for p in pad) else x
                h = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x))[None, None]
                                        .to(device)))[0].float()
                # Keep the tile's centre, plus its outer border where it meets the volume edge.
                keep_lo = np.where(o == 0, 0, overlap)
                keep_hi = np.minimum(tile, shape - o) - np.where(o + tile >= shape, 0, overlap)
                src = (slice(None), *[slice(a, b) for a, b in zip(keep_lo, keep_hi, strict=True)])
                dst = (slice(None), *[slice(a + lo, a + hi) for a, lo, hi in
                                      zip(o, keep_lo, keep_hi, strict=True)])
                out[dst] = h[src]
    model.train()
    return out if as_tensor else out.cpu().numpy()


def heatmap_peaks(heat: np.ndarray | torch.Tensor, particles: ParticleTable,
                  voxel_size_A: float, origin_A: float, floor: float = 0.05
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Max-pool NMS with a window of 0.5·radius per class (on heat's device); peaks above
    `floor`, in Å."""
    heat = torch.as_tensor(heat)
    out = {}
    for k, p in enumerate(particles):
        h = heat[k][None, None]
        w = max(1, round(0.5 * p.radius_A / voxel_size_A))
        # A box maximum is separable: three 1-D passes instead of one (2w+1)³ window (on
        # 16 CPU cores the cubic window took ~30 of the 33 s per tomogram).
        k = 2 * w + 1
        mx = F.max_pool3d(h, (k, 1, 1), stride=1, padding=(w, 0, 0))
        mx = F.max_pool3d(mx, (1, k, 1), stride=1, padding=(0, w, 0))
        mx = F.max_pool3d(mx, (1, 1, k), stride=1, padding=(0, 0, w))
        peak = (h == mx) & (h > floor)
        idx = peak[0, 0].nonzero().cpu().numpy().astype(np.float64)
        scores = h[0, 0][peak[0, 0]].cpu().numpy().astype(np.float64)
        out[p.name] = (zyx_vox_to_xyz_A(idx, voxel_size_A, origin_A), scores)
    return out


def detect_dense(model: DenseUNet, project: CopickProject, run: str, device: torch.device,
                 floor: float = 0.05) -> tuple[DenseRun, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A run from zarr to unthresholded peaks per particle (Å), the heatmap kept on `device`."""
    r = load_dense_run(project, run, with_targets=False)
    heat = predict_heatmap(model, r.vol, device, as_tensor=True)
    return r, heatmap_peaks(heat, project.particles, r.voxel_size_A, r.origin_A, floor)


def train_dense(model: DenseUNet, runs: list[DenseRun], budget_s: float, device: torch.device,
                batch_size: int = 2, lr: float = 2e-3, patch_zyx=(32, 96, 96), seed: int = 0,
                log=print) -> dict:
    """AdamW with cosine decay over the wall-clock budget (the step count is unknown ahead)."""
    torch.manual_seed(seed)
    sampler = PatchSampler(runs, patch_zyx, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    t0, step, losses = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - t0) < budget_s:
        frac = elapsed / budget_s
        for g in opt.param_groups:
            g["lr"] = lr * (min(1.0, (step + 1) / 50) * (0.02 + 0.98 * 0.5 *
                                                          (1 + math.cos(math.pi * frac))))
        x, y = sampler.batch(batch_size)
        loss = focal_heatmap_loss(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 100 == 0:
            log(f"dense step {step} ({elapsed:.0f} s): loss {np.mean(losses[-100:]):.3f}")
    return {"steps": step, "train_s": time.perf_counter() - t0,
            "final_loss": float(np.mean(losses[-50:])) if losses else float("nan")}
