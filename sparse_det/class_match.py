"""Which of a checkpoint's classes each class of a project's config is.

Labs and the CZ cryoET Data Portal name the same complexes in many ways: copick's portal
layer names an object after its annotations' object name, lower case with hyphens
("cytosolic-ribosome", "ferritin-complex"), and labs' configs say "apoferritin" or "80S".
Matched by exact name alone, a class the checkpoint knows under another name was dropped by
infer and learnt from nothing by finetune. A project's class is the checkpoint's class

1. that the user's class map names for it (`--class-map NAME=CLASS`; `NAME=`: none),
2. of the same name,
3. of the same name written another way (case, hyphens, spaces, underscores, dots),
4. of which it is a known other name (data_tools.particles.OTHER_NAMES),
5. with the same PDB ID,
6. with the same identifier (copick's `identifier`: a Gene Ontology ID such as the portal's
   GO:0022626, cytosolic ribosome, or a UniProtKB accession; data_tools.particles.identifier_of),
7. with the same EMDB ID (copick's `emdb_id`: the map the object was picked with),

each rule taking only the classes the rules before it left, and only where it gives one
answer: two classes a rule would pair with one are left unmatched, and said so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.particles import (
    DataError,
    ParticleTable,
    canonical,
    emdb_key,
    identifier_of,
    name_key,
    pdb_key,
)

RULES = ("your class map", "the same name", "the same name written another way",
         "a known other name for it", "the same PDB ID", "the same identifier",
         "the same EMDB ID")
# An unmatched checkpoint class whose name a matched one takes gets this suffix, so that a
# renamed checkpoint never holds two classes of one name (its picks are dropped anyway).
SET_ASIDE = "~checkpoint"
# A matched class whose radius in the project's config is off the checkpoint's by more than
# this factor is warned of: F4 hits lie within half the config's radius, and a fine-tune
# labels each particle's voxels out to it. copick's data-portal configs give every object
# a radius of 50 Å (a ribosome's is about 150).
RADIUS_FACTOR = 1.5


@dataclass
class ClassMatch:
    """pairs: project class → checkpoint class; how: project class → the rule (RULES);
    unsure: lines on classes a rule would have paired twice."""

    pairs: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    unsure: list[str] = field(default_factory=list)

    def renaming(self, known: list[str]) -> dict[str, str]:
        """checkpoint class → the name it has in the project; an unmatched class whose name
        a matched one takes is set aside (SET_ASIDE)."""
        out = {ckpt: proj for proj, ckpt in self.pairs.items()}
        taken = set(out.values())
        for name in known:
            if name not in out and name in taken:
                out[name] = name + SET_ASIDE
        return out

    def unlisted(self, known: list[str]) -> list[str]:
        """The checkpoint's classes no project class is."""
        return [n for n in known if n not in self.pairs.values()]

    def unpicked(self, listed: list[str]) -> list[str]:
        """The project's classes no checkpoint class is."""
        return [n for n in listed if n not in self.pairs]

    def far_radii(self, known: ParticleTable, listed: ParticleTable
                  ) -> dict[str, tuple[float, float]]:
        """{project class: (its radius in the config, the checkpoint's class's)} for the
        matched classes whose two radii differ by more than RADIUS_FACTOR."""
        out = {}
        for proj, ckpt in self.pairs.items():
            mine, theirs = listed[proj].radius_A, known[ckpt].radius_A
            if max(mine, theirs) > RADIUS_FACTOR * min(mine, theirs):
                out[proj] = (mine, theirs)
        return out

    def radius_notes(self, known: ParticleTable, listed: ParticleTable) -> list[str]:
        """One line per class of far_radii."""
        return [f"the project's {proj!r} has a radius of {mine:g} Å, the checkpoint's "
                f"{self.pairs[proj]!r} {theirs:g} Å: F4 counts a pick within half the config's "
                "radius (finetune trains with the checkpoint's, unless --config-radii); "
                "if the config's is a "
                "placeholder (copick's data-portal configs say 50 Å for every object), set "
                "the complex's own there (python -m sparse_det.classes --set-radii)"
                for proj, (mine, theirs) in self.far_radii(known, listed).items()]

    def warnings(self, known: ParticleTable, listed: ParticleTable) -> list[str]:
        """What a user should check: classes a rule would have paired twice, then radii
        far apart (radius_notes)."""
        return self.unsure + self.radius_notes(known, listed)

    def renamed(self) -> list[str]:
        """One phrase per pair of two names: 'the project's A is the checkpoint's B (how)'."""
        return [f"the project's {p!r} is the checkpoint's {c!r} ({self.how[p]})"
                for p, c in self.pairs.items() if p != c]


def match_classes(known: ParticleTable, listed: ParticleTable,
                  class_map: dict[str, str] | None = None) -> ClassMatch:
    """The checkpoint's classes (`known`) matched to the project's (`listed`) by the rules
    of this module's docstring. A class map naming a class neither has is refused."""
    match = ClassMatch()
    free_known = dict.fromkeys(known.names)
    free_listed = dict.fromkeys(listed.names)
    for proj, ckpt in (class_map or {}).items():
        if proj not in listed:
            raise DataError(f"--class-map {proj}={ckpt}: the project lists no class {proj!r} "
                            f"(it lists {', '.join(listed.names)})")
        if ckpt and ckpt not in known:
            raise DataError(f"--class-map {proj}={ckpt}: the checkpoint has no class "
                            f"{ckpt!r} (it has {', '.join(known.names)})")
        del free_listed[proj]
        if ckpt:
            if ckpt not in free_known:
                raise DataError(f"--class-map names the checkpoint's {ckpt!r} twice")
            del free_known[ckpt]
            match.pairs[proj], match.how[proj] = ckpt, RULES[0]
    keys = (lambda n, table: n, lambda n, table: canonical(n),
            lambda n, table: name_key(n), lambda n, table: pdb_key(table[n].pdb_id),
            lambda n, table: identifier_of(table[n]), lambda n, table: emdb_key(table[n].emdb_id))
    for rule, key in zip(RULES[1:], keys, strict=True):
        _pair_by(match, rule, key, known, listed, free_known, free_listed)
    return match


def _pair_by(match: ClassMatch, rule: str, key, known: ParticleTable, listed: ParticleTable,
             free_known: dict, free_listed: dict) -> None:
    """Pairs the free classes whose `key` agrees, where exactly one of each side has it."""
    by_key: dict[str, tuple[list[str], list[str]]] = {}
    for n in free_known:
        by_key.setdefault(key(n, known), ([], []))[0].append(n)
    for n in free_listed:
        by_key.setdefault(key(n, listed), ([], []))[1].append(n)
    for k, (ckpts, projs) in by_key.items():
        if not k or not ckpts or not projs:
            continue
        if len(ckpts) == 1 == len(projs):
            match.pairs[projs[0]], match.how[projs[0]] = ckpts[0], rule
            del free_known[ckpts[0]], free_listed[projs[0]]
        else:
            match.unsure.append(f"the project's {projs} and the checkpoint's {ckpts} share "
                                f"{rule} ({k}); none of them is matched by it "
                                f"(--class-map NAME=CLASS says which is which)")


def as_listed(names, particles: ParticleTable, say):
    """A pandas Series of particle names (a file's, a submission's) as the project's table
    calls them (ParticleTable.called: a CSV's "ribosome" is a portal config's
    "cytosolic-ribosome"); each name read so is told to `say`, a name of no class kept as
    it is, for the caller to refuse."""
    mapped = {n: particles.called(n) for n in names.dropna().unique() if n not in particles}
    for n, listed in mapped.items():
        if listed:
            say(f"particle {n!r} read as the project's {listed!r}")
    return names.map(lambda n: mapped.get(n) or n)


def parse_class_map(items: list[str] | None) -> dict[str, str]:
    """`NAME=CLASS` words (the project's class NAME is the checkpoint's CLASS; `NAME=`: it
    is none of them) as a dict."""
    out: dict[str, str] = {}
    for item in items or ():
        proj, sep, ckpt = item.partition("=")
        if not sep or not proj.strip():
            raise DataError(f"--class-map {item!r}: write NAME=CLASS (the project's class "
                            "NAME is the checkpoint's CLASS; NAME= for none)")
        if proj.strip() in out:
            raise DataError(f"--class-map names {proj.strip()!r} twice")
        out[proj.strip()] = ckpt.strip()
    return out


def add_class_map_argument(ap) -> None:
    ap.add_argument("--class-map", nargs="+", metavar="NAME=CLASS",
                    help="the project's class NAME is the checkpoint's CLASS (NAME=: none "
                         "of them); unmapped classes match by name, by the name written "
                         "another way or a known other name (apoferritin, "
                         "cytosolic-ribosome, VLP, ...), then by PDB ID, then by "
                         "identifier (GO:..., UniProtKB:...)")


def rename_classes(doc: dict, renaming: dict[str, str]) -> dict:
    """A copy of checkpoint document `doc` whose classes are called by `renaming`'s names:
    the particle table, every dict keyed by class (thresholds, calibration, the tuned sets,
    the rescorer's, the config's class weights) and every class name in a list. The weights
    and the rest of the config are `doc`'s own objects, untouched."""
    def walk(obj):
        if isinstance(obj, dict):
            return {renaming.get(k, k) if isinstance(k, str) else k: walk(v)
                    for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(walk(v) for v in obj)
        return renaming.get(obj, obj) if isinstance(obj, str) else obj

    # The config holds settings, whose words may be anything ("class", "tomogram"); of it,
    # only the class weights are keyed by class.
    out = {k: (v if k in ("model", "config") else walk(v)) for k, v in doc.items()}
    loss = doc.get("config", {}).get("loss", {})
    if loss.get("class_weights"):
        out["config"] = {**doc["config"], "loss": {**loss, "class_weights": walk(
            loss["class_weights"])}}
    return out


def named_as_listed(checkpoint: str | Path, listed: ParticleTable,
                    class_map: dict[str, str] | None, work: Path, say) -> Path:
    """`checkpoint`, or, where `listed` (a project's classes) calls the checkpoint's by
    other names, a copy in `work` whose classes bear the project's names. Fine-tuned or
    tuned from it, every comparison by name (the base's picks against the annotations, its
    thresholds, the classes a fine-tune keeps) holds, and what is written calls the classes
    as the project does. `say`: where the pairs are told."""
    import torch

    from data_tools.atomic import atomic_path
    from sparse_det.checkpoint import read_checkpoint

    doc = read_checkpoint(checkpoint)
    known = ParticleTable.from_list(doc["particles"])
    match = match_classes(known, listed, class_map)
    for line in match.renamed() + match.warnings(known, listed):
        say(f"{Path(checkpoint).name}: {line}")
    renaming = {k: v for k, v in match.renaming(known.names).items() if k != v}
    if not renaming:
        return Path(checkpoint)
    # Named by the checkpoint and the pairs: fine-tunes from another map never resume from
    # this one, and tune's several checkpoints of one file name never share a copy.
    key = hashlib.sha1(json.dumps([str(Path(checkpoint).resolve()),
                                   sorted(renaming.items())]).encode()).hexdigest()[:8]
    dest = Path(work) / f"{Path(checkpoint).stem}_as_named_{key}.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        torch.save(rename_classes(doc, renaming), tmp)
    return dest
