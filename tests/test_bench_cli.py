"""bench/cli.py: a benchmark script ends bad input with one `error:` line and exit 2, and a
project the manifest simulates names the command that makes it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import data_tools.datasets as datasets
from data_tools.copick_io import CopickProject
from data_tools.particles import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_project_is_one_line_naming_it(tmp_path):
    """Run as users run it, from elsewhere: one line on stderr, exit 2, no traceback."""
    nope = tmp_path / "nope"
    done = subprocess.run([sys.executable, str(ROOT / "bench/misses.py"), "--project",
                           str(nope)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {nope}: project does not exist", done.stderr


def test_a_benchmark_project_not_made_yet_names_its_set(tmp_path, monkeypatch):
    """The shipped manifest, in a checkout where data/heldout_in is not made yet: the set
    that makes it, with --root since the command does not run from that checkout."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.setattr(datasets, "CHECKOUT", tmp_path)
    with pytest.raises(DataError) as err:
        CopickProject(tmp_path / "data/heldout_in")
    assert str(err.value).endswith(
        "project does not exist (simulated by configs/datasets.yaml: python -m "
        f"data_tools.datasets make heldout_21 --root {tmp_path})")


def test_every_project_not_made_yet_is_named_at_once(tmp_path, monkeypatch):
    """A bench over many projects (the 44 held-out runs' args file) names every missing
    one and the sets that make them all, in one line (datasets.require_projects, which the
    bench scripts call on their --project lists), the command with --root where it is said
    outside the checkout, as CopickProject's is; a project made raises nothing."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.setattr(datasets, "CHECKOUT", tmp_path)
    (tmp_path / "data/heldout_in").mkdir(parents=True)
    wanted = [str(tmp_path / "data" / p) for p in ("heldout_in", "heldout_tilt",
                                                      "heldout2_in", "nope")]
    with pytest.raises(DataError) as err:
        datasets.require_projects(wanted)
    said = (f"{', '.join(wanted[1:])}: projects do not exist; configs/datasets.yaml makes "
            "them: python -m data_tools.datasets make heldout_21 heldout_second{} (an argument "
            "file's comment names every set its runs need)")
    # said outside the checkout, the command names it: `make` reads the manifest of the
    # folder it runs in
    assert str(err.value) == said.format(f" --root {tmp_path}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        datasets.require_projects(wanted)
    assert str(err.value) == said.format("")
    datasets.require_projects(wanted[:1])
