"""The kept share follows the protein the network sees: in crowded ice the fixed 2.5 % holds
mostly particle voxels, fewer of each particle than training showed, and their vote masses
fall under the thresholds. A run whose predicted foreground crowds the kept set is
sparsified again with more voxels; a typical run is left as it was. The gain is measured
with the checkpoint the rule was built for (the unwhitened one); the whitened default finds
more at the fixed share (72 of 75 where the unwhitened one found 53)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_tools.sim_ranges import SimRanges
from data_tools.simulate import simulate_project
from sparse_det.checkpoint import UNWHITENED_CHECKPOINT
from sparse_det.config import FOREGROUND_SLACK, PostprocessConfig
from sparse_det.inference import Picker, grown_keep_share
from sparse_det.structures import SparseVolume

TARGET = 0.27


def _volume(n_kept: int, shape=(10, 100, 100)) -> SparseVolume:
    coords = np.zeros((n_kept, 3), np.int32)
    return SparseVolume(coords, np.zeros((n_kept, 5), np.float32), shape, 20.0, "r",
                        "denoised", ["a", "b", "c", "d", "e"], {}, 0.0, {})


def _probs(n: int, foreground: float) -> torch.Tensor:
    probs = torch.zeros(n, 7)
    probs[:, 0] = 1.0
    probs[: round(n * foreground), 0] = 0.0
    probs[: round(n * foreground), 4] = 1.0
    return probs


def test_grown_share_hand_computed():
    sv = _volume(2500)  # 2.5 % of 100,000 voxels
    post = PostprocessConfig(keep_follow_foreground=TARGET, keep_growth_max=2.4)
    assert grown_keep_share(_probs(2500, 0.6), sv, post) == pytest.approx(0.025 * 0.6 / TARGET)
    assert grown_keep_share(_probs(2500, 0.9), sv, post) == pytest.approx(0.06)  # the cap
    just_under = FOREGROUND_SLACK * TARGET - 0.01
    assert grown_keep_share(_probs(2500, just_under), sv, post) is None  # a typical run
    off = PostprocessConfig(keep_follow_foreground=0.0)
    assert grown_keep_share(_probs(2500, 0.9), sv, off) is None


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    # Crowding 3: twice the training range's top; 64 slices of 10 Å, 1 s to simulate.
    return simulate_project(tmp_path_factory.mktemp("crowded") / "p", 1, 11, (64, 256, 256),
                            SimRanges(snr=(1.5, 2.0), crowding=(3.0, 3.0)), progress=False)


def _found(picker, dets, truth) -> tuple[int, int]:
    found = total = 0
    for p in picker.particles:
        if p.weight == 0:
            continue
        ref, got = truth[p.name], dets[p.name][0]
        total += len(ref)
        if len(ref) and len(got):
            d = np.linalg.norm(ref[:, None] - got[None], axis=2).min(axis=1)
            found += int((d < 0.5 * p.radius_A).sum())
    return found, total


def test_crowded_run_is_sparsified_again_and_finds_more(crowded):
    picker = Picker.load(UNWHITENED_CHECKPOINT, "cpu", tta="none")
    run = crowded.runs()[0]
    truth = crowded.read_picks(run)
    sv = picker.sparse(crowded, run)
    kept = len(sv) / np.prod(sv.shape_zyx)

    picker.ckpt.config.postprocess.keep_follow_foreground = 0.0
    fixed = _found(picker, picker.pick(picker.detect_run(crowded, run, sv=sv)), truth)

    picker.ckpt.config.postprocess.keep_follow_foreground = TARGET
    shares, sizes = [], []

    def resparsify(share):
        shares.append(share)
        sizes.append(len(again := picker.sparse(crowded, run, keep_fraction=share)))
        return again

    grown = _found(picker, picker.pick(picker.detect(sv, resparsify=resparsify)), truth)
    assert len(shares) == 1 and shares[0] > 1.5 * kept, (shares, kept)
    assert sizes[0] > 1.5 * len(sv)
    assert grown[1] >= 60, grown  # scored particles in 640 × 2,560 × 2,560 Å
    # Measured: 74 of 75 found, against 53 at the kept share sparsify set.
    assert grown[0] >= 0.9 * grown[1] and grown[0] >= fixed[0] + 10, (grown, fixed)


def test_adapt_counts_the_picks_infer_writes_on_a_crowded_run(crowded, tmp_path):
    """sparse_det.adapt's class-balance safeguard watches what infer writes: on a crowded
    run that is the larger kept set's picks, not the base set's its labels come from."""
    from sparse_det.adapt import pseudo_labels
    from sparse_det.stream import infer_project
    from sparse_det.writers import to_submission

    picker = Picker.load(UNWHITENED_CHECKPOINT, "cpu")
    assert picker.ckpt.config.postprocess.keep_follow_foreground > 0
    run = crowded.runs()[0]
    _, counts = pseudo_labels(picker, crowded, run, tmp_path / "shards")
    # adapt reads the network at fp32; infer's default may take bf16 products on this CPU
    written = to_submission(infer_project(crowded, UNWHITENED_CHECKPOINT, device="cpu",
                                          precision="fp32"))
    assert counts == {p.name: int((written.particle_type == p.name).sum())
                      for p in picker.particles}
    base_set = picker.pick(picker.detect(picker.sparse(crowded, run, tmp_path / "shards")))
    assert any(len(base_set[k][1]) != n for k, n in counts.items()), counts
