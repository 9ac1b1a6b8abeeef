"""Checkpoints: model weights, config, thresholds and particle table in one plain dict,
loadable with torch.load(weights_only=True).

torch is imported inside the functions: command lines import this module for its names and
errors, and `--help` or a bad argument must not wait a second for torch.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.atomic import atomic_path
from data_tools.particles import ParticleTable
from sparse_det.config import Config, ConfigError, config_from_dict

if TYPE_CHECKING:
    import torch

FORMAT = "sparse-det-checkpoint-v1"
# Reads whitened tomograms (README *Results*): half SIMULATOR_SHAPES_CHECKPOINT's weights,
# half its fine-tune on procedural particle shapes (an interpolation: sparse_det.soup).
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "default.pt"
# The default until 2026-11-29 evening (configs/whiten.yaml's soup of three seeds): trained
# on the simulator's hand-built particle shapes only; the best measured on them, weaker on
# shapes no training drew.
SIMULATOR_SHAPES_CHECKPOINT = Path(__file__).parent / "checkpoints" / "simulator_shapes.pt"
# The default until 2026-11-29 morning (configs/wide_tilt.yaml's): stronger on some low-SNR
# and in-range runs, weaker on blurred tilt series. Choose among the shipped checkpoints on
# your own annotated runs with `sparse_det.tune --checkpoint DEFAULT OTHER ...`.
UNWHITENED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "unwhitened.pt"
# Trained on procedural particle models as well (configs/shapes_procedural2.yaml): stronger
# on particle shapes no training drew (docs/experiments.md *One effect at a time*), weaker on the
# simulator's own shapes at low SNR. A candidate for `sparse_det.tune --checkpoint`.
SHAPES_GENERAL_CHECKPOINT = Path(__file__).parent / "checkpoints" / "shapes_general.pt"


class CheckpointError(ValueError):
    pass


def _torch():
    import torch

    return torch


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: Config,
                    particles: ParticleTable, feature_names: list[str],
                    thresholds: dict[str, float], extra: dict | None = None,
                    calibration: dict[str, list[float]] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "config": config.to_dict(), "model": state,
           "particles": [{**p, "color": list(p["color"])} for p in particles.to_list()],
           "feature_names": list(feature_names),
           "thresholds": {k: float(v) for k, v in thresholds.items()}, "extra": extra or {},
           "calibration": {k: [float(a), float(b)] for k, (a, b) in (calibration or {}).items()}}
    with atomic_path(path) as tmp:
        _torch().save(doc, tmp)
    return path


_UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
               OSError, KeyError)


def _check(path: Path, load) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        doc = load(path)
    except _UNREADABLE as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or foreign "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sparse-det checkpoint (format "
                              f"{doc.get('format') if isinstance(doc, dict) else type(doc)!r}, "
                              f"expected {FORMAT!r})")
    return doc


def read_checkpoint(path: str | Path) -> dict:
    return _check(Path(path).expanduser(),
                  lambda p: _torch().load(p, map_location="cpu", weights_only=True))


# What only a resumed training needs (with train.ema_decay, the raw weights beside the
# average): a tuned or souped checkpoint drops it.
RESUME_ONLY = ("optimizer", "scheduler", "raw_model")
THRESHOLDS_STALE = "thresholds_stale"  # extra's flag: thresholds not tuned for these weights
# extra's entries of a checkpoint with a candidate rescorer (sparse_det/rescore.py): its
# state, and the thresholds and calibration tuned for the network's own vote masses.
RESCORER = "rescorer"
RESCORER_RUNS = "rescorer_runs"  # extra: "PROJECT_FOLDER/RUN" of each run it was fitted on
NETWORK_TUNED = "network_tuned"


def _network_tuned(path: str | Path, tuned: dict | None) -> dict:
    """Copies of a rescored checkpoint's thresholds, calibration, tuned_for_tta and the
    test-time setting its thresholds are for ("tta") for its network alone
    (extra[NETWORK_TUNED]); CheckpointError when it has none."""
    if not tuned:
        raise CheckpointError(f"{path}: carries a rescorer but no thresholds for the network "
                              "alone; use it with its rescorer")
    # The rescorer's own setting may differ (the default's mirrors); rescored checkpoints
    # from before the network's setting was recorded all read it in one pass.
    return {"thresholds": dict(tuned["thresholds"]),
            "calibration": {k: list(v) for k, v in tuned["calibration"].items()},
            "tuned_for_tta": dict(tuned.get("tuned_for_tta", {})),
            "tta": str(tuned.get("tta", "none"))}


def strip_rescorer(doc: dict, path: str | Path) -> dict:
    """A checkpoint document without its rescorer, at its network's own tuned set and
    test-time setting (what Picker.load(rescore=False) reads), for writing a network-only
    checkpoint."""
    extra = dict(doc.get("extra", {}))
    if extra.get(RESCORER) is None:
        return doc
    alone = _network_tuned(path, extra.pop(NETWORK_TUNED, None))
    del extra[RESCORER]
    config = dict(doc["config"])
    config["postprocess"] = dict(config.get("postprocess", {})) | {"tta": alone.pop("tta")}
    return doc | alone | {"extra": extra, "config": config}


def with_network_classes(doc: dict, path: str | Path, classes: list[str]) -> dict:
    """A rescored checkpoint document whose rescorer leaves `classes` at the network's own
    scores (RescoreNet.network_classes); its thresholds are marked stale, to be tuned for
    the new scores. CheckpointError without a rescorer or for a class it does not have."""
    extra = dict(doc.get("extra", {}))
    state = extra.get(RESCORER)
    if state is None:
        raise CheckpointError(f"{path}: has no candidate rescorer to leave classes to the "
                              "network")
    names = [p["name"] for p in doc["particles"]]
    unknown = sorted(set(classes) - set(names))
    if unknown:
        raise CheckpointError(f"{path}: no class {unknown} (its classes: {names})")
    extra[RESCORER] = dict(state) | {"network_classes": list(dict.fromkeys(classes))}
    extra[THRESHOLDS_STALE] = True
    return doc | {"extra": extra}


def _tuned_set(thresholds: dict[str, float], calibration: dict[str, list[float]]) -> dict:
    return {"thresholds": {k: float(v) for k, v in thresholds.items()},
            "calibration": {k: [float(a), float(b)] for k, (a, b) in calibration.items()}}


def write_retuned(src: str | Path, dest: str | Path, *, thresholds: dict[str, float],
                  calibration: dict[str, list[float]], extra: dict,
                  postprocess: dict | None = None, other_tta: dict | None = None,
                  sparsify: dict | None = None) -> Path:
    """`src` with new thresholds and score calibration, written atomically to `dest` for
    inference: its optimiser state dropped, `extra` added to its record, `postprocess`
    fields (the settings the thresholds were tuned with, e.g. tta) set in its config.
    `other_tta`: {tta: (thresholds, calibration)} tuned on the same runs for other
    test-time settings, used when infer is asked for one of them; sets from an earlier
    tuning are dropped, as they were tuned on other runs. `sparsify`: fields of its
    sparsify config the thresholds were tuned with (keep_fraction)."""
    doc = read_checkpoint(src)
    if postprocess:
        doc["config"].setdefault("postprocess", {}).update(postprocess)
    if sparsify:
        doc["config"].setdefault("sparsify", {}).update(sparsify)
    doc.update(_tuned_set(thresholds, calibration))
    doc["tuned_for_tta"] = {k: _tuned_set(*v) for k, v in (other_tta or {}).items()}
    kept = {k: v for k, v in doc.get("extra", {}).items()
            if k not in RESUME_ONLY and k != THRESHOLDS_STALE}
    doc["extra"] = kept | extra
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        _torch().save(doc, tmp)
    return dest


class _NoTensors(pickle.Unpickler):
    """A checkpoint's pickle read without torch, tensors left out: plain containers and
    torch's tensor-rebuild names only (a subset of what torch's weights_only allows)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module == "torch._utils" and name.startswith("_rebuild_tensor")) or (
                module == "torch" and name.endswith("Storage")):
            return _nothing
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid):
        return None


def _nothing(*args, **kwargs) -> None:
    return None


def _read_without_torch(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        with z.open(name) as f:
            return _NoTensors(f).load()


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to run: the model (eval mode, on its device) and what it needs."""

    model: torch.nn.Module
    config: Config  # sparsify settings (which tomogram it reads), postprocess, ...
    particles: ParticleTable  # class k+1 of the network is particles[k]
    thresholds: dict[str, float]  # per-class score thresholds tuned for F4
    feature_names: list[str]  # the sparse features the model was trained on, in order
    path: Path
    # Per class [a, b]: score = sigmoid(a·ln(vote mass) + b), thresholds then probabilities;
    # empty for checkpoints from before calibration (scores and thresholds in vote mass).
    calibration: dict[str, list[float]]
    # {tta: {"thresholds", "calibration"}} tuned for test-time settings other than the
    # config's postprocess.tta (write_retuned's other_tta).
    tuned_for_tta: dict[str, dict] = field(default_factory=dict)
    # The candidate rescorer (sparse_det/rescore.py) its thresholds were tuned with, if any,
    # and the network's own tuned set ({"thresholds", "calibration", "tuned_for_tta"}) for
    # reading vote masses without it.
    rescorer: torch.nn.Module | None = None
    network_tuned: dict | None = None

    def without_rescorer(self) -> None:
        """The network alone, at the thresholds and calibration tuned for its vote masses
        (kept in the checkpoint when its rescorer was fitted)."""
        if self.rescorer is None:
            return
        alone = _network_tuned(self.path, self.network_tuned)
        self.thresholds, self.calibration = alone["thresholds"], alone["calibration"]
        self.tuned_for_tta = alone["tuned_for_tta"]
        self.config.postprocess.tta = alone["tta"]
        self.rescorer = None

    def use_tta(self, tta: str) -> bool:
        """Switches to the thresholds and calibration tuned for `tta`; False when the
        checkpoint has none for it (its own stay)."""
        if tta == self.config.postprocess.tta:
            return True
        tuned = self.tuned_for_tta.get(tta)
        if tuned is None:
            return False
        self.thresholds = dict(tuned["thresholds"])
        self.calibration = {k: list(v) for k, v in tuned["calibration"].items()}
        self.config.postprocess.tta = tta
        return True


@dataclass(frozen=True)
class Settings:
    """What a checkpoint reads and predicts, without its model (no spconv needed)."""

    config: Config
    particles: ParticleTable
    feature_names: list[str]
    thresholds: dict[str, float]
    calibration: dict[str, list[float]]
    tuned_for_tta: dict[str, dict] = field(default_factory=dict)
    # The lowest and highest confidence (inference.tomogram_confidence) of the runs `tune`
    # set the thresholds on, where it recorded them.
    tuned_confidence: tuple[float, float] | None = None
    # The thresholds were not tuned for these weights (a soup keeps its first member's):
    # nothing to keep when re-tuning (calibrated_tuning.keep_prior_unless_beaten).
    thresholds_stale: bool = False
    has_rescorer: bool = False  # it carries a candidate rescorer (sparse_det/rescore.py)
    # "PROJECT_FOLDER/RUN" of each run its rescorer was fitted on (sparse_det.rescore)
    rescorer_runs: tuple[str, ...] = ()
    network_tuned: dict | None = None  # a rescored one's set for its network alone

    def prior(self, tta: str):
        """(thresholds, calibration) tuned for these weights with `tta`, or None."""
        if self.thresholds_stale:
            return None
        if tta == self.config.postprocess.tta:
            return dict(self.thresholds), dict(self.calibration)
        tuned = self.tuned_for_tta.get(tta)
        return (dict(tuned["thresholds"]), dict(tuned["calibration"])) if tuned else None

    def network_prior(self, tta: str):
        """prior() of the network alone, for the vote masses of a network trained from these
        weights: a rescored checkpoint's own thresholds map its rescorer's probabilities
        (the default's passed nearly every vote mass)."""
        if not self.has_rescorer:
            return self.prior(tta)
        if self.thresholds_stale or not self.network_tuned:
            return None
        alone = _network_tuned("", self.network_tuned)  # read as strip_rescorer reads it
        tuned = alone if tta == alone["tta"] else alone["tuned_for_tta"].get(tta)
        return (dict(tuned["thresholds"]), dict(tuned["calibration"])) if tuned else None


def _settings(path: str | Path, doc: dict) -> Settings:
    try:
        cfg = config_from_dict(doc["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: incompatible checkpoint config ({exc})") from exc
    tuned = [float(c) for runs in doc.get("extra", {}).get("tuned_confidence", {}).values()
             for c in runs.values()]
    return Settings(cfg, ParticleTable.from_list(doc["particles"]),
                    list(doc["feature_names"]), dict(doc["thresholds"]),
                    {k: list(v) for k, v in doc.get("calibration", {}).items()},
                    dict(doc.get("tuned_for_tta", {})),
                    (min(tuned), max(tuned)) if tuned else None,
                    bool(doc.get("extra", {}).get(THRESHOLDS_STALE)),
                    doc.get("extra", {}).get(RESCORER) is not None,
                    tuple(doc.get("extra", {}).get(RESCORER_RUNS, ())),
                    doc.get("extra", {}).get(NETWORK_TUNED))


def checkpoint_settings(path: str | Path) -> Settings:
    """Read in milliseconds, without torch: command lines check their input against it
    before anything heavy loads."""
    try:
        doc = _check(Path(path), _read_without_torch)
    except StopIteration:  # a zip that torch did not write
        doc = read_checkpoint(path)
    return _settings(path, doc)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    from sparse_det.model import build_model  # spconv loads only when a model is built

    doc = read_checkpoint(path)
    settings = _settings(path, doc)
    cfg, particles = settings.config, settings.particles
    model = build_model(in_channels=len(doc["feature_names"]), num_classes=len(particles),
                        channels=cfg.model.channels,
                        blocks_per_level=cfg.model.blocks_per_level, device=device)
    try:
        model.load_state_dict(doc["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes "
                              f"({str(exc)[:300]})") from exc
    model.eval()
    return LoadedCheckpoint(model, cfg, particles, settings.thresholds,
                            settings.feature_names, Path(path), settings.calibration,
                            settings.tuned_for_tta, _rescorer(path, doc, len(particles)),
                            doc.get("extra", {}).get(NETWORK_TUNED))


def _rescorer(path: str | Path, doc: dict, n_classes: int) -> torch.nn.Module | None:
    state = doc.get("extra", {}).get(RESCORER)
    if state is None:
        return None
    from data_tools.particles import DataError
    from sparse_det.rescore import RescoreNet

    try:
        net = RescoreNet.from_state(state, str(path))
    except DataError as exc:
        raise CheckpointError(str(exc)) from exc
    if net.n_classes != n_classes:
        raise CheckpointError(f"{path}: its rescorer scores {net.n_classes} classes, its "
                              f"particle table has {n_classes}")
    return net
