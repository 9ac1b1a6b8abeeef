"""tune --network-alone: a checkpoint with a candidate rescorer competes with its network
alone on the user's annotated runs (sparse_det/tune_choice.py: choose_checkpoint)."""

from __future__ import annotations

import torch

from sparse_det.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, read_checkpoint
from sparse_det.tune import main
from sparse_det.tune_choice import NETWORK_ALONE, write_network_alone

# The rescorer's outputs re-ordered: p(apo-ferritin) is its ribosome estimate and so on
# (0 is background; classes 1 <-> 4 and 3 <-> 6 swapped), so its scores point at the
# wrong particles while the network under it is the shipped one.
SWAPPED = [0, 4, 2, 6, 1, 5, 3]


def _with_swapped_rescorer(path):
    doc = read_checkpoint(DEFAULT_CHECKPOINT)
    weights = doc["extra"]["rescorer"]["weights"]
    last = max(int(k.split(".")[2]) for k in weights if k.startswith("members.0."))
    for k in list(weights):
        if k.startswith("members.") and k.split(".")[2] == str(last):  # each output layer
            weights[k] = weights[k][SWAPPED].clone()
    torch.save(doc, path)
    return path


def test_a_wrong_rescorer_loses_to_its_own_network_alone(small_project, tmp_path, capsys):
    """Tuned on the same annotated runs, the network alone leads a rescorer that names the
    wrong classes by far more than two standard errors and is chosen; --out is then a
    checkpoint without a rescorer, and no temporary file is left beside it."""
    bad = _with_swapped_rescorer(tmp_path / "bad.pt")
    out = tmp_path / "tuned.pt"
    assert main(["--checkpoint", str(bad), "--network-alone", "--project",
                 str(small_project.path), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    listed = [ln.strip() for ln in printed.splitlines() if ln.strip().startswith(str(bad))]
    assert len(listed) == 2, f"the rescored checkpoint and its network alone, got:\n{printed}"
    assert listed[1].startswith(str(bad) + NETWORK_ALONE) and listed[1].endswith("<- chosen"), (
        f"the network alone should win:\n{printed}")
    assert load_checkpoint(out).rescorer is None, "the chosen network alone carries no rescorer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "tuned.pt"], (
        f"left behind: {sorted(p.name for p in tmp_path.iterdir())}")


def test_only_a_rescored_checkpoint_has_a_network_alone(tmp_path):
    """The shipped default is written without its rescorer, at its network's own
    thresholds; a checkpoint with no rescorer writes nothing."""
    alone = tmp_path / "alone.pt"
    assert write_network_alone(str(DEFAULT_CHECKPOINT), alone), "the default has a rescorer"
    ck = load_checkpoint(alone)
    doc = read_checkpoint(DEFAULT_CHECKPOINT)
    assert ck.rescorer is None and ck.thresholds == doc["extra"]["network_tuned"]["thresholds"]
    again = tmp_path / "again.pt"
    assert not write_network_alone(str(alone), again) and not again.exists(), (
        "a checkpoint without a rescorer has no other network alone")
