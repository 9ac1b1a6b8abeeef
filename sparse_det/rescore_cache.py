"""The rescorer's training examples of each run, kept on disk (`python -m sparse_det.rescore
--examples-dir`): extracting them is most of a fit (about 18 minutes for the default's 171
runs on a 2-core CPU, the MLPs under a minute), so an interrupted fit resumes where it
stopped and a refit with other MLP settings (--members, --epochs) reads them back.

A run's file is named by a digest of everything its examples depend on: the network's
weights, the thresholds, calibration and settings it is read with, the sparsifier's
configuration, the run's path and name, its randomised copies' parameters, whether the
network's outputs are features, and EXAMPLES_FORMAT — bumped whenever the code changes
what an example holds. Anything else changed is a new file, never a stale one read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_path

log = logging.getLogger(__name__)

EXAMPLES_FORMAT = 1  # bump when candidate_features or labels_for change what they write


def truth_digest(picks: dict[str, np.ndarray], unknown: list[str] = ()) -> str:
    """sha256 of a run's ground-truth picks and the particles its background may also be
    (CopickProject.training_truth)."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(unknown)).encode() if unknown else b"")
    for name in sorted(picks):
        h.update(name.encode())
        h.update(np.ascontiguousarray(picks[name], dtype=np.float64).tobytes())
    return h.hexdigest()[:24]


def network_digest(picker) -> str:
    """sha256 of what every run's examples depend on besides the run: the network's weights,
    its thresholds, calibration, test-time mirrors, postprocessing and sparsify settings."""
    h = hashlib.sha256()
    for name, tensor in sorted(picker.ckpt.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = [picker.ckpt.thresholds, picker.ckpt.calibration, picker.tta,
                dataclasses.asdict(picker.ckpt.config.postprocess),
                picker.sparsify_config.to_dict(), EXAMPLES_FORMAT]
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


class ExampleCache:
    """Each run's list of (features, labels) arrays, one .npz per run and recipe."""

    def __init__(self, folder: str | Path, digest: str):
        self.folder, self.digest = Path(folder), digest
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, project_path: Path, run: str, draws: list[dict], read_outputs: bool,
             truth: str = "") -> Path:
        """`truth`: truth_digest of the run's ground truth, which labels its examples: picks
        edited or read as another user's (--truth-user) are other examples."""
        key = json.dumps([self.digest, str(Path(project_path).resolve()), run, draws,
                          read_outputs, truth], sort_keys=True)
        # The run's name only labels the file: the digest tells runs apart, and a name
        # with path characters cannot place it outside the folder.
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", run)[:80]
        return self.folder / f"{label}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"

    @staticmethod
    def read(path: Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """The examples stored at `path`, or None where there are none or the file cannot be
        read (it is then extracted and written again)."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                n = int(z["copies"])
                return [(z[f"x{i}"], z[f"y{i}"]) for i in range(n)]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("%s: cannot be read (%s); extracting its run again", path, exc)
            return None

    @staticmethod
    def write(path: Path, examples: list[tuple[np.ndarray, np.ndarray]]) -> None:
        arrays = {"copies": np.array(len(examples))}
        for i, (x, y) in enumerate(examples):
            arrays[f"x{i}"], arrays[f"y{i}"] = x, y
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
