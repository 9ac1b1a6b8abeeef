"""A second look at every candidate: what the dense tomogram holds around it, read by a small
classifier whose class probabilities replace the vote masses as scores.

    candidates (every class's clusters, one per voxel) ──► radial profiles of the dense
    feature channels around each + the network's score of each class nearby + its
    per-voxel probabilities in shells around it ──► MLPs (averaged) ──►
    p(class | candidate) ──► per class: NMS, scores p

Why: the sparse network sees 2.5 % of the voxels; under blur and high B-factors a
beta-galactosidase's kept voxels look like a thyroglobulin's or like background, while the
full density around the cluster still tells them apart by size and mass (bench/visibility.py:
a matched radial template sees them where the network does not). The profiles are shell
means (and the first two channels' shell spreads) out to R_MAX_VOX voxels: rotation
invariant by construction, so the classifier cannot learn our particles' orientations, and
cheap (one gather per candidate). The network's own probabilities around a candidate say
whether a cluster's voxels agree on a class, which its vote mass sums away. Fitted by
`python -m sparse_det.rescore` on annotated runs the network's checkpoint did not tune on
(the fitting lives in sparse_det/rescore_fit.py; this module is what inference reads);
it travels in the checkpoint (extra["rescorer"]), and `sparse_det.tune` then fits
thresholds and calibration on its scores.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from data_tools.coords import xyz_A_to_zyx_vox
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError, ParticleTable
from sparse_det.calibration import apply_calibration
from sparse_det.config import PROFILE_CHANNELS
from sparse_det.metric import DISTANCE_MULTIPLIER
from sparse_det.postprocess import nms
from sparse_det.rescore_profiles import (
    PROB_SHELLS_VOX,
    R_MAX_VOX,
    SPREAD_CHANNELS,
    probability_shells,
    radial_profiles,
)
from sparse_det.structures import Detections

CHANNEL_CLIP = 6.0  # robust sigmas: a gold bead must not dominate a shell mean
SCORE_EPS = 1e-4  # ln(p + SCORE_EPS): a class with no cluster nearby reads as ln(1e-4)
SCORE_FLOOR = 1e-4  # candidates: clusters the network's calibration puts at p >= this
MAX_PER_CLASS = 600  # at most the heaviest clusters of each class


def nearby_scores(dets: Detections, particles: ParticleTable, xyz_A: np.ndarray) -> np.ndarray:
    """[M, K]: per class, the highest score of that class's clusters within its hit radius
    of each point (0 where none)."""
    out = np.zeros((len(xyz_A), len(particles)), np.float32)
    for k, p in enumerate(particles):
        c, s = dets[p.name]
        if len(c) == 0 or len(xyz_A) == 0:
            continue
        for i, near in enumerate(cKDTree(c).query_ball_point(xyz_A, p.radius_A
                                                             * DISTANCE_MULTIPLIER)):
            if near:
                out[i, k] = s[near].max()
    return out


def candidates(dets: Detections, particles: ParticleTable, voxel_size_A: float,
               origin_A: float) -> np.ndarray:
    """[M,3] x,y,z Å: each class's clusters scored at least SCORE_FLOOR (at most
    MAX_PER_CLASS of them), one per voxel. `dets` calibrated."""
    pts = [dets[p.name][0][dets[p.name][1] >= SCORE_FLOOR][:MAX_PER_CLASS] for p in particles]
    xyz = np.concatenate(pts) if pts else np.zeros((0, 3))
    if len(xyz) == 0:
        return xyz.reshape(0, 3)
    vox = np.rint(xyz_A_to_zyx_vox(xyz, voxel_size_A, origin_A)).astype(np.int64)
    _, first = np.unique(vox, axis=0, return_index=True)
    return xyz[np.sort(first)]


def candidate_features(dets: Detections, channels: list, voxel_size_A: float,
                       origin_A: float, particles: ParticleTable, xyz_A: np.ndarray,
                       outputs: tuple | None = None) -> np.ndarray:
    """[M, F] float32 for points x,y,z Å: radial profiles, then ln(p + SCORE_EPS) and
    whether a cluster is near, per class, then (given the network's `outputs`: kept voxels
    coords_zyx and their probabilities [N, K+1]) probability_shells. `dets` unthresholded,
    calibrated. The channels and probabilities: numpy, or tensors on the device that made
    them, where the gathers run; only the [M, F] features leave it."""
    zyx = xyz_A_to_zyx_vox(xyz_A, voxel_size_A, origin_A)
    scores = nearby_scores(dets, particles, xyz_A)
    parts = [radial_profiles(channels, zyx, clip=CHANNEL_CLIP), np.log(scores + SCORE_EPS),
             (scores > 0).astype(np.float32)]
    if outputs is not None:
        parts.append(probability_shells(outputs[0], outputs[1], zyx))
    return np.concatenate(parts, axis=1).astype(np.float32)


def n_features(n_classes: int, r_max: int = R_MAX_VOX, prob_shells: int = 0) -> int:
    """Features of a rescorer of `n_classes` that reads `prob_shells` probability shells."""
    return ((PROFILE_CHANNELS + SPREAD_CHANNELS) * (r_max + 1) + 2 * n_classes
            + prob_shells * (n_classes + 2))


def _mlp(n_in: int, hidden: int, n_out: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_out))


class RescoreNet(torch.nn.Module):
    """Standardised features → p(background, each of the K classes): the mean of its
    members' softmaxes (MLPs fitted alike from different seeds; one costs ~0.1 ms per 1000
    candidates, the features are shared). `calibration`: the network's score calibration it
    was fitted with (calibration.apply_calibration), kept with it so that re-tuning the
    checkpoint's own cannot move its inputs. `network_classes`: classes whose detections
    keep the network's own (calibrated) scores instead of the MLPs' — where the MLPs, fitted
    on the simulator's particle models, read a class's particles no fit drew worse than the
    network does."""

    def __init__(self, n_in: int, n_classes: int, hidden: int = 128,
                 calibration: dict[str, list[float]] | None = None,
                 prob_shells: tuple = (), members: int = 1,
                 network_classes: tuple[str, ...] = ()):
        super().__init__()
        self.calibration = {k: [float(a), float(b)] for k, (a, b) in (calibration or {}).items()}
        self.network_classes = tuple(network_classes)
        # The network-output shells it reads (PROB_SHELLS_VOX, or none: fitted before them).
        self.prob_shells = tuple((float(a), float(b)) for a, b in prob_shells)
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.hidden, self.n_classes = hidden, n_classes
        self.members = torch.nn.ModuleList()
        for _ in range(members):
            self.add_member()

    def add_member(self) -> int:
        """Appends an MLP with fresh weights (from torch's current seed); its index."""
        self.members.append(_mlp(int(self.mean.numel()), self.hidden, self.n_classes + 1))
        return len(self.members) - 1

    def forward(self, x: torch.Tensor, member: int = 0) -> torch.Tensor:
        """One member's logits."""
        return self.members[member]((x - self.mean) / self.std)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=torch.float32)
            p = sum(torch.softmax(self(xt, m), 1) for m in range(len(self.members)))
            return (p / len(self.members)).numpy()

    def to_state(self) -> dict:
        return {"n_in": int(self.mean.numel()), "n_classes": self.n_classes,
                "hidden": self.hidden, "r_max_vox": R_MAX_VOX,
                "calibration": self.calibration,
                "prob_shells_vox": [list(s) for s in self.prob_shells],
                "members": len(self.members),
                "network_classes": list(self.network_classes),
                "weights": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict, what: str) -> RescoreNet:
        """Raises DataError naming `what` when the state is not one this code reads."""
        n_in, k = int(state.get("n_in", -1)), int(state.get("n_classes", -1))
        shells = tuple(tuple(s) for s in state.get("prob_shells_vox", ()))
        if shells and shells != PROB_SHELLS_VOX:
            raise DataError(f"{what}: its rescorer reads the network's outputs in shells "
                            f"{shells} voxels; this code makes {PROB_SHELLS_VOX}")
        expect = n_features(k, prob_shells=len(shells))
        if state.get("r_max_vox") != R_MAX_VOX or n_in != expect:
            raise DataError(f"{what}: its rescorer reads {n_in} features out to "
                            f"{state.get('r_max_vox')} voxels; this code makes "
                            f"{expect} out to {R_MAX_VOX}")
        weights = state["weights"]
        if "members" not in state:  # the first rescorer: one MLP, stored as "mlp"
            weights = {k.replace("mlp.", "members.0.", 1): v for k, v in weights.items()}
        net = cls(n_in, k, int(state["hidden"]), state.get("calibration"), shells,
                  int(state.get("members", 1)), tuple(state.get("network_classes", ())))
        try:
            net.load_state_dict(weights)
        except RuntimeError as exc:
            raise DataError(f"{what}: rescorer weights do not fit ({str(exc)[:200]})") from exc
        return net.eval()


def rescore(dets: Detections, net: RescoreNet, channels: list,
            voxel_size_A: float, origin_A: float, particles: ParticleTable,
            outputs: tuple | None = None) -> Detections:
    """Unthresholded vote-mass detections → detections scored p(class | candidate), every
    candidate a candidate of every class (per-class NMS at half a radius), best first; a
    class of `net.network_classes` keeps the network's detections at their calibrated
    vote-mass scores. `outputs`: the network's (kept coords_zyx, probabilities [N, K+1])
    the detections came from; required by a rescorer that reads them."""
    if net.prob_shells and outputs is None:
        raise ValueError("this rescorer reads the network's per-voxel probabilities: pass "
                         "`outputs`")
    dets = apply_calibration(dets, net.calibration)
    xyz = candidates(dets, particles, voxel_size_A, origin_A)
    feats = candidate_features(dets, channels, voxel_size_A, origin_A, particles, xyz,
                               outputs if net.prob_shells else None)
    probs = (net.probabilities(feats) if len(xyz)
             else np.zeros((0, len(particles) + 1), np.float32))
    per_class = {}
    for k, p in enumerate(particles):
        if p.name in net.network_classes:
            per_class[p.name] = dets[p.name]
            continue
        s = probs[:, k + 1]
        order = np.argsort(-s, kind="stable")
        c, s = xyz[order], s[order]
        kept = nms(c, s, 0.5 * p.radius_A)
        per_class[p.name] = (c[kept], s[kept])
    return Detections(dets.run, per_class, dets.confidence, dets.class_confidence)


def dense_channels(project: CopickProject, run: str, cfg) -> tuple[list[np.ndarray], float, float]:
    """The checkpoint's first PROFILE_CHANNELS feature volumes of a run, dense (protein
    positive, robust unit scale; the profiles clip them at CHANNEL_CLIP), with the voxel
    size and origin (Å)."""
    from data_tools.sparsify import read_input

    tomo, _ = read_input(project, run, cfg)
    return channels_of(tomo.data, tomo.voxel_size_A, cfg, run), tomo.voxel_size_A, tomo.origin_A


def kept_channels(sv) -> list[np.ndarray]:
    """dense_channels from the volumes the sparsifier kept with a SparseVolume."""
    if sv.dense is None or len(sv.dense) < PROFILE_CHANNELS:
        raise ValueError(f"run {sv.run!r}: sparsified without its dense channels")
    return list(sv.dense[:PROFILE_CHANNELS])


def channels_for(sv, project: CopickProject, run: str, cfg
                 ) -> tuple[list[np.ndarray], float, float]:
    """(channels, voxel size Å, origin Å) for a run's sparse volume: the sparsifier's own
    where it kept them, else the tomogram read and filtered again (a shard's)."""
    if sv.dense is not None:
        return kept_channels(sv), sv.voxel_size_A, sv.origin_A
    return dense_channels(project, run, cfg)


def channels_of(vol: np.ndarray, voxel_size_A: float, cfg, run: str) -> list[np.ndarray]:
    """dense_channels of a tomogram already on the working grid."""
    from data_tools.blank import without_blank
    from data_tools.features import feature_volumes
    from data_tools.sparsify import held
    from data_tools.zarr_levels import non_finite_count

    if non_finite_count(vol):
        raise DataError(f"run {run!r}: tomogram has NaN/inf voxels")
    vol = without_blank(vol, f"run {run!r}", cfg.flatten, voxel_size_A)[0]
    return held(feature_volumes(vol, cfg, voxel_size_A, f"run {run!r}")[0][:PROFILE_CHANNELS])


if __name__ == "__main__":  # `python -m sparse_det.rescore`: the fitting command
    from sparse_det.rescore_fit import main

    raise SystemExit(main())
