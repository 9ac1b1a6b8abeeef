"""The particle table: name, radius (Å), metric weight, label. One source for every radius."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input data: the message names the file or run and the problem."""


@dataclass(frozen=True)
class ParticleType:
    name: str
    radius_A: float
    weight: float
    label: int
    pdb_id: str = ""
    color: tuple[int, int, int, int] = (128, 128, 128, 128)
    # copick's `identifier` (older configs: `go_id`): a Gene Ontology ID or a UniProtKB
    # accession, as the data portal annotates its objects.
    identifier: str = ""
    # copick's `emdb_id`: the EMDB entry of the map the object was picked with ("EMD-1234").
    emdb_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# docs/formats.md: the competition's particles; beta-amylase is labelled, weight 0 (unscored).
# Identifiers: the data portal's annotation objects for the competition's dataset (10440).
COMPETITION_PARTICLES: tuple[ParticleType, ...] = (
    ParticleType("apo-ferritin", 60.0, 1.0, 1, "4V1W", (0, 117, 220, 128), "GO:0070288"),
    ParticleType("beta-amylase", 65.0, 0.0, 2, "1FA2", (153, 63, 0, 128), "UniProtKB:P10537"),
    ParticleType("beta-galactosidase", 90.0, 2.0, 3, "6X1Q", (76, 0, 92, 128),
                 "UniProtKB:P00722"),
    ParticleType("ribosome", 150.0, 1.0, 4, "6EK0", (0, 92, 49, 128), "GO:0022626"),
    ParticleType("thyroglobulin", 130.0, 2.0, 5, "6SCJ", (43, 206, 72, 128),
                 "UniProtKB:P01267"),
    ParticleType("virus-like-particle", 135.0, 1.0, 6, "6N4V", (255, 204, 153, 128),
                 "GO:0170047"),
)

# Complexes the simulator draws beyond the competition's (data_tools/shapes.py), for a
# project with a class no checkpoint has learnt: `simulate --extra-particles proteasome`.
EXTRA_PARTICLES: tuple[ParticleType, ...] = (
    ParticleType("proteasome", 80.0, 1.0, 7, "1RYP", (230, 159, 0, 128)),
)

# Names the competition's complexes go by elsewhere (copick's data-portal layer names an
# object after its annotations' object name, lower case with hyphens: "cytosolic-ribosome";
# labs write "apoferritin", "80S"), as canonical() writes them. Only names of the same
# complex: a 70S ribosome or a holoferritin is another particle.
OTHER_NAMES: dict[str, tuple[str, ...]] = {
    "apo-ferritin": ("apoferritincomplex", "ferritincomplex", "ferritin"),
    "beta-amylase": ("bamylase", "betaamylasetetramer"),
    "beta-galactosidase": ("bgal", "betagal", "bgalactosidase", "lacz",
                           "betagalactosidasetetramer"),
    "ribosome": ("80s", "80sribosome", "ribosome80s", "cytosolicribosome",
                 "cytoplasmicribosome", "eukaryoticribosome", "ribosomes"),
    "thyroglobulin": ("tg", "thyroglobulindimer"),
    "virus-like-particle": ("vlp", "vlps", "viruslikecapsid", "pp7vlp", "pp7capsid",
                            "viruslikeparticles"),
}


def canonical(name: str) -> str:
    """`name` lower case without separators: "Apo_Ferritin" and "apo-ferritin" agree."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES = {alias: canonical(name) for name, others in OTHER_NAMES.items()
            for alias in (*others, canonical(name))}


def name_key(name: str) -> str:
    """One key for every name of a complex: canonical(), and OTHER_NAMES' read as theirs."""
    key = canonical(name)
    return _ALIASES.get(key, key)


def pdb_key(pdb_id: str) -> str:
    """A PDB ID as one key: "6x1q", "PDB-6X1Q" (copick's data-portal configs) and
    "pdb:6X1Q" agree; "" for none."""
    return re.sub(r"^PDB[-_:\s]*", "", pdb_id.strip().upper())


def identifier_key(identifier: str) -> str:
    """A GO ID or UniProtKB accession as one key: "GO:0022626", "go_0022626" agree, and
    "UniProtKB:P00722", "uniprot:p00722", "P00722"; "" for none."""
    key = re.sub(r"\s+", "", identifier.strip().upper())
    key = re.sub(r"^GO[-_:]?(?=\d)", "GO:", key)
    return re.sub(r"^UNIPROT(KB)?[-_:]", "", key)


def emdb_key(emdb_id: str) -> str:
    """An EMDB ID as one key: "EMD-11638", "emd_11638", "EMDB:11638" and "11638" agree;
    "" for none; anything else as written, upper case."""
    key = re.sub(r"\s+", "", emdb_id.strip().upper())
    number = re.sub(r"^EMD(B)?[-_:]?(?=\d)", "", key)
    return f"EMD-{number}" if number.isdigit() else key


# Metric weights are not part of a copick config; they come from the competition, for its
# complexes under any of their names, PDB IDs or identifiers (beta-amylase, weight 0, stays
# unscored).
_COMPETITION = {name_key(p.name): p for p in COMPETITION_PARTICLES}
_KNOWN = ({name_key(p.name): p for p in COMPETITION_PARTICLES + EXTRA_PARTICLES}
          | {pdb_key(p.pdb_id): p for p in COMPETITION_PARTICLES + EXTRA_PARTICLES}
          | {identifier_key(p.identifier): p for p in COMPETITION_PARTICLES if p.identifier})


def competition_weight(name: str, pdb_id: str = "", identifier: str = "") -> float:
    """The competition's metric weight of the complex called `name` (with `pdb_id`,
    `identifier`); 1 for a complex of another kind (the simulator's extra ones are 1)."""
    known = known_complex(name, pdb_id, identifier)
    return known.weight if known else 1.0


def identifier_of(particle: ParticleType) -> str:
    """`particle`'s identifier as a key (identifier_key); for a competition complex that
    names none (the shipped checkpoints' tables), the data portal's for it."""
    own = _COMPETITION.get(name_key(particle.name))
    return identifier_key(particle.identifier) or (identifier_key(own.identifier) if own else "")


def known_complex(name: str, pdb_id: str = "", identifier: str = "") -> ParticleType | None:
    """The competition's (or the simulator's extra) complex so named or so identified."""
    for key in (name_key(name), pdb_key(pdb_id), identifier_key(identifier)):
        if key and key in _KNOWN:
            return _KNOWN[key]
    return None


class ParticleTable:
    """An ordered set of particle types; index i is class i+1 of the network (0 = background)."""

    def __init__(self, particles: tuple[ParticleType, ...] | list[ParticleType]):
        if not particles:
            raise DataError("particle table is empty")
        self.particles = tuple(sorted(particles, key=lambda p: p.label))
        self._by_name = {p.name: p for p in self.particles}
        if len(self._by_name) != len(self.particles):
            raise DataError("particle table has duplicate names")

    def __iter__(self):
        return iter(self.particles)

    def __len__(self) -> int:
        return len(self.particles)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ParticleType:
        try:
            return self._by_name[name]
        except KeyError:
            raise DataError(
                f"unknown particle {name!r}; known: {', '.join(self.names)}"
            ) from None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.particles]

    @property
    def scored(self) -> list[ParticleType]:
        return [p for p in self.particles if p.weight > 0]

    def called(self, name: str) -> str | None:
        """The class `name` names: itself, else the one class whose name is `name` written
        another way or another name of the same complex (name_key: "80S" names a table's
        "cytosolic-ribosome"), else, for a competition complex, the one class with its PDB
        ID; None where none or several do."""
        if name in self._by_name:
            return name
        found = [n for n in self.names if name_key(n) == name_key(name)]
        own = _COMPETITION.get(name_key(name))
        pdb = pdb_key(own.pdb_id) if own else ""
        if not found and pdb:
            found = [p.name for p in self.particles if pdb_key(p.pdb_id) == pdb]
        return found[0] if len(found) == 1 else None

    def class_index(self, name: str) -> int:
        """Network class index of a particle: 1..K (0 is background)."""
        return self.names.index(self[name].name) + 1

    def to_list(self) -> list[dict]:
        return [p.to_dict() for p in self.particles]

    @classmethod
    def from_list(cls, items: list[dict]) -> ParticleTable:
        return cls([ParticleType(**{**d, "color": tuple(d.get("color", (128,) * 4))})
                    for d in items])

    @classmethod
    def competition(cls, extra: list[str] | tuple[str, ...] = ()) -> ParticleTable:
        """The competition's particles, and `extra` ones of EXTRA_PARTICLES by name."""
        known = {p.name: p for p in EXTRA_PARTICLES}
        unknown = sorted(set(extra) - set(known))
        if unknown:
            raise DataError(f"no particle {unknown} to add; the simulator draws "
                            f"{sorted(known)} beyond the competition's")
        return cls(COMPETITION_PARTICLES + tuple(known[n] for n in dict.fromkeys(extra)))

    @classmethod
    def from_copick_config(cls, path: str | Path) -> ParticleTable:
        """Reads `pickable_objects` of a copick config JSON (weights from the competition)."""
        path = Path(path)
        try:
            cfg = json.loads(path.read_text())
            objects = cfg["pickable_objects"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable copick config ({exc})") from exc
        particles = []
        for obj in objects:
            if not obj.get("is_particle", True):
                continue
            try:
                particles.append(_from_pickable_object(obj))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}: bad pickable object {obj!r} ({exc})") from exc
        if not particles:
            raise DataError(
                f"{path}: its pickable_objects list no particle (is_particle true); add the "
                "complexes to pick, with their names, labels and radii in Å")
        return cls(particles)


def _from_pickable_object(obj: dict) -> ParticleType:
    """One of a copick config's `pickable_objects`. copick leaves `radius` optional: where a
    config gives none, a known complex (known_complex) gets its own; another is refused."""
    name = obj["name"]
    pdb_id = str(obj.get("pdb_id") or "")
    identifier = str(obj.get("identifier") or obj.get("go_id") or "")
    radius = obj.get("radius")
    if radius is None:
        known = known_complex(name, pdb_id, identifier)
        if known is None:
            raise ValueError(f"no radius for {name!r}, a complex of no known size: give "
                             "its radius in Å")
        radius = known.radius_A
    return ParticleType(
        name=name, radius_A=float(radius),
        weight=float(obj.get("weight", competition_weight(name, pdb_id, identifier))),
        label=int(obj["label"]), pdb_id=pdb_id,
        color=tuple(obj.get("color") or (128, 128, 128, 128)), identifier=identifier,
        emdb_id=str(obj.get("emdb_id") or ""))
