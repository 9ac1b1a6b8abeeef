"""The rescorer's fit-time profile jitter (sparse_det/profile_jitter.py: jitter_profiles)."""

from __future__ import annotations

import torch

from sparse_det.profile_jitter import draw_profile_jitter, jitter_profiles
from sparse_det.rescore import PROFILE_CHANNELS
from sparse_det.rescore_profiles import R_MAX_VOX, SPREAD_CHANNELS

ROWS, N_R = PROFILE_CHANNELS + SPREAD_CHANNELS, R_MAX_VOX + 1
N_OTHER = 7  # the network's scores and shells after the profiles


def _features(n: int = 3, edge: int = 10) -> torch.Tensor:
    """Each row a step: 1 inside `edge` shells, 0 beyond; then N_OTHER other features."""
    step = (torch.arange(N_R) < edge).double()
    prof = step.repeat(n, ROWS, 1)
    return torch.cat([prof.reshape(n, -1), torch.arange(n * N_OTHER).double().reshape(n, -1)], 1)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x[:, :ROWS * N_R].reshape(len(x), ROWS, N_R)


def test_neutral_draws_change_nothing():
    x = _features()
    n = len(x)
    same = jitter_profiles(x, torch.ones(n, dtype=x.dtype), torch.zeros(n, dtype=x.dtype),
                           torch.ones(n, PROFILE_CHANNELS, dtype=x.dtype))
    torch.testing.assert_close(same, x, msg="scale 1, no smoothing, gain 1 is the identity")


def test_a_larger_scale_moves_the_edge_in_and_gain_scales_the_means_only():
    """Read at r x 1.25 a step ending at shell 10 ends at shell 8; a gain of 2 doubles the
    channel means, not the spreads; the features after the profiles are untouched."""
    x = _features(n=1)
    gain = torch.full((1, PROFILE_CHANNELS), 2.0, dtype=x.dtype)
    out = jitter_profiles(x, torch.tensor([1.25], dtype=x.dtype), torch.zeros(1, dtype=x.dtype),
                          gain)
    rows = _rows(out)
    means, spreads = rows[0, :PROFILE_CHANNELS], rows[0, PROFILE_CHANNELS:]
    assert torch.all(means[:, :8] == 2.0) and torch.all(means[:, 8:] == 0.0), means
    assert torch.all(spreads[:, :8] == 1.0) and torch.all(spreads[:, 8:] == 0.0), spreads
    torch.testing.assert_close(out[:, ROWS * N_R:], x[:, ROWS * N_R:],
                               msg="the network's scores and shells are not profiles")


def test_full_smoothing_is_the_one_two_one_average():
    """At the step (shells 9 | 10: 1 | 0) the 1-2-1 average reads 0.75 and 0.25; the last
    shell repeats itself."""
    x = _features(n=1)
    out = _rows(jitter_profiles(x, torch.ones(1, dtype=x.dtype), torch.ones(1, dtype=x.dtype),
                                torch.ones(1, PROFILE_CHANNELS, dtype=x.dtype)))[0, 0]
    assert out[1] == 1.0 and out[8] == 1.0 and out[-1] == 0.0, out
    assert float(out[9]) == 0.75 and float(out[10]) == 0.25, out


def test_the_centre_shell_is_never_mixed():
    """Shell 0 is one voxel: its spread is 0 in every example (zero variance), so nothing
    may be smoothed into it, whatever the draw."""
    x = _features(n=50)  # as in real examples: the centre's spread 0, shell 1's not
    x[:, :ROWS * N_R].reshape(50, ROWS, N_R)[:, PROFILE_CHANNELS:, 0] = 0.0
    scale, smooth, gain = draw_profile_jitter(50, torch.Generator().manual_seed(1))
    assert torch.all(smooth > 0), "every draw smooths: shell 1 would be mixed in"
    out = _rows(jitter_profiles(x, scale, smooth, gain))
    torch.testing.assert_close(out[:, PROFILE_CHANNELS:, 0], torch.zeros(50, SPREAD_CHANNELS,
                                                                       dtype=x.dtype))
    torch.testing.assert_close(out[:, :PROFILE_CHANNELS, 0], gain.to(x.dtype),
                               msg="the centre's means (1) only take the gain")


def test_draws_are_deterministic_for_a_seed_and_in_range():
    a = draw_profile_jitter(1000, torch.Generator().manual_seed(3))
    b = draw_profile_jitter(1000, torch.Generator().manual_seed(3))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v), "the same seed draws the same jitter"
    scale, smooth, gain = a
    assert float(scale.min()) >= 0.9 and float(scale.max()) <= 1.1, "size within 10 %"
    assert float(smooth.min()) >= 0 and float(smooth.max()) <= 1
    assert gain.shape == (1000, PROFILE_CHANNELS) and float(gain.min()) > 0


def test_a_jittered_fit_still_tells_sizes_apart():
    """Two classes that differ only in size (a step ending at shell 4 or 10, noisy) and
    background (flat): fitted with the jitter, the MLPs still name each on clean profiles —
    the jitter blurs a model's exact profile, not a size twice as large."""
    from sparse_det.rescore_fit import fit

    gen = torch.Generator().manual_seed(0)
    n_other = 2 * 2  # ln score and presence per class, as candidate_features lays them out
    xs, ys = [], []
    for label, edge in ((0, 0), (1, 4), (2, 10)):
        step = (torch.arange(N_R) < edge).float().repeat(200, ROWS, 1)
        prof = step + 0.1 * torch.randn(step.shape, generator=gen)
        xs.append(torch.cat([prof.reshape(200, -1), torch.zeros(200, n_other)], 1))
        ys.append(torch.full((200,), label))
    net = fit(torch.cat(xs).numpy(), torch.cat(ys).numpy(), 2, epochs=15, prob_shells=(),
              profile_jitter=True)
    clean = torch.cat([(torch.arange(N_R) < e).float().repeat(1, ROWS, 1).reshape(1, -1)
                       for e in (0, 4, 10)])
    clean = torch.cat([clean, torch.zeros(3, n_other)], 1).numpy()
    assert list(net.probabilities(clean).argmax(1)) == [0, 1, 2], net.probabilities(clean)
