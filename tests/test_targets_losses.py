"""Targets on a hand-made case; losses frozen at a fixed seed."""

import numpy as np
import pytest
import torch

from sparse_det.losses import detection_losses
from sparse_det.targets import make_targets, particle_fractions


def test_targets_hand_made():
    coords = np.array([[0, 0, 0], [0, 0, 2], [0, 0, 5], [0, 0, 9], [0, 0, 20]], np.int32)
    centers = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 8.0]])
    classes = np.array([2, 5])
    radii = np.array([2.0, 4.0])
    labels, offsets = make_targets(coords, centers, classes, radii, radius_fraction=1.0)
    # x=0: 1 from A (1/2 of its radius) → A. x=2: 1 from A (0.5) vs 6 from B (1.5) → A.
    # x=5: 4 from A (2.0, out) vs 3 from B (0.75) → B. x=9: B. x=20: background.
    assert labels.tolist() == [2, 2, 5, 5, 0], f"labels {labels}"
    np.testing.assert_allclose(offsets[:, 2], [1, -1, 3, -1, 0], err_msg="x offsets")
    np.testing.assert_allclose(offsets[:, :2], 0, err_msg="z,y offsets")
    labels, _ = make_targets(coords, centers, classes, radii, radius_fraction=0.5)
    assert labels.tolist() == [2, 2, 0, 5, 0], f"half-radius labels {labels}"


def test_targets_per_particle_fractions():
    """Each particle's own share of its radius: A (class 2) at 1.5, B (class 5) at 0.5."""
    coords = np.array([[0, 0, 4], [0, 0, 10], [0, 0, 13]], np.int32)
    centers = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 16.0]])
    classes = np.array([2, 5])
    radii = np.array([2.5, 4.0])
    fractions = particle_fractions(classes, 1.0, {2: 1.5, 5: 0.5})
    assert fractions.tolist() == [1.5, 0.5]
    # x=4: 3 from A, inside 1.5 × 2.5 (out at 1.0). x=10: 6 from B, outside 0.5 × 4 and
    # 1.0 × 4. x=13: 3 from B, inside 1.0 × 4, outside 0.5 × 4.
    labels, offsets = make_targets(coords, centers, classes, radii, radius_fraction=fractions)
    assert labels.tolist() == [2, 0, 0], f"per-particle labels {labels}"
    np.testing.assert_allclose(offsets[:, 2], [-3, 0, 0])
    labels, _ = make_targets(coords, centers, classes, radii, radius_fraction=1.0)
    assert labels.tolist() == [0, 0, 5], f"one fraction for all {labels}"
    assert particle_fractions(classes, 0.8, {}).tolist() == [0.8, 0.8]
    with pytest.raises(ValueError, match="class 5: radius fraction 0"):
        particle_fractions(classes, 1.0, {5: 0.0})


def test_targets_overlap_goes_to_nearest_in_radius_units():
    coords = np.array([[0, 0, 4]], np.int32)
    centers = np.array([[0.0, 0, 0], [0.0, 0, 10]])
    # 4 from a radius-5 particle (0.8) vs 6 from a radius-10 particle (0.6): the second wins.
    labels, offsets = make_targets(coords, centers, np.array([1, 3]), np.array([5.0, 10.0]))
    assert labels.tolist() == [3] and offsets[0, 2] == 6, f"{labels} {offsets}"


def _numpy_losses(logits, offsets, labels, targets, background_weight, gamma):
    """Focal cross-entropy (class-weighted mean) and smooth-L1 offsets, written out from
    their definitions with numpy, independently of sparse_det.losses."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    lp = logp[np.arange(len(labels)), labels]
    w = np.where(labels == 0, background_weight, 1.0)
    focal = (1 - np.exp(lp)) ** gamma
    loss_cls = -(w * focal * lp).sum() / w.sum()
    fg = labels > 0
    d = np.abs(offsets[fg] - targets[fg])
    loss_off = np.where(d < 1.0, 0.5 * d**2, d - 0.5).mean()  # smooth L1, beta 1
    return loss_cls, loss_off


def test_losses_frozen_at_fixed_seed():
    """Frozen values at a fixed seed, and the same numbers from the numpy derivation."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g)
    offsets = torch.randn(50, 3, generator=g)
    labels = torch.randint(0, 7, (50,), generator=g)
    labels[:20] = 0
    targets = torch.randn(50, 3, generator=g)
    out = detection_losses(logits, offsets, labels, targets, background_weight=0.25,
                           focal_gamma=1.0, offset_weight=1.0)
    assert set(out) == {"loss", "loss_cls", "loss_offset"}, out.keys()
    assert out["loss_cls"].item() == pytest.approx(2.1917155, abs=1e-5), out["loss_cls"].item()
    assert out["loss_offset"].item() == pytest.approx(0.6907556, abs=1e-5), out
    assert out["loss"].item() == pytest.approx(out["loss_cls"].item()
                                               + out["loss_offset"].item(), abs=1e-6)
    cls_np, off_np = _numpy_losses(logits.double().numpy(), offsets.double().numpy(),
                                   labels.numpy(), targets.double().numpy(), 0.25, 1.0)
    assert out["loss_cls"].item() == pytest.approx(cls_np, abs=1e-5), (out, cls_np)
    assert out["loss_offset"].item() == pytest.approx(off_np, abs=1e-5), (out, off_np)
    gamma2 = detection_losses(logits, offsets, labels, targets, background_weight=0.5,
                              focal_gamma=2.0, offset_weight=3.0)
    cls_np, off_np = _numpy_losses(logits.double().numpy(), offsets.double().numpy(),
                                   labels.numpy(), targets.double().numpy(), 0.5, 2.0)
    assert gamma2["loss_cls"].item() == pytest.approx(cls_np, abs=1e-5), "focal gamma 2"
    assert gamma2["loss_offset"].item() == pytest.approx(3.0 * off_np, abs=1e-5), \
        "offset weight"


def test_losses_without_foreground_keep_graph():
    logits = torch.zeros(4, 7, requires_grad=True)
    off = torch.zeros(4, 3, requires_grad=True)
    out = detection_losses(logits, off, torch.zeros(4, dtype=torch.long), torch.zeros(4, 3),
                           background_weight=0.25, focal_gamma=1.0, offset_weight=1.0)
    out["loss"].backward()
    assert off.grad is not None and out["loss_offset"].item() == 0.0
    assert out["loss_cls"].item() == pytest.approx((6 / 7) * np.log(7), rel=1e-5), out


def test_class_weights_hand_computed():
    """Three voxels (background, class 1, class 3), focal off: the class loss is the
    weighted mean of -log p(true) with weights (background, 1, per-class)."""
    from data_tools.particles import COMPETITION_PARTICLES, ParticleTable
    from sparse_det.losses import label_weights

    table = ParticleTable(COMPETITION_PARTICLES)
    lw = label_weights(table, background_weight=0.5,
                       class_weights={table.names[2]: 3.0})
    assert lw.tolist() == [0.5, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0], lw
    logits = torch.tensor([[2.0, 0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0, 0],
                           [0, 0, 0, 0.5, 0, 0, 0]])
    labels = torch.tensor([0, 1, 3])
    nll = [-(torch.log_softmax(logits[i], 0)[labels[i]]).item() for i in range(3)]
    expected = (0.5 * nll[0] + 1.0 * nll[1] + 3.0 * nll[2]) / 4.5
    out = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                           background_weight=0.25, focal_gamma=0.0, offset_weight=1.0,
                           label_weight=lw)
    assert out["loss_cls"].item() == pytest.approx(expected, rel=1e-6), (out, expected)
    # without class weights the table reproduces background_weight alone
    plain = label_weights(table, background_weight=0.25, class_weights={})
    a = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                         background_weight=0.25, focal_gamma=1.0, offset_weight=1.0)
    b = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                         background_weight=9.0, focal_gamma=1.0, offset_weight=1.0,
                         label_weight=plain)
    assert a["loss_cls"].item() == pytest.approx(b["loss_cls"].item(), rel=1e-6)


@pytest.mark.parametrize("weights, needle", [({"ribosme": 2.0}, "unknown particle"),
                                             ({"ribosome": 0}, "positive"),
                                             ({"ribosome": "2"}, "positive")])
def test_class_weights_bad_config_named(weights, needle):
    from data_tools.particles import COMPETITION_PARTICLES, ParticleTable
    from sparse_det.config import ConfigError
    from sparse_det.losses import label_weights

    with pytest.raises(ConfigError, match=needle):
        label_weights(ParticleTable(COMPETITION_PARTICLES), background_weight=0.25,
                      class_weights=weights)


def test_partial_label_loss_hand_case():
    """A background voxel of a run that does not annotate class 2 is background or class 2:
    its term is −log(p0 + p2). A labelled voxel, or a run annotated in full, keeps plain
    cross-entropy."""
    logits = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0], [0.5, 2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    p = torch.softmax(logits, 1)
    unknown = torch.tensor([0b100, 0, 0b100])  # bit 2 on the first and the labelled voxel
    kw = dict(background_weight=1.0, focal_gamma=0.0, offset_weight=0.0)
    out = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                           unknown_bits=unknown, **kw)
    expected = -(torch.log(p[0, 0] + p[0, 2]) + torch.log(p[1, 0]) + torch.log(p[2, 1])) / 3
    assert out["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-6)
    plain = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3), **kw)
    none = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                            unknown_bits=torch.zeros(3, dtype=torch.long), **kw)
    assert none["loss_cls"].item() == pytest.approx(plain["loss_cls"].item(), rel=1e-6)
    # the voxel the network reads as class 2 is not pushed towards background
    logits = logits.clone().requires_grad_(True)
    detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                     unknown_bits=unknown, **kw)["loss"].backward()
    g = logits.grad[0]
    assert g[2] < 0 and g[0] < 0 and g[1] > 0, g  # descent raises p0 and p2, lowers p1


def test_partly_picked_term_hand_case():
    """Class 2 picked in part in a run (bit PARTLY_SHIFT + 2), a share s of its copies
    unpicked: a background voxel's term is −log(p0 + s·p2); with class 1 also unannotated
    there (bit 1), −log(p0 + p1 + s·p2). At s = 1 it is the unannotated term; below 1 a
    voxel read as class 2 is pushed towards background, and less so than by plain
    cross-entropy."""
    from sparse_det.losses import PARTLY_SHIFT

    logits = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0], [0.5, 2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    p = torch.softmax(logits, 1)
    partly = 1 << (PARTLY_SHIFT + 2)
    bits = torch.tensor([partly, partly | 0b10, partly])
    kw = dict(background_weight=1.0, focal_gamma=0.0, offset_weight=0.0)
    out = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                           unknown_bits=bits, unpicked_share=0.5, **kw)
    expected = -(torch.log(p[0, 0] + 0.5 * p[0, 2]) + torch.log(p[1, 0] + p[1, 1] + 0.5 * p[1, 2])
                 + torch.log(p[2, 1])) / 3
    assert out["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-6)
    at_one = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                              unknown_bits=bits, unpicked_share=1.0, **kw)
    as_unannotated = detection_losses(logits, torch.zeros(3, 3), labels, torch.zeros(3, 3),
                                      unknown_bits=torch.tensor([0b100, 0b110, 0b100]), **kw)
    assert at_one["loss_cls"].item() == pytest.approx(as_unannotated["loss_cls"].item(),
                                                      rel=1e-6)
    # a background voxel read as class 2 (class 1 out of the picture): at s = 1 nothing
    # moves it; at s = 0.5 descent lowers its class-2 logit, plain cross-entropy more
    one = torch.tensor([[0.0, -10.0, 3.0]])
    grads = []
    for share in (1.0, 0.5, None):
        x = one.clone().requires_grad_(True)
        detection_losses(x, torch.zeros(1, 3), torch.tensor([0]), torch.zeros(1, 3),
                         unknown_bits=None if share is None else torch.tensor([partly]),
                         unpicked_share=share or 1.0, **kw)["loss"].backward()
        grads.append(float(x.grad[0, 2]))
    assert abs(grads[0]) < 1e-4 and 0.02 < grads[1] < grads[2]


def test_unknown_bits_pack_both_kinds_and_refuse_only_what_cannot_fit():
    """Unannotated class k sets bit k, picked in part bit PARTLY_SHIFT + k; a table too
    large for the packing is refused only where a run needs it."""
    from data_tools.particles import ParticleTable, ParticleType
    from sparse_det.config import ConfigError
    from sparse_det.losses import PARTLY_SHIFT, unknown_bits_of

    table = ParticleTable([ParticleType(f"p{i}", 60.0, 1.0, i + 1) for i in range(3)])
    assert unknown_bits_of(table, ["p1"], ["p2"]) == (1 << 2) | (1 << (PARTLY_SHIFT + 3))
    big = ParticleTable([ParticleType(f"p{i}", 60.0, 1.0, i + 1) for i in range(31)])
    assert unknown_bits_of(big, [], []) == 0
    with pytest.raises(ConfigError, match="at most 30 particles"):
        unknown_bits_of(big, ["p0"], [])


def test_distill_loss_hand_case():
    """KL(teacher ‖ model) of two 3-class voxels, by hand; 0 where they agree; `classes`
    renormalises over the labels given; no voxels read 0 (a plain mean would be NaN)."""
    from sparse_det.losses import distill_loss

    student = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    teacher = torch.tensor([[np.log(2.0), 0.0, 0.0], [2.0, 0.0, 0.0]])
    q = np.array([0.5, 0.25, 0.25])  # softmax of the first teacher row
    kl0 = float(np.sum(q * np.log(q / (1 / 3))))
    assert distill_loss(student, teacher).item() == pytest.approx(kl0 / 2, rel=1e-5)
    assert distill_loss(student[:1], teacher[:1]).item() == pytest.approx(kl0, rel=1e-5)
    assert distill_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    # Over labels 0 and 1 alone (a third the teacher did not know): the model's [1/2, 1/2]
    # against the teacher's [2/3, 1/3], however high either puts label 2.
    kl01 = 2 / 3 * np.log(4 / 3) + 1 / 3 * np.log(2 / 3)
    assert distill_loss(student[:1], teacher[:1] + torch.tensor([0.0, 0.0, 9.0]),
                        classes=torch.tensor([0, 1])).item() == pytest.approx(kl01, rel=1e-5)
    empty = torch.zeros(0, 3, requires_grad=True)
    nothing = distill_loss(empty, teacher[:0])
    assert nothing.item() == 0.0
    nothing.backward()
    assert empty.grad is not None and empty.grad.shape == (0, 3)
