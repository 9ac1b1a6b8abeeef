"""The rescorer's examples: each annotated run's candidates described (sparse_det/rescore.py)
and labelled (the pick nearest within its hit radius, or background), also on copies of the
run with added noise, a median filter or the learnt denoiser after it, or the network's
appearance ranges, each copy drawn from the run's name; kept on disk as they are extracted
(sparse_det/rescore_cache.py). sparse_det/rescore_fit.py fits the MLPs on them.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
from scipy.spatial import cKDTree

from data_tools.copick_io import CopickProject
from data_tools.particles import ParticleTable
from sparse_det.metric import DISTANCE_MULTIPLIER
from sparse_det.rescore import (
    PROFILE_CHANNELS,
    candidate_features,
    candidates,
    kept_channels,
)
from sparse_det.rescore_cache import ExampleCache, truth_digest
from sparse_det.structures import Detections

log = logging.getLogger(__name__)

TRUTH_JITTER_VOX = 1.5  # extra training positives (--moved-picks): picks moved as far as
# clusters land
# --noise-copies: noise added to a run, nothing else changed (0.5-1.5 x the tomogram's own
# robust sigma, white to coloured, either polarity): the network's training runs seen at a
# lower SNR, the corner where its scores rank particles worst. Appearance copies with the
# network's whole training ranges (--appearance-variants) also reshape bands and gamma,
# and cost the tilt families more than they gave (docs/experiments.md).
NOISE_ONLY = {"band_gain": (1.0, 1.0), "blur_vox": (0.0, 0.0), "noise_rel": (0.5, 1.5),
              "noise_blur_vox": (0.0, 1.5), "gamma": (1.0, 1.0), "flip_probability": 0.5}
# --median-copies: the same noise, then a median filter (the cross or the 3³ cube at the
# working spacing), as an edge-preserving denoiser leaves a noisy reconstruction: the
# rescorer reads radial profiles of the dense tomogram, which such a filter reshapes.
# Measured with one copy: level with the default, on median-filtered runs too
# (docs/experiments.md, *Denoisers*), so the default fits none.
MEDIAN_AFTER_NOISE = NOISE_ONLY | {"median_probability": 1.0}


def learnt_after_noise(denoiser: str) -> dict:
    """--learnt-copies' ranges: the same noise, then the general Noise2Noise network at
    `denoiser` (data_tools/n2n.py), as cryoCARE or Topaz-Denoise leave a reconstruction:
    on learnt-denoised tomograms a rescorer fitted without them turned its lift into a loss
    (docs/experiments.md, *Half of the gap is the rescorer*). The default's since
    2026-12-04: one copy for half of the runs (--learnt-share 0.5; a third the day before),
    +0.044 on per-run n2n copies, a denoiser no fit drew (*The rescorer fitted with
    learnt-denoised copies*)."""
    return NOISE_ONLY | {"learnt_denoiser_probability": 1.0, "learnt_denoiser": denoiser}


def labels_for(xyz_A: np.ndarray, truth: dict[str, np.ndarray], particles: ParticleTable
               ) -> np.ndarray:
    """0 (background) or k + 1: the class of the pick nearest within its hit radius,
    nearest measured in radii."""
    best = np.full(len(xyz_A), np.inf)
    labels = np.zeros(len(xyz_A), np.int64)
    for k, p in enumerate(particles):
        t = truth.get(p.name)
        if t is None or len(t) == 0 or len(xyz_A) == 0:
            continue
        d, _ = cKDTree(t).query(xyz_A)
        rel = d / (p.radius_A * DISTANCE_MULTIPLIER)
        better = (rel <= 1.0) & (rel < best)
        best[better], labels[better] = rel[better], k + 1
    return labels


def _examples(dets: Detections, sv, outputs, truth: dict[str, np.ndarray],
              particles: ParticleTable, rng: np.random.Generator | None,
              unknown: list[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of one sparse volume's candidates (`outputs`: the network's, or
    None for a rescorer that does not read them); with `rng`, also of every pick moved by
    TRUTH_JITTER_VOX, so that the particles the network misses are examples too."""
    vs, origin = sv.voxel_size_A, sv.origin_A
    xyz = candidates(dets, particles, vs, origin)
    picks = [truth[p.name] for p in particles if len(truth.get(p.name, ()))]
    if picks and rng is not None:
        moved = np.concatenate(picks)
        moved = moved + rng.normal(0.0, TRUTH_JITTER_VOX * vs, moved.shape)
        xyz = np.concatenate([xyz, moved])
    x, y = (candidate_features(dets, kept_channels(sv), vs, origin, particles, xyz, outputs),
            labels_for(xyz, truth, particles))
    if unknown:
        # A run that leaves a class unannotated or picks it in part
        # (CopickProject.training_truth) cannot say which candidates are background: one
        # may be an unpicked particle. Its particles still teach; its background is taken
        # from the runs annotated in full.
        x, y = x[y > 0], y[y > 0]
    return x, y


def _detected(picker, sv, resparsify=None) -> tuple[Detections, tuple]:
    """(calibrated detections, network outputs) of the network alone."""
    from sparse_det.inference import network_outputs

    dets, final, probs = picker.detect_outputs(sv, resparsify=resparsify)
    return picker.calibrate(dets), network_outputs(final, probs)


def run_examples(picker, project: CopickProject, run: str, rng: np.random.Generator | None,
                 appearances: list[dict] = (), read_outputs: bool = True
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, labels) of one annotated run, then of a randomised copy of it per entry of
    `appearances` (randomise_appearance's parameters; read at the run's own polarity,
    flipped where the draw flipped it, as training does). The tomogram is read once. `rng`:
    moved picks as examples too (see _examples); `read_outputs`: features include the
    network's per-voxel probabilities."""
    from dataclasses import replace

    from data_tools.appearance import randomise_appearance
    from data_tools.sparsify import read_input, sparsify

    cfg = picker.sparsify_config
    tomo, info = read_input(project, run, cfg)
    vs, origin = tomo.voxel_size_A, tomo.origin_A
    truth, unknown = project.training_truth(run)
    sv = sparsify(tomo.data, vs, cfg, run, origin_A=origin, input_info=info,
                  keep_dense=PROFILE_CHANNELS, reselectable=True)
    dets, outputs = _detected(picker, sv, picker.resparsifier(project, run, None, sv))
    sv = replace(sv, selected_from=None)  # its volumes are not needed again
    out = [_examples(dets, sv, outputs if read_outputs else None, truth, picker.particles, rng,
                     unknown)]
    own = sv.input["polarity"]
    for params in appearances:
        polarity = {"dark": "bright", "bright": "dark"}[own] if params["flip"] else own
        copy = sparsify(randomise_appearance(tomo.data, vs, params), vs,
                        replace(cfg, polarity=polarity), run, origin_A=origin,
                        input_info=info, keep_dense=PROFILE_CHANNELS, own=True)
        dets, outputs = _detected(picker, copy)
        out.append(_examples(dets, copy, outputs if read_outputs else None, truth,
                             picker.particles, rng, unknown))
    return out


def run_key(run: str) -> int:
    """A run's copies are drawn from (seed, copy, this): its name's, not its place in the
    list, so adding or leaving out runs changes no other run's copies (nor its cached
    examples). Until 2026-12-02 the place was used: 20 runs added in front of 100 others
    made all 100 extract again."""
    return int.from_bytes(hashlib.sha256(run.encode()).digest()[:8], "little")


def learnt_run(run: str, share: float) -> bool:
    """Whether `run` gets --learnt-copies under --learnt-share `share`: decided by its name
    alone (a hash apart from run_key's draws), so a run's examples, and their cache file, do
    not depend on which other runs are fitted; a run left out has exactly the draws, and
    reads back the examples, of a fit without learnt copies."""
    digest = hashlib.sha256(f"learnt:{run}".encode()).digest()
    return int.from_bytes(digest[:4], "little") < share * 2 ** 32


def examples_of_runs(picker, todo: list, appearance_variants: int, seed: int, *,
                     noise_copies: int = 0, median_copies: int = 0, learnt_copies: int = 0,
                     learnt_denoiser: str = "", learnt_share: float = 1.0,
                     moved_picks: bool = False,
                     read_outputs: bool = True, cache: ExampleCache | None = None
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """run_examples of every (project, run), each also in `appearance_variants` randomised
    copies drawn from the ranges the network was trained with (its config's) and in
    `noise_copies` copies with added noise only (NOISE_ONLY), `median_copies` with that
    noise median-filtered (MEDIAN_AFTER_NOISE) and `learnt_copies` with it passed through
    the general denoiser at `learnt_denoiser` (learnt_after_noise) — only on the runs that
    learnt_run picks for `learnt_share`, as each costs a denoiser pass. `cache`: each run's examples
    are read from it where it holds them and written to it where it does not (not with
    `moved_picks`, whose draws run on from one run to the next)."""
    from sparse_det.data import appearance_ranges

    ranges = appearance_ranges(picker.ckpt.config.data.appearance)
    noisy = appearance_ranges(NOISE_ONLY)
    filtered = appearance_ranges(MEDIAN_AFTER_NOISE)
    learnt = appearance_ranges(learnt_after_noise(learnt_denoiser)) if learnt_copies else None
    rng, t0 = np.random.default_rng(seed), time.time()
    cache = None if moved_picks else cache
    xs, ys = [], []
    for i, (project, run) in enumerate(todo):
        key = run_key(run)
        draws = [ranges.draw(np.random.default_rng([seed, variant, key]))
                 for variant in range(1, 1 + appearance_variants)]
        draws += [noisy.draw(np.random.default_rng([seed, 1000 + copy, key]))
                  for copy in range(noise_copies)]
        draws += [filtered.draw(np.random.default_rng([seed, 2000 + copy, key]))
                  for copy in range(median_copies)]
        draws += [learnt.draw(np.random.default_rng([seed, 3000 + copy, key]))
                  for copy in range(learnt_copies if learnt_run(run, learnt_share) else 0)]
        stored = (cache.path(project.path, run, draws, read_outputs,
                             truth_digest(*project.training_truth(run))) if cache else None)
        examples = ExampleCache.read(stored) if stored else None
        read_back = examples is not None
        if not read_back:
            examples = run_examples(picker, project, run, rng if moved_picks else None,
                                    draws, read_outputs)
            if stored:
                ExampleCache.write(stored, examples)
        for variant, (x, y) in enumerate(examples):
            xs.append(x)
            ys.append(y)
            log.info("[%d/%d] %s%s: %d examples, %d particles (%.0f s%s)", i + 1, len(todo),
                     run, f" (copy {variant})" if variant else "", len(y),
                     int((y > 0).sum()), time.time() - t0, ", read back" if read_back else "")
    return xs, ys
