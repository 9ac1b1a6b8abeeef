"""Whose picks a copick project's runs hold, and which of them are the ground truth: the
picks half of CopickProject (data_tools/copick_io.py finds runs and tomograms and mixes this
in). Picks files are read and written here, and nowhere else.

    <overlay>/ExperimentRuns/<run>/Picks/<particle>.json             competition naming
    <overlay>/ExperimentRuns/<run>/Picks/<user>_<session>_<particle>.json   copick naming
Pick locations are x,y,z in Å. Whose picks are the truth by default, and --truth-user:
data_tools/truth_user.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_write_text, listed
from data_tools.copick_files import picks_json, read_picks_json
from data_tools.particles import DataError, ParticleTable
from data_tools.truth_user import (
    GT_SESSION,
    GT_USER,
    TOOL_SESSION,
    check_picks_name,
    scoring_truth,
)

log = logging.getLogger(__name__)
# A run's particles whose picks are some of its copies, not all: one name a line, in the run's
# folder (copick reads only its own subfolders there).
PARTLY_PICKED = "sparse-det-partly-picked.txt"
_SAID_UNANNOTATED: set[tuple[str, str, tuple[str, ...]]] = set()  # annotated_runs' warnings
_SAID_OUTSIDE: set[tuple[str, str]] = set()  # (static root, run) whose picks were checked


class ProjectPicks:
    """The picks methods of CopickProject: they read its `particles`, `truth_user`,
    `truth_session`, `path` and `static_root`, and its `run_dir`."""

    particles: ParticleTable
    truth_user: str | None
    truth_session: str | None
    path: Path
    static_root: Path

    def picks_files(self, run: str) -> list[tuple[Path, str, str, str]]:
        """[(path, particle, user_id, session_id)] of the run's `Picks/` in the overlay and,
        as copick reads them (read-only picks a facility shares), in the static root; a file
        of the same name in the overlay shadows the static one. A bare `<particle>.json`
        counts as curation/0."""
        found: dict[str, Path] = {}
        for overlay in (False, True):  # the overlay's last: it shadows
            d = self.run_dir(run, overlay=overlay, must_exist=False) / "Picks"
            for p in d.glob("*.json") if d.is_dir() else []:
                found[p.name] = p
        out = []
        for p in (found[name] for name in sorted(found)):
            if not listed(p):
                continue
            stem = p.stem
            if stem in self.particles:
                out.append((p, stem, GT_USER, GT_SESSION))
                continue
            parts = stem.split("_", 2)
            if len(parts) == 3:
                out.append((p, parts[2], parts[0], parts[1]))
            else:
                out.append((p, stem, GT_USER, GT_SESSION))
        return out

    def truth_files(self, run: str) -> list[tuple[Path, str, str, str]]:
        """The picks files read as the run's ground truth. With `truth_user` set, that user's
        (that session's). Else the curation user's (and bare-named ones, as the competition
        ships them); where there are none, the picks people made (copick: a session other
        than "0"), each particle from one user and session — one particle picked in two
        (two annotators, or two passes) is not merged silently. Tools' picks (session "0":
        infer's own, by default) are never truth."""
        files = self.picks_files(run)
        if self.truth_user is not None:
            return [f for f in files if f[2] == self.truth_user
                    and self.truth_session in (None, f[3])]
        curated = [f for f in files if f[2] == GT_USER]
        if curated:
            return curated
        people = [f for f in files if f[3] != TOOL_SESSION]
        by_particle: dict[str, set[str]] = {}
        for _, particle, user, session in people:
            by_particle.setdefault(particle, set()).add(f"{user}:{session}")
        for particle, who in sorted(by_particle.items()):
            if len(who) > 1:
                raise DataError(
                    f"run {run!r}: {particle} picked by several annotators or sessions "
                    f"({', '.join(sorted(who))}) and none by 'curation'; name the one to "
                    "read as ground truth with --truth-user USER[:SESSION]")
        return people

    def annotated_runs(self, runs: list[str] | None = None) -> list[str]:
        """Those of `runs` (default: every run) that have ground-truth picks files (truth_files;
        an empty one counts: a run with none of that particle). The others — a tool's picks
        alone, or none — are no truth to train, tune or fit on: a run read as having no
        particles would teach that its particles are background. Each is logged."""
        annotated = []
        for r in self.runs() if runs is None else runs:
            files = self.truth_files(r)
            if not files:
                other = self.untrusted_picks(r)
                log.info("left out: %s (no annotations%s)", r,
                         f"; not read as truth: {', '.join(other)}" if other else "")
                continue
            annotated.append(r)
            missing = self._without_file(files)
            said = (str(self.path.resolve()), r, tuple(missing))
            if missing and said not in _SAID_UNANNOTATED:  # once: finetune asks per fold
                _SAID_UNANNOTATED.add(said)
                log.warning("%s: no picks file of %s: not annotated there, so neither "
                            "scored there nor trained as background (an empty picks file "
                            "says a run has none)", r, ", ".join(missing))
        return annotated

    def unannotated_particles(self, run: str) -> list[str]:
        """The table's particles the run's ground truth has no file of: not annotated there
        (read_truth leaves them out). An empty file is an annotation: none there. None where
        the run has no ground truth at all."""
        return self._without_file(self.truth_files(run))

    def _without_file(self, truth_files: list) -> list[str]:
        have = {f[1] for f in truth_files}
        return [p for p in self.particles.names if p not in have] if have else []

    def untrusted_picks(self, run: str) -> list[str]:
        """"USER_SESSION" of the run's picks files that truth_files does not read."""
        truth = {f[0] for f in self.truth_files(run)}
        return sorted({f"{f[2]}_{f[3]}" for f in self.picks_files(run) if f[0] not in truth})

    def read_picks(self, run: str, user_id: str | None = None,
                   session_id: str | None = None) -> dict[str, np.ndarray]:
        """Picks per particle as [N,3] x,y,z Å (every table particle present, maybe empty).

        With no user_id, the ground truth (truth_files); else that user's picks.
        """
        self.run_dir(run)
        if user_id is None:
            files = self.truth_files(run)
        else:
            files = [f for f in self.picks_files(run) if f[2] == user_id]
        if session_id is not None:
            files = [f for f in files if f[3] == session_id]
        out = {name: np.zeros((0, 3)) for name in self.particles.names}
        for path, particle, _, _ in files:
            name, pts = read_picks_json(path)
            name = name or particle
            if name not in self.particles:
                raise DataError(f"{path}: unknown particle {name!r}; known: "
                                f"{', '.join(self.particles.names)}")
            out[name] = np.concatenate([out[name], pts]) if len(out[name]) else pts
        return out

    def read_truth(self, run: str) -> dict[str, np.ndarray]:
        """The run's ground truth for scoring: read_picks' less the particles it does not
        annotate (unannotated_particles) or picked in part (partly_picked). A particle
        absent here is unknown in this run: scoring skips it there. Why: a user who
        annotates only ribosomes in a run has not said there are no apo-ferritins; read as
        none, every apo-ferritin found there counted as a false positive."""
        return scoring_truth(*self.training_truth(run))

    def training_truth(self, run: str) -> tuple[dict[str, np.ndarray], list[str]]:
        """(the picks training learns as particles: read_picks' less the unannotated
        particles, the particles a background voxel may also be: the unannotated and the
        partly picked ones). Read as background, their unpicked copies taught the network
        that they are background (bench/partial_labels.py)."""
        truth, unknown = self.read_picks(run), self.unannotated_particles(run)
        for name in unknown:
            del truth[name]
        self._warn_picks_outside(run, truth)
        return truth, unknown + [p for p in self.partly_picked(run) if p not in unknown]

    def _warn_picks_outside(self, run: str, picks: dict[str, np.ndarray]) -> None:
        """A warning where a run's picks cannot be where its tomograms are (checked once per
        run and process): copick's picks are in Å, and picks saved in pixels or nm (the
        field's most reported mix-up) would train and score as particles nobody can find
        (picks_misplaced)."""
        key = (str(self.static_root), run)
        if key in _SAID_OUTSIDE:  # checked in this process already
            return
        _SAID_OUTSIDE.add(key)
        from data_tools.picks_placement import picks_misplaced

        said = picks_misplaced(self, run, picks)
        if said:
            log.warning("run %r: %s", run, said)

    def partly_picked(self, run: str) -> list[str]:
        """The particles whose picks in this run are some of its copies, not all, as the
        run's PARTLY_PICKED file lists them (mark_partly_picked; overlay and static root);
        only those the run's ground truth has a file of."""
        names: set[str] = set()
        for overlay in (False, True):
            names |= set(self._names_in(self.run_dir(run, overlay=overlay, must_exist=False)
                                      / PARTLY_PICKED))
        have = {f[1] for f in self.truth_files(run)} if names else set()
        return [p for p in self.particles.names if p in names and p in have]

    def mark_partly_picked(self, run: str, particles: list[str]) -> Path:
        """Adds `particles` to the run's PARTLY_PICKED file (in the overlay)."""
        for p in particles:
            self.particles[p]
        path = self.run_dir(run, overlay=True, must_exist=False) / PARTLY_PICKED
        path.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(set(particles) | set(self._names_in(path)))
        atomic_write_text(path, "# particles picked in part in this run (sparse-det)\n"
                          + "".join(f"{n}\n" for n in names))
        return path

    def _names_in(self, path: Path) -> list[str]:
        if not path.is_file():
            return []
        names = [ln.strip() for ln in path.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        if unknown := sorted(set(names) - set(self.particles.names)):
            raise DataError(f"{path}: unknown particles {unknown}; known: "
                            f"{', '.join(self.particles.names)}")
        return names

    def write_picks(self, run: str, particle: str, points_xyz_A: np.ndarray,
                    user_id: str = GT_USER, session_id: str = GT_SESSION,
                    scores: np.ndarray | None = None) -> Path:
        self.particles[particle]
        check_picks_name(user_id, "user", f"{self.path}: picks of {run}")
        check_picks_name(session_id, "session", f"{self.path}: picks of {run}")
        d = self.run_dir(run, overlay=True, must_exist=False) / "Picks"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{user_id}_{session_id}_{particle}.json"
        atomic_write_text(path, json.dumps(
            picks_json(run, particle, points_xyz_A, user_id, session_id, scores)))
        return path
