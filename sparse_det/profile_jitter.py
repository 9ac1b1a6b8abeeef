"""The rescorer's fit-time profile jitter (`rescore --profile-jitter`): each example's radial
profiles redrawn as another particle of its class could give them."""

from __future__ import annotations

import torch

from sparse_det.rescore import PROFILE_CHANNELS
from sparse_det.rescore_profiles import R_MAX_VOX, SPREAD_CHANNELS

# --profile-jitter: each example's radial profiles redrawn in every batch as another
# particle of its class could give them — the same complex a little larger or smaller than
# its table radius (the profile read at r x SCALE), its internal structure less sharp
# (mixed with a 1-2-1 smoothing along r) and more or less dense (each channel's means times
# a log-normal gain) — so that the MLPs learn sizes and masses rather than the exact
# profiles of the simulator's particle models (fitted without it, the default's rescorer
# costs F4 on shape families it never saw: docs/experiments.md).
PROFILE_SCALE = (0.9, 1.1)
PROFILE_GAIN_SIGMA = 0.15


def draw_profile_jitter(n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(scale [n], smoothing weight [n], gain [n, PROFILE_CHANNELS]) for n examples."""
    scale = torch.empty(n).uniform_(*PROFILE_SCALE, generator=gen)
    smooth = torch.rand(n, generator=gen)
    gain = torch.exp(PROFILE_GAIN_SIGMA * torch.randn(n, PROFILE_CHANNELS, generator=gen))
    return scale, smooth, gain


def jitter_profiles(x: torch.Tensor, scale: torch.Tensor, smooth: torch.Tensor,
                    gain: torch.Tensor) -> torch.Tensor:
    """Features [n, F] with their radial profiles (the first (PROFILE_CHANNELS +
    SPREAD_CHANNELS) x (R_MAX_VOX + 1) columns: per row, shells r = 0..R_MAX_VOX) read at
    r x scale (linear, the last shell beyond it), mixed with their 1-2-1 smoothing along r
    (shell 0, the centre voxel, kept) by `smooth`, the channel means times `gain`; the
    other features as they are."""
    rows, n_r = PROFILE_CHANNELS + SPREAD_CHANNELS, R_MAX_VOX + 1
    scale, smooth, gain = (t.to(x.dtype) for t in (scale, smooth, gain))
    prof = x[:, :rows * n_r].reshape(-1, rows, n_r)
    r = (torch.arange(n_r, dtype=x.dtype) * scale[:, None]).clamp(max=n_r - 1)
    lo = r.floor().long()
    hi, w = (lo + 1).clamp(max=n_r - 1), (r - lo)[:, None, :]
    prof = (prof.gather(2, lo[:, None, :].expand(-1, rows, -1)) * (1 - w)
            + prof.gather(2, hi[:, None, :].expand(-1, rows, -1)) * w)
    padded = torch.cat([prof[..., :1], prof, prof[..., -1:]], 2)
    smoothed = 0.25 * padded[..., :-2] + 0.5 * padded[..., 1:-1] + 0.25 * padded[..., 2:]
    # Shell 0 is the centre voxel alone: its spread is always 0 (a feature of zero variance,
    # which standardising would blow up from any value mixed in), and no shell lies within it.
    smoothed[..., 0] = prof[..., 0]
    prof = torch.lerp(prof, smoothed, smooth[:, None, None])
    prof = torch.cat([prof[:, :PROFILE_CHANNELS] * gain[:, :, None],
                      prof[:, PROFILE_CHANNELS:]], 1)
    return torch.cat([prof.reshape(len(x), -1), x[:, rows * n_r:]], 1)
