"""Averages the weights of several checkpoints fine-tuned from one start (a "model soup",
Wortsman et al. 2022) into one checkpoint: one network pass at inference, unlike an ensemble.

    python -m sparse_det.soup --checkpoint A.pt B.pt [C.pt ...] --out SOUP.pt

The checkpoints must share the architecture, features, particle table and what they read
(sparsify settings); the soup keeps the first one's config and thresholds, which do not fit
the averaged weights: tune it (`python -m sparse_det.tune`) before picking with it.
Averaging only makes sense for weights that started from the same checkpoint (fine-tunes
of one model); unrelated trainings average into noise.

With `--weights` it also interpolates between a model and its own fine-tune ("WiSE-FT",
Wortsman et al. 2022): the shipped default is 0.5 × the checkpoint trained on the
simulator's hand-built shapes + 0.5 × its fine-tune on procedural shapes, which keeps most of
what each end is good at (README *Results*).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools.atomic import atomic_path
from data_tools.cli_args import expand_home
from sparse_det.checkpoint import (
    NETWORK_TUNED,
    RESCORER,
    RESUME_ONLY,
    THRESHOLDS_STALE,
    CheckpointError,
    read_checkpoint,
)

# What must be equal for weights to be averaged and run the same way.
_MUST_MATCH = ("feature_names",)
_CONFIG_MUST_MATCH = ("model", "sparsify")


def _section(doc: dict, key: str):
    """A config section with its defaults filled in: a checkpoint written before a setting
    existed stores no key for it and means its default."""
    from sparse_det.config import config_from_dict

    return getattr(config_from_dict({key: doc["config"].get(key) or {}}), key)


def _classes(doc: dict) -> list[str]:
    """The class outputs' names in order: what averaging needs to agree. A table's other
    fields (radii, PDB IDs, identifiers, colours) may differ: a fine-tune's come from the
    project it trained on."""
    return [p["name"] for p in sorted(doc["particles"], key=lambda p: p["label"])]


def _mismatch(first: dict, other: dict) -> str | None:
    for key in _MUST_MATCH:
        if first[key] != other[key]:
            return key
    if _classes(first) != _classes(other):
        return "classes"
    for key in _CONFIG_MUST_MATCH:
        if _section(first, key) != _section(other, key):
            return f"config.{key}"
    a, b = first["model"], other["model"]
    if a.keys() != b.keys():
        return "weight names"
    for name, t in a.items():
        if t.shape != b[name].shape:
            return f"weight {name} shape {tuple(t.shape)} vs {tuple(b[name].shape)}"
    return None


def average_checkpoints(paths: list[str | Path], out: str | Path,
                        weights: list[float] | None = None) -> Path:
    """The (weighted) mean of the checkpoints' floating-point tensors, written atomically
    to `out`; integer buffers (BatchNorm's batch counters) are the first's. The running
    BatchNorm statistics are averaged like the weights: fine-tunes of one start keep them
    close, and the tuned thresholds absorb what is left."""
    import torch

    if len(paths) < 2:
        raise ValueError("a soup needs at least 2 checkpoints")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights must be {len(paths)} non-negative numbers with a "
                         f"positive sum, got {weights}")
    docs = [read_checkpoint(p) for p in paths]
    first = docs[0]
    for path, doc in zip(paths[1:], docs[1:], strict=True):
        what = _mismatch(first, doc)
        if what is not None:
            raise CheckpointError(f"{path}: cannot be averaged with {paths[0]}: its {what} "
                                  f"differs")
    total = float(sum(weights))
    state = {}
    for name, t in first["model"].items():
        if t.is_floating_point():
            acc = torch.zeros_like(t, dtype=torch.float64)
            for w, doc in zip(weights, docs, strict=True):
                acc += (w / total) * doc["model"][name].double()
            state[name] = acc.to(t.dtype)
        else:
            state[name] = t.clone()
    soup = {k: v for k, v in first.items() if k not in ("model", "tuned_for_tta")}
    soup["model"] = state
    extra = {k: v for k, v in first.get("extra", {}).items()
             if k not in RESUME_ONLY and k not in ("history", "val", "tuned_on", "tuned_per_run",
                                                   RESCORER, NETWORK_TUNED)}
    soup["extra"] = extra | {"soup_of": [str(p) for p in paths],
                             "soup_weights": [w / total for w in weights],
                             THRESHOLDS_STALE: True}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(soup, tmp)
    return out


def check_blend(share: float) -> None:
    """finetune and adapt call this before any training, blend() again before writing."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"--blend must lie in (0, 1], got {share}")


def blend(trained: str | Path, base: str | Path, out: str | Path, share: float) -> Path:
    """`share` × `trained` + (1 − share) × `base` (its start), written to `out` with the
    trained checkpoint's config and record (WiSE-FT); share 1 is `trained` itself, not
    copied. finetune and adapt write this when asked (`--blend`)."""
    check_blend(share)
    if share == 1.0:
        return Path(trained)
    return average_checkpoints([trained, base], out, weights=[share, 1.0 - share])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", nargs="+", required=True,
                    help="fine-tunes of one start, to average")
    ap.add_argument("--weights", type=float, nargs="+",
                    help="one per checkpoint (default: equal)")
    ap.add_argument("--out", required=True)
    a = expand_home(ap.parse_args(argv))
    try:
        out = average_checkpoints(a.checkpoint, a.out, a.weights)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"averaged {len(a.checkpoint)} checkpoints -> {out}; its thresholds are the "
          f"first's: tune it before picking (python -m sparse_det.tune)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
