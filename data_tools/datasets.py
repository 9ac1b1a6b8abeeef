"""The simulated projects the benchmarks are measured on, made from one manifest.

    python -m data_tools.datasets list [--manifest configs/datasets.yaml]
    python -m data_tools.datasets make SET [SET ...] [--manifest ...] [--root DIR] [--dry-run]

Each entry of a set is one `data_tools.simulate` call (configs/datasets.yaml). `make` skips a
call whose runs are all recorded in its project's simulation.json (which simulate writes
last), so an interrupted `make` resumes at the first call it had not finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_tools.cli_args import expand_home
from data_tools.particles import DataError

DEFAULT_MANIFEST = "configs/datasets.yaml"
CALL_KEYS = {"out", "seed", "runs", "indices", "physics", "prefix", "ranges", "tilt_ranges",
             "shape_zyx"}


@dataclass(frozen=True)
class SimCall:
    """One `data_tools.simulate` call: the runs {prefix}_{seed}_{i:03d} for i in indices."""
    out: str
    seed: int
    indices: tuple[int, ...]
    physics: str = "fast"
    prefix: str = "TS_sim"
    ranges: dict = field(default_factory=dict)
    tilt_ranges: dict = field(default_factory=dict)
    shape_zyx: tuple[int, int, int] | None = None  # None: the competition's full size

    @property
    def run_names(self) -> list[str]:
        return [f"{self.prefix}_{self.seed}_{i:03d}" for i in self.indices]


def layered_ranges(value, where: str, root: Path) -> dict:
    """Ranges inline (a mapping), as a JSON file relative to `root`, or a list of those
    layered in order (a later layer's keys win), so a variant of a ranges file names only
    what it changes: `[configs/tilt_ranges_wide.json, {dose_weighting: true}]`."""
    if value is None:
        return {}
    if isinstance(value, list):
        merged = {}
        for k, layer in enumerate(value):
            if isinstance(layer, list):
                raise DataError(f"{where}: ranges layer {k} is a list; layers do not nest")
            merged.update(layered_ranges(layer, f"{where} (ranges layer {k})", root))
        return merged
    if isinstance(value, dict):
        return dict(value)
    path = root / value
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: cannot read ranges file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{where}: ranges file {path} must hold a JSON object")
    return doc


def _parse_call(entry, where: str, root: Path, ranges: bool = True) -> SimCall:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: each entry must be a mapping, got {entry!r}")
    unknown = set(entry) - CALL_KEYS
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(CALL_KEYS)})")
    if "out" not in entry or "seed" not in entry:
        raise DataError(f"{where}: 'out' and 'seed' are required")
    if ("runs" in entry) == ("indices" in entry):
        raise DataError(f"{where}: give exactly one of 'runs' (0..N-1) and 'indices'")
    indices = (tuple(range(int(entry["runs"]))) if "runs" in entry
               else tuple(int(i) for i in entry["indices"]))
    return SimCall(out=str(entry["out"]), seed=int(entry["seed"]), indices=indices,
                   physics=str(entry.get("physics", "fast")),
                   prefix=str(entry.get("prefix", "TS_sim")),
                   ranges=layered_ranges(entry.get("ranges"), where, root) if ranges else {},
                   tilt_ranges=(layered_ranges(entry.get("tilt_ranges"), where, root)
                                if ranges else {}),
                   shape_zyx=(tuple(int(n) for n in entry["shape_zyx"])
                              if "shape_zyx" in entry else None))


def load_manifest(path: str | Path, root: str | Path = ".", ranges: bool = True
                  ) -> dict[str, list[SimCall]]:
    """{set name: its calls}; ranges files resolve against `root` (the project root);
    `ranges` False: the calls' projects and runs alone, their ranges left unread."""
    import yaml

    path, root = Path(path), Path(root)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the dataset manifest: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: the manifest must map set names to lists of calls")
    sets = {}
    for name, entries in doc.items():
        if not isinstance(entries, list) or not entries:
            raise DataError(f"{path}: set {name!r} must be a non-empty list of calls")
        sets[name] = [_parse_call(e, f"{path}: {name}[{k}]", root, ranges)
                      for k, e in enumerate(entries)]
    return sets


CHECKOUT = Path(__file__).resolve().parents[1]


def _checkout_sets(root: str | Path | None) -> tuple[Path, dict[str, list[SimCall]]]:
    """(root, the sets of its manifest, read for their projects and runs alone), or no sets
    where the manifest cannot be read (an installed package has none)."""
    root = Path(root or CHECKOUT)
    try:
        return root, load_manifest(root / DEFAULT_MANIFEST, root, ranges=False)
    except DataError:
        return root, {}


def _n_runs(calls: list[SimCall]) -> int:
    return sum(len(c.indices) for c in calls)


def sets_making(project: str | Path, runs: tuple[str, ...] | list[str] = (),
                root: str | Path | None = None) -> list[str]:
    """The sets of the checkout's manifest that write `project` (and make every one of
    `runs` in it), the fewest runs first: a benchmark's or the shipped default's recipe names
    projects and runs a fresh checkout does not have yet. [] where no set does, or the
    manifest cannot be read. `root`: the checkout's (default)."""
    root, sets = _checkout_sets(root)
    target = Path(project).expanduser().resolve()
    making = []
    for name, calls in sets.items():
        made = [c for c in calls if (root / c.out).resolve() == target]
        if made and set(runs) <= {r for c in made for r in c.run_names}:
            making.append((_n_runs(calls), name))
    return [name for _, name in sorted(making)]


def make_command(sets: list[str], root: str | Path | None = None) -> str:
    """The command that makes `sets` of the manifest of `root` (default: this checkout),
    with --root where it is said outside that folder: run there without it, `make` reads
    the manifest of the folder it is run in."""
    home = Path(root or CHECKOUT)
    here = "" if Path.cwd().resolve() == home.resolve() else f" --root {home}"
    return f"python -m data_tools.datasets make {' '.join(sets)}{here}"


def making_hint(project: str | Path, runs: tuple[str, ...] | list[str] = ()) -> str:
    """For an error: the command that makes a missing simulated project (or its runs), or
    "" where the manifest makes neither."""
    sets = sets_making(project, runs)
    if not sets:
        return ""
    return f" (simulated by configs/datasets.yaml: {make_command(sets[:1])})"


def sets_covering(projects: list[str], root: str | Path | None = None) -> list[str]:
    """A few sets of the checkout's manifest that between them write every project of
    `projects` the manifest writes: each time the set writing the most of those not yet
    written (then the fewest runs), so a recipe's projects come from the sets it was made
    from (tune_runs_63's seven projects: tune_45 and tune_alt), not each from its smallest
    writer."""
    root, sets = _checkout_sets(root)
    targets = {Path(p).expanduser().resolve() for p in projects}
    writes = {name: {(root / c.out).resolve() for c in calls} & targets
              for name, calls in sets.items()}
    size = {name: _n_runs(calls) for name, calls in sets.items()}
    chosen, left = [], set().union(*writes.values())
    while left:
        best = min(writes, key=lambda n: (-len(writes[n] & left), size[n], n))
        chosen.append(best)
        left -= writes[best]
    return chosen


def sets_not_made(projects: list[str] | list[Path], sets: list[str],
                  root: str | Path | None = None) -> list[str]:
    """Of `sets` (an argument file's `# sets:` line), those with a run it writes into one of
    `projects` that the project has not recorded (simulation.json): a recipe reading a
    project whole would read fewer runs without a word where a set that writes into it was
    never made or was interrupted. A set the manifest has not is a DataError."""
    root, manifest = _checkout_sets(root)
    unknown = [s for s in sets if s not in manifest]
    if manifest and unknown:
        raise DataError(f"the argument file's `# sets:` line names {', '.join(unknown)}, which "
                        f"{root / DEFAULT_MANIFEST} has not (its sets: {', '.join(manifest)})")
    targets = {Path(p).expanduser().resolve(): Path(p).expanduser() for p in projects}
    recorded: dict[Path, set[str]] = {}  # each project's simulation.json read once

    def made(call: SimCall) -> bool:
        project = targets.get((root / call.out).resolve())
        if project is None or not project.exists():
            return True  # not read here, or missing (require_projects names it)
        if project not in recorded:
            recorded[project] = recorded_runs(project)
        return set(call.run_names) <= recorded[project]

    return [name for name in sets if not all(made(c) for c in manifest.get(name, []))]


def require_projects(projects: list[str] | list[Path], sets: list[str] | None = None,
                     root: str | Path | None = None) -> None:
    """Nothing where every project exists, else one error naming every one that does not,
    with the sets of the checkout's manifest that make them all: a recipe or bench naming
    14 projects of two sets (configs/heldout_44.args) is set up by one command, not one
    missing project at a time. `sets`: the sets an argument file declares its runs made by
    (`# sets:`, ArgumentFileParser): those are named, and one not made in full is an error
    too (sets_not_made)."""
    missing = [str(p) for p in projects if not Path(p).expanduser().exists()]
    unmade = sets_not_made(projects, sets, root) if sets else []
    if not missing and not unmade:
        return
    said = [f"{', '.join(missing)}: {'projects do' if len(missing) > 1 else 'project does'} "
            "not exist"] if missing else []
    if not sets:
        making = sets_covering(missing, root)
        how = (f"; configs/datasets.yaml makes {'them' if len(missing) > 1 else 'it'}: "
               f"{make_command(making, root)} (an argument file's comment names every set "
               "its runs need)" if making else "")
        raise DataError(said[0] + how)
    if unmade:
        said.append(f"the runs of {'sets' if len(unmade) > 1 else 'set'} {', '.join(unmade)} "
                    "are not all made")
    home, manifest = _checkout_sets(root)
    gone = {Path(p).expanduser().resolve(): p for p in missing}
    writes = {s: {(home / c.out).resolve() for c in manifest.get(s, [])} for s in sets}
    making = [s for s in sets if s in unmade or writes[s] & gone.keys()]
    making += [s for s in sets_covering([p for r, p in gone.items()
                                         if not any(r in w for w in writes.values())], root)
               if s not in making]
    how = (f"; {make_command(making, root)} makes them (the sets the argument file names)"
           if making else "")
    raise DataError("; ".join(said) + how)


def recorded_runs(project: Path) -> set[str]:
    """The runs simulate has finished in `project` (its simulation.json, written last)."""
    rec = project / "simulation.json"
    if not rec.exists():
        return set()
    try:
        return set(json.loads(rec.read_text()).get("runs", {}))
    except ValueError as exc:
        raise DataError(f"{rec}: not valid JSON ({exc}); delete the project to remake it"
                        ) from exc


def run_call(call: SimCall, root: Path) -> None:
    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import FULL_SHAPE_ZYX, simulate_project
    from data_tools.tilt_ranges import TiltRanges

    ranges = SimRanges.from_dict({**asdict(SimRanges()), **call.ranges})
    tilt = TiltRanges.from_dict(call.tilt_ranges)
    simulate_project(root / call.out, max(call.indices) + 1, call.seed,
                     call.shape_zyx or FULL_SHAPE_ZYX, ranges=ranges,
                     run_prefix=call.prefix, progress=False, physics=call.physics,
                     tilt=tilt, indices=list(call.indices))


def _made(call: SimCall, root: Path) -> bool:
    return set(call.run_names) <= recorded_runs(root / call.out)


def make_sets(names: list[str], sets: dict[str, list[SimCall]], root: Path,
              dry_run: bool = False, log=print) -> list[SimCall]:
    """Runs every call of the named sets whose runs are not all recorded yet; returns them."""
    missing = [n for n in names if n not in sets]
    if missing:
        raise DataError(f"unknown set(s) {missing}; the manifest has {sorted(sets)}")
    todo, seen = [], set()
    for call in (c for n in names for c in sets[n]):
        key = (call.out, tuple(call.run_names))
        if key in seen or _made(call, root):
            continue
        seen.add(key)
        todo.append(call)
    for k, call in enumerate(todo, 1):
        log(f"[{k}/{len(todo)}] {call.out}: {', '.join(call.run_names)} ({call.physics})")
        if dry_run:
            continue
        if _made(call, root):  # another `make` of an overlapping set recorded it meanwhile
            log("        already made (by another make)")
            continue
        t0 = time.perf_counter()
        run_call(call, root)
        log(f"        {time.perf_counter() - t0:.0f} s")
    if not todo:
        log("every run of " + ", ".join(names) + " is already there")
    return todo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["list", "make"])
    ap.add_argument("sets", nargs="*")
    ap.add_argument("--manifest", default=DEFAULT_MANIFEST)
    ap.add_argument("--root", default=".", help="project root the manifest's paths are under")
    ap.add_argument("--dry-run", action="store_true", help="print the calls make would run")
    a = expand_home(ap.parse_args(argv))
    root = Path(a.root)
    try:
        sets = load_manifest(root / a.manifest, root)
        if a.command == "list":
            for name, calls in sets.items():
                runs = [r for c in calls for r in c.run_names]
                done = sum(r in recorded_runs(root / c.out) for c in calls for r in c.run_names)
                print(f"{name}: {len(runs)} runs in {len({c.out for c in calls})} "
                      f"project(s), {done} made")
            return 0
        if not a.sets:
            ap.error("make needs at least one set name")
        make_sets(a.sets, sets, root, dry_run=a.dry_run, log=lambda s: print(s, flush=True))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
