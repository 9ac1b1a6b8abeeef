"""Checkpoints: model weights, config, thresholds and particle table in one plain dict,
loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from data_tools.atomic import atomic_path
from data_tools.particles import ParticleTable
from sparse_det.config import Config, ConfigError, config_from_dict

FORMAT = "sparse-det-checkpoint-v1"
DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "default.pt"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: Config,
                    particles: ParticleTable, feature_names: list[str],
                    thresholds: dict[str, float], extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "config": config.to_dict(), "model": state,
           "particles": [{**p, "color": list(p["color"])} for p in particles.to_list()],
           "feature_names": list(feature_names),
           "thresholds": {k: float(v) for k, v in thresholds.items()}, "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or foreign "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sparse-det checkpoint (format "
                              f"{doc.get('format') if isinstance(doc, dict) else type(doc)!r}, "
                              f"expected {FORMAT!r})")
    return doc


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to run: the model (eval mode, on its device) and what it needs."""

    model: torch.nn.Module
    config: Config  # sparsify settings (which tomogram it reads), postprocess, ...
    particles: ParticleTable  # class k+1 of the network is particles[k]
    thresholds: dict[str, float]  # per-class score thresholds tuned for F4
    feature_names: list[str]  # the sparse features the model was trained on, in order
    path: Path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    from sparse_det.model import build_model  # spconv loads only when a model is built

    doc = read_checkpoint(path)
    try:
        cfg = config_from_dict(doc["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: incompatible checkpoint config ({exc})") from exc
    particles = ParticleTable.from_list(doc["particles"])
    model = build_model(in_channels=len(doc["feature_names"]), num_classes=len(particles),
                        channels=cfg.model.channels,
                        blocks_per_level=cfg.model.blocks_per_level, device=device)
    try:
        model.load_state_dict(doc["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes "
                              f"({str(exc)[:300]})") from exc
    model.eval()
    return LoadedCheckpoint(model, cfg, particles, dict(doc["thresholds"]),
                            list(doc["feature_names"]), Path(path))
