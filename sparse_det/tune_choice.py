"""Several checkpoints tuned on the same annotated runs, and the one `tune --out` gets: the
first unless another leads it run by run by more than two standard errors. A rescored
checkpoint may compete with its network alone (--network-alone) or with its rescorer leaving
some classes to the network (--rescore-network-classes); a rescorer fitted on the runs it is
tuned on is named, as its F4 reads high there. `python -m sparse_det.tune` calls
choose_checkpoint; sparse_det/tune.py tunes each one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from data_tools.atomic import tmp_sibling

if TYPE_CHECKING:
    from sparse_det.tune import Retuned


NETWORK_ALONE = " (network alone)"  # the label of a rescored checkpoint's network alone


def write_network_alone(checkpoint: str, dest: Path) -> bool:
    """Writes `checkpoint`'s network alone, at its own tuned thresholds, to `dest` if it
    carries a candidate rescorer; whether it did."""
    import torch

    from sparse_det.checkpoint import RESCORER, read_checkpoint, strip_rescorer

    doc = read_checkpoint(checkpoint)
    if doc.get("extra", {}).get(RESCORER) is None:
        return False
    torch.save(strip_rescorer(doc, checkpoint), dest)
    return True


def write_network_classes(checkpoint: str, dest: Path, classes: list[str]) -> None:
    """`checkpoint` with its rescorer leaving `classes` to the network's own scores
    (checkpoint.with_network_classes), written to `dest` for tuning."""
    import torch

    from sparse_det.checkpoint import read_checkpoint, with_network_classes

    torch.save(with_network_classes(read_checkpoint(checkpoint), checkpoint, classes), dest)


def choose_checkpoint(checkpoints: list[str], out: str, network_alone: bool = False,
                      network_classes: list[str] | None = None,
                      class_map: dict[str, str] | None = None,
                      dataset_sets: list[str] | None = None,
                      **tune_args) -> tuple[int, list[Retuned], list[str]]:
    """retune() of each checkpoint on the same runs; `out` gets the first unless another
    leads it run by run by more than two standard errors (keep_first_unless_beaten on each
    one's default setting). `network_alone`: a checkpoint with a candidate rescorer is
    followed by its network alone, which competes by the same rule (the rescorer was fitted
    on the simulator's particle shapes; on shapes it never saw it can cost more than it
    gives). `network_classes`: each checkpoint is tuned with its rescorer leaving these
    classes to the network's own scores (write_network_classes), and so written. A
    checkpoint that knows the first project's classes by other names (or `class_map`'s) is
    tuned, and written, as the project names them (class_match.named_as_listed).
    `dataset_sets`: the sets an argument file names its runs made by (require_projects).
    Returns (the chosen index, each candidate's retune result, each one's label)."""
    from data_tools.copick_io import CopickProject
    from data_tools.datasets import require_projects
    from sparse_det.class_match import named_as_listed
    from sparse_det.thresholds import keep_first_unless_beaten
    from sparse_det.tune import (  # here: tune imports this module for its main
        check_inference,
        retune,
        with_share,
    )

    check_inference(tune_args.get("inference"))  # bad settings fail before any file is read
    with_share(None, tune_args.get("keep_fraction"))
    labelled, results, candidates, scratch = [], [], [], []
    require_projects(tune_args["projects"], dataset_sets)  # every missing one named at once
    listed = CopickProject(tune_args["projects"][0]).particles
    try:
        for checkpoint in checkpoints:
            given = checkpoint
            named = named_as_listed(checkpoint, listed, class_map, Path(out).parent,
                                    lambda line: print(line, file=sys.stderr))
            if named != Path(checkpoint):
                scratch.append(named)
                checkpoint = str(named)
            if network_classes:
                scratch.append(tmp_sibling(Path(out)))
                write_network_classes(checkpoint, scratch[-1], network_classes)
                checkpoint = str(scratch[-1])
            labelled.append((given, checkpoint))
            if network_alone:
                scratch.append(tmp_sibling(Path(out)))
                if write_network_alone(checkpoint, scratch[-1]):
                    labelled.append((given + NETWORK_ALONE, str(scratch[-1])))
        for _, checkpoint in labelled:
            candidates.append(tmp_sibling(Path(out)))
            results.append(retune(checkpoint, out=str(candidates[-1]), **tune_args))
        warn_rescorer_in_sample(checkpoints, tune_args["projects"], tune_args.get("runs"),
                                tune_args.get("truth_user"))
        chosen = keep_first_unless_beaten({i: r.default for i, r in enumerate(results)})
        os.replace(candidates[chosen], out)
    finally:
        for c in candidates + scratch:
            c.unlink(missing_ok=True)
    return chosen, results, [label for label, _ in labelled]


def warn_rescorer_in_sample(checkpoints: list[str], projects: list[str],
                            runs: list[str] | None, truth_user: str | None = None) -> None:
    """A rescorer scores the runs it was fitted on better than new ones, so thresholds
    tuned there pass too much and the F4 printed reads high: say so, naming the runs."""
    from data_tools.copick_io import CopickProject
    from data_tools.run_names import runs_named
    from sparse_det.checkpoint import checkpoint_settings

    opened = [CopickProject(path, truth_user=truth_user) for path in projects]
    here = {f"{project.path.name}/{r}"
            for project, chosen in zip(opened, runs_named(opened, runs), strict=True)
            for r in chosen}
    for checkpoint in checkpoints:
        shared = sorted(here & set(checkpoint_settings(checkpoint).rescorer_runs))
        if shared:
            print(f"warning: the rescorer of {checkpoint} was fitted on {len(shared)} of "
                  f"these runs ({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''})"
                  ": its thresholds fit them too well and the F4 below reads high (4 low-SNR"
                  " runs it was fitted on: 0.812; 2 new ones: 0.706). Tune it on runs its "
                  "rescorer was not fitted on", file=sys.stderr)
