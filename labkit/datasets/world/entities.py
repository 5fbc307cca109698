"""The fictional world's structure (chapters 18-20): entities and the true triples between them.

No language model has read about Orvane Kestrel or the Amber Compact, so a retriever or reader that
answers questions about them must have found the answer in *our* text. :func:`make_world` builds the
structured world from a seed; it is used for generating and scoring only (retrieval and extraction work
from the text of :mod:`labkit.datasets.world.articles`).

Triple relations (subject type → object type):

    born_in (person → city), born_year (person → year), works_for (person → org),
    founded_by (org → person), founded_year (org → year), headquartered_in (org → city),
    member_of (org → faction), located_in (city → region), made_by (product → org),
    designed_by (product → person), launched_year (product → year), allied_with / rival_of
    (faction ↔ faction), held_in (event → city), event_year (event → year), participant (event → org)
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["RELATIONS", "LITERAL_RELATIONS", "SYMMETRIC_RELATIONS", "Entity", "World", "make_world"]

#: Every relation of the world's triples.
RELATIONS = (
    "born_in", "born_year", "works_for", "founded_by", "founded_year", "headquartered_in", "member_of",
    "located_in", "made_by", "designed_by", "launched_year", "allied_with", "rival_of", "held_in",
    "event_year", "participant",
)
#: relations whose object is a year (a literal), not an entity
LITERAL_RELATIONS = ("born_year", "founded_year", "launched_year", "event_year")
SYMMETRIC_RELATIONS = ("allied_with", "rival_of")

Triple = tuple[str, str, str]


@dataclass
class Entity:
    """One thing in the world. ``aliases`` are other names the text uses for it."""

    id: str
    name: str
    type: str  # person | org | city | region | faction | product | event
    aliases: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    """The structured world: its seed, the entities by id and the true triples between them."""

    seed: int
    entities: dict[str, Entity]
    triples: list[Triple]  # (subject name, relation, object name or year as str)

    def by_type(self, t: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.type == t]

    def name(self, eid: str) -> str:
        return self.entities[eid].name

    def objects(self, subj: str, rel: str) -> list[str]:
        return [o for s, r, o in self.triples if s == subj and r == rel]

    def subjects(self, rel: str, obj: str) -> list[str]:
        return [s for s, r, o in self.triples if r == rel and o == obj]


# --------------------------------------------------------------------------------------- names
_ON = ["Or", "Va", "Ke", "Dru", "Sel", "Ma", "Ty", "Ilo", "Bre", "Ca", "Ny", "Fen", "Ro", "Zu", "Ha",
       "Lio", "Quen", "Ane", "Te", "Ysa", "Gal", "Mir", "Pel", "Sor"]
_MID = ["va", "ri", "lo", "de", "na", "mo", "the", "li", "ba", "ro"]
_END = ["ne", "ris", "ton", "ra", "dek", "lune", "sa", "bel", "wyn", "tho", "rec", "nia", "dor", "lis",
        "mar", "vik", "en", "os"]
_SUR1 = ["Kes", "Mar", "Hal", "Brin", "Cor", "Dav", "Ell", "Fro", "Gre", "Hol", "Ist", "Jor", "Lam",
         "Morr", "Nes", "Oak", "Pra", "Quill", "Rav", "Stel", "Thorn", "Ul", "Vos", "Wend"]
_SUR2 = ["trel", "sk", "vane", "ley", "wick", "ford", "mont", "gard", "sby", "croft", "ner", "hollow",
         "ridge", "vale", "worth", "mere"]
_PLACE1 = ["Dun", "Cran", "Vel", "Ash", "Brack", "Cor", "Eld", "Fal", "Gant", "Hes", "Kil", "Lorn",
           "Mor", "Ost", "Penn", "Rath"]
_PLACE2 = ["mere", "noch", "haven", "port", "wick", "by", "ford", "holm", "stead", "moor", "reach", "gate"]
_ORG_KIND = ["Optics", "Foundry", "Shipworks", "Instruments", "Textiles", "Press", "Mills", "Telegraph",
             "Chemicals", "Motors", "Glassworks", "Observatory"]
_PRODUCT_KIND = {"Optics": "spectrometer", "Foundry": "boiler", "Shipworks": "steam launch",
                 "Instruments": "barometer", "Textiles": "loom", "Press": "printing press",
                 "Mills": "grain mill", "Telegraph": "telegraph key", "Chemicals": "dye",
                 "Motors": "motor carriage", "Glassworks": "lens", "Observatory": "telescope"}
_PRODUCT_STEM = ["Lumen", "Vesper", "Corvid", "Halcyon", "Meridian", "Solace", "Tern", "Aster",
                 "Kestrel", "Nimbus", "Orrery", "Pilgrim", "Quartz", "Rune", "Sable", "Tally"]
_REGIONS = ["Saltmarch", "Upper Velde", "Greywater Coast"]
_FACTIONS = ["Amber Compact", "Tidewater League", "Iron Circle"]
_FACTION_ZH = ["琥珀同盟", "潮水联盟", "铁环会"]
_NICK = ["the Lantern", "the Cartographer", "Old Flint", "the Heron", "the Quiet Hand", "the Tinker",
         "the Comet", "the Navigator", "the Archivist", "the Bellwright", "the Owl", "the Magpie"]
_EVENTS = ["Accord of {c}", "Great Fire of {c}", "{c} Exhibition", "Siege of {c}", "{c} Strike"]


def _unique(rng: random.Random, make, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        s = make()
        # no duplicates, and no name is a word of another (keeps alias resolution unambiguous)
        if s in taken or any(s in t.split() or t in s.split() for t in taken):
            continue
        taken.add(s)
        out.append(s)
    return out


#: ``add(entity)``: register an entity in the world being built (and return it).
AddFn = Callable[[Entity], Entity]


def _check_sizes(n_people: int, n_orgs: int, n_products: int, n_events: int) -> None:
    if n_orgs > len(_ORG_KIND) or n_products > len(_PRODUCT_STEM) or n_events > len(_EVENTS):
        raise ValueError(f"at most {len(_ORG_KIND)} orgs, {len(_PRODUCT_STEM)} products, {len(_EVENTS)} events")
    if n_people < 2 * n_orgs:
        raise ValueError(f"n_people ({n_people}) must be >= 2 * n_orgs ({2 * n_orgs}): each org needs a founder "
                         "and a designer")


def _places(rng: random.Random, taken: set[str], add: AddFn, triples: list[Triple],
            n_cities: int) -> tuple[list[Entity], list[Entity]]:
    """Regions, cities (named with ``rng``) and the three factions with their alliances: ``(cities, factions)``."""
    regions = [add(Entity(f"region:{i}", n, "region")) for i, n in enumerate(_REGIONS)]
    city_names = _unique(rng, lambda: rng.choice(_PLACE1) + rng.choice(_PLACE2), n_cities, taken)
    cities = [add(Entity(f"city:{i}", n, "city")) for i, n in enumerate(city_names)]
    for i, c in enumerate(cities):
        r = regions[i % len(regions)]
        c.attrs["region"] = r.name
        triples.append((c.name, "located_in", r.name))
    factions = [add(Entity(f"faction:{i}", n, "faction", attrs={"zh": _FACTION_ZH[i]})) for i, n in enumerate(_FACTIONS)]
    # faction relations: 0-1 allied, 1-2 rivals, 0-2 rivals
    triples += [(_FACTIONS[0], "allied_with", _FACTIONS[1]), (_FACTIONS[1], "rival_of", _FACTIONS[2]),
                (_FACTIONS[0], "rival_of", _FACTIONS[2])]
    factions[0].attrs["allied_year"] = 1948
    return cities, factions


def _people(rng: random.Random, taken: set[str], add: AddFn, n_people: int) -> list[Entity]:
    """People: unique first names and surnames, a gender each, the first ones a nickname."""
    firsts = _unique(rng, lambda: rng.choice(_ON) + (rng.choice(_MID) if rng.random() < 0.3 else "") + rng.choice(_END),
                     n_people, taken)
    lasts = _unique(rng, lambda: rng.choice(_SUR1) + rng.choice(_SUR2), n_people, taken)
    people = []
    for i in range(n_people):
        p = add(Entity(f"person:{i}", f"{firsts[i]} {lasts[i]}", "person", [lasts[i]],
                       {"gender": "she" if rng.random() < 0.5 else "he"}))
        if i < len(_NICK):
            p.aliases.append(_NICK[i])
        people.append(p)
    return people


def _orgs(rng: random.Random, taken: set[str], add: AddFn, n_orgs: int) -> list[Entity]:
    """Companies: a unique name word and a kind (``Optics``, ``Foundry`` ...) each."""
    org_words = _unique(rng, lambda: rng.choice(_SUR1) + rng.choice(["ern", "away", "brook", "stone", "field", "more"]),
                        n_orgs, taken)
    kinds = rng.sample(_ORG_KIND, n_orgs)
    orgs = [add(Entity(f"org:{i}", f"{org_words[i]} {kinds[i]}", "org", [org_words[i]], {"kind": kinds[i]}))
            for i in range(n_orgs)]
    return orgs


def _employ(rng: random.Random, people: list[Entity], orgs: list[Entity], cities: list[Entity],
            triples: list[Triple]) -> None:
    """People's attributes: birth year and city, and employer."""
    n_orgs, n_people = len(orgs), len(people)
    # people: birth city, year, employer (two per org at least: founder + designer; the rest random)
    employers = [orgs[i % n_orgs] for i in range(n_people)]
    for p, o in zip(people, employers):
        p.attrs["born_year"] = rng.randint(1890, 1935)
        p.attrs["born_in"] = rng.choice(cities).name
        p.attrs["works_for"] = o.name
        triples += [(p.name, "born_in", p.attrs["born_in"]), (p.name, "born_year", str(p.attrs["born_year"])),
                    (p.name, "works_for", o.name)]


def _found(rng: random.Random, people: list[Entity], orgs: list[Entity], cities: list[Entity],
           factions: list[Entity], triples: list[Triple]) -> None:
    """Companies' attributes: founder, founding year, headquarters, alliance."""
    for i, o in enumerate(orgs):
        founder = people[i]  # people[i] and people[i + n_orgs] work for orgs[i]
        o.attrs["founded_by"] = founder.name
        o.attrs["founded_year"] = founder.attrs["born_year"] + rng.randint(22, 40)
        o.attrs["headquartered_in"] = rng.choice(cities).name
        o.attrs["member_of"] = factions[i % len(factions)].name
        triples += [(o.name, "founded_by", founder.name), (o.name, "founded_year", str(o.attrs["founded_year"])),
                    (o.name, "headquartered_in", o.attrs["headquartered_in"]), (o.name, "member_of", o.attrs["member_of"])]


def _products(rng: random.Random, people: list[Entity], orgs: list[Entity], add: AddFn, triples: list[Triple],
              n_products: int) -> None:
    """Products: maker, designer (the second employee of the maker), launch year."""
    n_orgs = len(orgs)
    stems = rng.sample(_PRODUCT_STEM, n_products)
    products = []
    for i in range(n_products):
        o = orgs[i % n_orgs]
        designer = people[(i % n_orgs) + n_orgs]
        x = add(Entity(f"product:{i}", f"{stems[i]}-{rng.randint(2, 9)}", "product",
                       attrs={"kind": _PRODUCT_KIND[o.attrs["kind"]]}))
        x.attrs["made_by"] = o.name
        x.attrs["designed_by"] = designer.name
        x.attrs["launched_year"] = max(o.attrs["founded_year"], designer.attrs["born_year"] + 25) + rng.randint(1, 15)
        triples += [(x.name, "made_by", o.name), (x.name, "designed_by", designer.name),
                    (x.name, "launched_year", str(x.attrs["launched_year"]))]
        products.append(x)


def _events(rng: random.Random, cities: list[Entity], orgs: list[Entity], add: AddFn, triples: list[Triple],
            n_events: int) -> None:
    """Events: place, year and two participating companies."""
    ev_cities = rng.sample(cities, n_events)
    for i in range(n_events):
        c = ev_cities[i]
        e = add(Entity(f"event:{i}", _EVENTS[i].format(c=c.name), "event"))
        e.attrs["held_in"] = c.name
        e.attrs["event_year"] = rng.randint(1950, 1975)
        e.attrs["participant"] = sorted(o.name for o in rng.sample(orgs, 2))
        triples += [(e.name, "held_in", c.name), (e.name, "event_year", str(e.attrs["event_year"]))]
        triples += [(e.name, "participant", o) for o in e.attrs["participant"]]


def make_world(seed: int = 0, *, n_people: int = 24, n_orgs: int = 12, n_cities: int = 10,
               n_products: int = 12, n_events: int = 5) -> World:
    """Build the structured world (entities and true triples) from a seed. Pure and deterministic.

    One RNG (``seed``) is drawn in this fixed order: city names, first names, surnames, genders, company names
    and kinds, people's birth years and cities, companies' founding years and headquarters, products, events.
    """
    _check_sizes(n_people, n_orgs, n_products, n_events)
    rng = random.Random(seed)
    taken: set[str] = {w for n in _FACTIONS + _REGIONS for w in n.split()}
    ents: dict[str, Entity] = {}
    triples: list[Triple] = []

    def add(e: Entity) -> Entity:
        ents[e.id] = e
        return e

    cities, factions = _places(rng, taken, add, triples, n_cities)
    people = _people(rng, taken, add, n_people)
    orgs = _orgs(rng, taken, add, n_orgs)
    _employ(rng, people, orgs, cities, triples)
    _found(rng, people, orgs, cities, factions, triples)
    _products(rng, people, orgs, add, triples, n_products)
    _events(rng, cities, orgs, add, triples, n_events)
    # uniqueness of years used in comparison questions is not required; questions skip ties
    return World(seed, ents, triples)
