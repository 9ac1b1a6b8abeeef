"""bench/partial_labels.py's projects: each variant reads the same tomograms, and its
training runs' picks files say what the variant claims (annotated, missing or empty)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from partial_labels import annotated_names, make_variant


def test_variants_annotate_as_they_say(small_project, tmp_path):
    run0, run1 = small_project.runs()[:2]
    names = small_project.particles.names
    assert annotated_names(names, 0) == names[0::2] and annotated_names(names, 1) == names[1::2]
    made = {v: make_variant(small_project, tmp_path / v, v, [run0], run1)
            for v in ("full", "missing", "empty")}
    for project in made.values():
        np.testing.assert_array_equal(project.read_tomogram(run0).data,
                                      small_project.read_tomogram(run0).data)
        assert project.unannotated_particles(run1) == []  # validation: annotated in full
    truth = small_project.read_truth(run0)
    assert made["full"].unannotated_particles(run0) == []
    assert made["missing"].unannotated_particles(run0) == names[1::2]
    empty = made["empty"].read_truth(run0)
    assert made["empty"].unannotated_particles(run0) == [] and list(empty) == names
    for name in names:
        kept = name in names[0::2]
        np.testing.assert_array_equal(empty[name], truth[name] if kept else truth[name][:0])
        assert (name in made["missing"].read_truth(run0)) == kept
