"""A fictional world for retrieval experiments (chapters 16 and 17): generated, never memorized.

No language model has read about Orvane Kestrel or the Amber Compact, so a retriever or reader that
answers questions about them must have found the answer in *our* text. The pipeline is

    structured world (entities + true triples)  →  encyclopedia articles (varied prose, pronouns,
    aliases, facts spread across articles, a Chinese subset)  →  passages with the triples each states
    →  question sets with gold answers and supporting passages / facts.

The structured world is for generating and scoring only. Retrieval and extraction work from the text.

Command (deterministic: same seed → same bytes)::

    python -m labkit.experiments.world --seed 0 --out data/world            # world.json, corpus.jsonl, questions.jsonl
    python -m labkit.experiments.world --seed 0 --out data/world --embed    # + passage/question/sentence MiniLM embeddings

Triple relations (subject type → object type):

    born_in (person → city), born_year (person → year), works_for (person → org),
    founded_by (org → person), founded_year (org → year), headquartered_in (org → city),
    member_of (org → faction), located_in (city → region), made_by (product → org),
    designed_by (product → person), launched_year (product → year), allied_with / rival_of
    (faction ↔ faction), held_in (event → city), event_year (event → year), participant (event → org)
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.core.io import atomic_write_text
from labkit.core.paths import DATA

__all__ = ["RELATIONS", "LITERAL_RELATIONS", "Entity", "World", "make_world", "write_articles", "make_questions", "generate", "article_text", "load_corpus", "load_questions", "load_world", "sentences", "WORLD_DIR"]

RELATIONS = (
    "born_in", "born_year", "works_for", "founded_by", "founded_year", "headquartered_in", "member_of",
    "located_in", "made_by", "designed_by", "launched_year", "allied_with", "rival_of", "held_in",
    "event_year", "participant",
)
#: relations whose object is a year (a literal), not an entity
LITERAL_RELATIONS = ("born_year", "founded_year", "launched_year", "event_year")
SYMMETRIC_RELATIONS = ("allied_with", "rival_of")

WORLD_DIR = DATA / "world"

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


def make_world(seed: int = 0, *, n_people: int = 24, n_orgs: int = 12, n_cities: int = 10,
               n_products: int = 12, n_events: int = 5) -> World:
    """Build the structured world (entities and true triples) from a seed. Pure and deterministic."""
    if n_orgs > len(_ORG_KIND) or n_products > len(_PRODUCT_STEM) or n_events > len(_EVENTS):
        raise ValueError(f"at most {len(_ORG_KIND)} orgs, {len(_PRODUCT_STEM)} products, {len(_EVENTS)} events")
    if n_people < 2 * n_orgs:
        raise ValueError(f"n_people ({n_people}) must be >= 2 * n_orgs ({2 * n_orgs}): each org needs a founder "
                         "and a designer")
    rng = random.Random(seed)
    taken: set[str] = {w for n in _FACTIONS + _REGIONS for w in n.split()}
    ents: dict[str, Entity] = {}
    triples: list[Triple] = []

    def add(e: Entity) -> Entity:
        ents[e.id] = e
        return e

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

    org_words = _unique(rng, lambda: rng.choice(_SUR1) + rng.choice(["ern", "away", "brook", "stone", "field", "more"]),
                        n_orgs, taken)
    kinds = rng.sample(_ORG_KIND, n_orgs)
    orgs = [add(Entity(f"org:{i}", f"{org_words[i]} {kinds[i]}", "org", [org_words[i]], {"kind": kinds[i]}))
            for i in range(n_orgs)]

    # people: birth city, year, employer (two per org at least: founder + designer; the rest random)
    employers = [orgs[i % n_orgs] for i in range(n_people)]
    for p, o in zip(people, employers):
        p.attrs["born_year"] = rng.randint(1890, 1935)
        p.attrs["born_in"] = rng.choice(cities).name
        p.attrs["works_for"] = o.name
        triples += [(p.name, "born_in", p.attrs["born_in"]), (p.name, "born_year", str(p.attrs["born_year"])),
                    (p.name, "works_for", o.name)]
    for i, o in enumerate(orgs):
        founder = people[i]  # people[i] and people[i + n_orgs] work for orgs[i]
        o.attrs["founded_by"] = founder.name
        o.attrs["founded_year"] = founder.attrs["born_year"] + rng.randint(22, 40)
        o.attrs["headquartered_in"] = rng.choice(cities).name
        o.attrs["member_of"] = factions[i % len(factions)].name
        triples += [(o.name, "founded_by", founder.name), (o.name, "founded_year", str(o.attrs["founded_year"])),
                    (o.name, "headquartered_in", o.attrs["headquartered_in"]), (o.name, "member_of", o.attrs["member_of"])]
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
    ev_cities = rng.sample(cities, n_events)
    for i in range(n_events):
        c = ev_cities[i]
        e = add(Entity(f"event:{i}", _EVENTS[i].format(c=c.name), "event"))
        e.attrs["held_in"] = c.name
        e.attrs["event_year"] = rng.randint(1950, 1975)
        e.attrs["participant"] = sorted(o.name for o in rng.sample(orgs, 2))
        triples += [(e.name, "held_in", c.name), (e.name, "event_year", str(e.attrs["event_year"]))]
        triples += [(e.name, "participant", o) for o in e.attrs["participant"]]
    # uniqueness of years used in comparison questions is not required; questions skip ties
    return World(seed, ents, triples)


# ------------------------------------------------------------------------------------ articles
def _pron(e: Entity, cap: bool = True) -> str:
    if e.type == "person":
        w = e.attrs["gender"]
    else:
        w = "it"
    return w.capitalize() if cap else w


def _poss(e: Entity) -> str:
    return {"she": "her", "he": "his"}.get(e.attrs.get("gender", ""), "its")


def _the_kind(e: Entity) -> str:
    return {"org": "The company", "city": "The city", "product": "The device", "faction": "The alliance",
            "event": "The event"}[e.type]


@dataclass
class Passage:
    id: str
    article: str  # entity id of the article
    title: str
    section: str
    lang: str
    text: str
    triples: list[Triple]


def _section(pid: str, e: Entity, section: str, lang: str, sents: list[tuple[str, list[Triple]]]) -> Passage:
    sep = "" if lang == "zh" else " "
    text = f"# {e.name}\n\n## {section}\n\n" + sep.join(s for s, _ in sents)
    trips = sorted({t for _, ts in sents for t in ts})
    return Passage(pid, e.id, e.name, section, lang, text, trips)


def write_articles(world: World, *, zh_people: int = 8, zh_orgs: int = 4) -> list[Passage]:
    """Render every entity as an encyclopedia article, split into section passages.

    Phrasing is picked per sentence from several templates by a seeded RNG; later sentences refer to the
    subject by pronoun or by a generic noun ("The company"); other articles often use an alias (surname,
    short company name, nickname). Each passage records the true triples its sentences state.
    """
    rng = random.Random(world.seed + 1)
    E = world.entities
    by_name = {e.name: e for e in E.values()}
    out: list[Passage] = []

    def ref(name: str) -> str:
        """How another article mentions an entity: mostly the full name, sometimes an alias."""
        e = by_name[name]
        if e.type == "person" and rng.random() < 0.25:
            return e.aliases[0]
        if e.type == "org" and rng.random() < 0.25:
            return e.aliases[0]
        if e.type == "faction" or (e.type == "region" and not name.startswith("Upper")):
            return "the " + name
        return name

    for p in world.by_type("person"):
        a = p.attrs
        P, S, Poss = p.name, _pron(p), _poss(p)
        nick = next((x for x in p.aliases if x.startswith(("the ", "Old "))), None)
        c, y, o = a["born_in"], a["born_year"], a["works_for"]
        birth = rng.choice([
            (f"{P} was born in {ref(c)} in {y}.", "full"),
            (f"Born in {ref(c)} in {y}, {P} grew up among the workshops of the harbour.", "full"),
            (f"{P} (born {y}) is a native of {ref(c)}.", "full"),
            (f"{P} was born in {y}. {S} grew up in {ref(c)}, where {_pron(p, False)} was born.", "full"),
        ])[0]
        sents: list[tuple[str, list[Triple]]] = [(f"{birth}",
                                                   [(P, "born_in", c), (P, "born_year", str(y))])]
        if nick:
            sents.append((rng.choice([f"Friends called {_pron(p, False) == 'she' and 'her' or 'him'} \"{nick}\".",
                                      f"{S} is widely known as \"{nick}\"."]), []))
        sents.append((rng.choice([f"{Poss.capitalize()} early years were spent reading borrowed almanacs.",
                                  f"{S} trained as an apprentice before {_pron(p, False)} turned twenty."]), []))
        out.append(_section(f"{p.id}#early", p, "Early life", "en", sents))
        sents = []
        wf = rng.choice([
            f"{S} works for {ref(o)}.", f"{S} joined {ref(o)} as a young engineer and stayed there.",
            f"Since {y + 21}, {_pron(p, False)} has been employed by {ref(o)}.",
            f"{S} is a senior engineer at {ref(o)}.",
        ])
        sents.append((wf, [(P, "works_for", o)]))
        for org in world.by_type("org"):
            if org.attrs["founded_by"] == P:
                sents.append((rng.choice([f"In {org.attrs['founded_year']} {_pron(p, False)} founded {org.name}.",
                                          f"{S} founded {org.name} in {org.attrs['founded_year']}."]),
                              [(org.name, "founded_by", P), (org.name, "founded_year", str(org.attrs["founded_year"]))]))
        for x in world.by_type("product"):
            if x.attrs["designed_by"] == P and rng.random() < 0.5:
                sents.append((f"{S} designed the {x.name}.", [(x.name, "designed_by", P)]))
        out.append(_section(f"{p.id}#career", p, "Career", "en", sents))

    for org in world.by_type("org"):
        a = org.attrs
        O, short = org.name, org.aliases[0]
        f, fy, hq, fac = a["founded_by"], a["founded_year"], a["headquartered_in"], a["member_of"]
        found = rng.choice([
            f"{O} was founded by {ref(f)} in {fy}.", f"{ref(f)} founded {O} in {fy}.",
            f"{O} was established in {fy} by {ref(f)}.",
            f"{O} (often just \"{short}\") was founded in {fy} by {ref(f)}.",
        ])
        hqs = rng.choice([f"The company is headquartered in {ref(hq)}.", f"{short} has its headquarters in {ref(hq)}.",
                          f"Its head office stands in {ref(hq)}.", f"{O} is based in {ref(hq)}."])
        sents = [(f"{found}", [(O, "founded_by", f), (O, "founded_year", str(fy))]),
                 (hqs, [(O, "headquartered_in", hq)])]
        out.append(_section(f"{org.id}#history", org, "History", "en", sents))
        sents = []
        mem = rng.choice([f"{O} is a member of the {fac}.", f"{short} belongs to the {fac}.",
                          f"The company joined the {fac} soon after it was founded."])
        sents.append((mem, [(O, "member_of", fac)]))
        made = [x for x in world.by_type("product") if x.attrs["made_by"] == O]
        for x in made:
            sents.append((rng.choice([f"{short} produces the {x.name}.", f"It manufactures the {x.name}."]),
                          [(x.name, "made_by", O)]))
        staff = [p.name for p in world.by_type("person") if p.attrs["works_for"] == O and p.name != f]
        if staff:
            sents.append((f"Notable staff include {', '.join(ref(s) for s in staff)}.",
                          [(s, "works_for", O) for s in staff]))
        out.append(_section(f"{org.id}#affiliations", org, "Affiliations", "en", sents))

    for c in world.by_type("city"):
        r = c.attrs["region"]
        loc = rng.choice([f"{c.name} is a city in {ref(r)}.", f"{c.name} lies in {ref(r)}.",
                          f"{c.name}, a port town of {ref(r)}, sits at the mouth of a slow river."])
        based = [o.name for o in world.by_type("org") if o.attrs["headquartered_in"] == c.name]
        sents = [(f"{loc}", [(c.name, "located_in", r)]),
                 (rng.choice(["The city is known for its covered markets.", "Its old quarter is built of grey slate."]), [])]
        if based:
            sents.append((f"Companies based here include {', '.join(based)}.",
                          [(b, "headquartered_in", c.name) for b in based]))
        out.append(_section(f"{c.id}#geography", c, "Geography", "en", sents))

    for r in world.by_type("region"):
        cs = [c.name for c in world.by_type("city") if c.attrs["region"] == r.name]
        sents = [(f"{r.name} is a region of the northern archipelago.", []),
                 (f"Its towns include {', '.join(cs)}.", [(c, "located_in", r.name) for c in cs])]
        out.append(_section(f"{r.id}#overview", r, "Overview", "en", sents))

    fac_rel = {(s, o): rel for s, rel, o in world.triples if rel in SYMMETRIC_RELATIONS}
    for fe in world.by_type("faction"):
        F = fe.name
        members = [o.name for o in world.by_type("org") if o.attrs["member_of"] == F]
        sents = [(f"The {F} is an alliance of workshops and trading houses. "
                  f"Its members include {', '.join(members)}.", [(m, "member_of", F) for m in members])]
        out.append(_section(f"{fe.id}#members", fe, "Members", "en", sents))
        sents = []
        for (s, o), rel in sorted(fac_rel.items()):
            if F not in (s, o):
                continue
            other = o if s == F else s
            if rel == "allied_with":
                txt = rng.choice([f"The alliance has been allied with the {other} since {world.entities['faction:0'].attrs['allied_year']}.",
                                  f"The {F} and the {other} are close allies."])
            else:
                txt = rng.choice([f"The {F} is a rival of the {other}.", f"The {F} and the {other} are long-standing rivals.",
                                  f"Relations with the {other} have been hostile for decades."])
            sents.append((txt, [(s, rel, o)]))
        out.append(_section(f"{fe.id}#relations", fe, "Relations", "en", sents))

    for x in world.by_type("product"):
        a = x.attrs
        X, o, d, ly, kind = x.name, a["made_by"], a["designed_by"], a["launched_year"], a["kind"]
        first = rng.choice([
            (f"The {X} is a {kind} made by {ref(o)}.", [(X, "made_by", o)]),
            (f"The {X} is a {kind} manufactured by {ref(o)}.", [(X, "made_by", o)]),
            (f"{ref(o)} released the {X}, a {kind}, in {ly}.", [(X, "made_by", o), (X, "launched_year", str(ly))]),
        ])
        sents = [(f"{first[0]}", first[1]),
                 (rng.choice([f"It was designed by {ref(d)}.", f"{ref(d)} designed the {X}.",
                              f"The design is the work of {ref(d)}."]), [(X, "designed_by", d)])]
        if not any(r == "launched_year" for _, r, _ in first[1]):
            sents.append((rng.choice([f"The {X} was launched in {ly}.", f"It went on sale in {ly}.",
                                      f"The device was first sold in {ly}."]), [(X, "launched_year", str(ly))]))
        out.append(_section(f"{x.id}#description", x, "Description", "en", sents))

    for ev in world.by_type("event"):
        a = ev.attrs
        Ev, c, y, parts = ev.name, a["held_in"], a["event_year"], a["participant"]
        sents = [(f"" + rng.choice([f"The {Ev} took place in {c} in {y}.",
                                                            f"The {Ev} was held in {c} in {y}."]),
                  [(Ev, "held_in", c), (Ev, "event_year", str(y))]),
                 (f"{parts[0]} and {parts[1]} took part in it.", [(Ev, "participant", q) for q in parts])]
        out.append(_section(f"{ev.id}#summary", ev, "Summary", "en", sents))

    # Chinese subset: short articles about some people and orgs (names stay in Latin script)
    for p in world.by_type("person")[:zh_people]:
        a = p.attrs
        ta = "她" if a["gender"] == "she" else "他"
        sents = [(f"{p.name}于{a['born_year']}年出生在{a['born_in']}。",
                  [(p.name, "born_in", a["born_in"]), (p.name, "born_year", str(a["born_year"]))]),
                 (f"{ta}在{a['works_for']}工作。", [(p.name, "works_for", a["works_for"])])]
        out.append(_section(f"zh:{p.id}#intro", p, "简介", "zh", sents))
    for org in world.by_type("org")[:zh_orgs]:
        a = org.attrs
        zh_f = world.entities[f"faction:{_FACTIONS.index(a['member_of'])}"].attrs["zh"]
        sents = [(f"{org.name}由{a['founded_by']}于{a['founded_year']}年创立。",
                  [(org.name, "founded_by", a["founded_by"]), (org.name, "founded_year", str(a["founded_year"]))]),
                 (f"公司总部位于{a['headquartered_in']}。", [(org.name, "headquartered_in", a["headquartered_in"])]),
                 (f"它是{zh_f}（{a['member_of']}）的成员。", [(org.name, "member_of", a["member_of"])])]
        out.append(_section(f"zh:{org.id}#intro", org, "简介", "zh", sents))
    return out


# ----------------------------------------------------------------------------------- questions
def _support(passages: list[Passage], facts: list[Triple]) -> list[str]:
    """Passages stating at least one of the facts (the gold supporting passages)."""
    fs = set(facts)
    return sorted(p.id for p in passages if p.lang == "en" and fs & set(p.triples))


def make_questions(world: World, passages: list[Passage]) -> list[dict[str, Any]]:
    """Question sets with gold answers, supporting facts and supporting passages.

    Types: ``single`` (one fact), ``multi`` (2–3 hops across articles), ``comparison`` (two entities'
    years), ``global`` (the factions and how they relate, and the members of each), ``zh`` (single-hop,
    in Chinese).
    Every gold answer is checked against the structured world when generated.
    """
    rng = random.Random(world.seed + 2)
    W = world
    people, orgs, products = W.by_type("person"), W.by_type("org"), W.by_type("product")
    qs: list[dict[str, Any]] = []

    def q(kind: str, text: str, answer: str, facts: list[Triple], hops: int, aliases: list[str] | None = None):
        qs.append({"id": f"{kind}-{sum(1 for x in qs if x['type'] == kind):03d}", "type": kind, "question": text,
                   "answer": answer, "answer_aliases": aliases or [], "hops": hops,
                   "facts": [list(f) for f in facts], "support": _support(passages, facts)})

    one = lambda s, r: W.objects(s, r)[0]  # noqa: E731
    for p in rng.sample(people, 10):
        c = one(p.name, "born_in")
        q("single", rng.choice([f"Where was {p.name} born?", f"In which city was {p.name} born?"]), c,
          [(p.name, "born_in", c)], 1)
    for p in rng.sample(people, 8):
        o = one(p.name, "works_for")
        q("single", rng.choice([f"Which company does {p.name} work for?", f"Who employs {p.name}?"]), o,
          [(p.name, "works_for", o)], 1)
    for o in rng.sample(orgs, 8):
        f = one(o.name, "founded_by")
        q("single", f"Who founded {o.name}?", f, [(o.name, "founded_by", f)], 1)
    for x in rng.sample(products, 8):
        y = one(x.name, "launched_year")
        q("single", rng.choice([f"In what year was the {x.name} launched?", f"When did the {x.name} go on sale?"]),
          y, [(x.name, "launched_year", y)], 1)
    for x in rng.sample(products, 6):
        d = one(x.name, "designed_by")
        q("single", f"Who designed the {x.name}?", d, [(x.name, "designed_by", d)], 1)

    # multi-hop
    for p in rng.sample(people, 8):
        o = one(p.name, "works_for")
        c = one(o, "headquartered_in")
        q("multi", f"In which city is the company that employs {p.name} headquartered?", c,
          [(p.name, "works_for", o), (o, "headquartered_in", c)], 2)
    for o in rng.sample(orgs, 8):
        f = one(o.name, "founded_by")
        c = one(f, "born_in")
        q("multi", f"Where was the founder of {o.name} born?", c, [(o.name, "founded_by", f), (f, "born_in", c)], 2)
    for x in rng.sample(products, 6):
        o = one(x.name, "made_by")
        fac = one(o, "member_of")
        q("multi", f"Which alliance does the maker of the {x.name} belong to?", fac,
          [(x.name, "made_by", o), (o, "member_of", fac)], 2, ["the " + fac])
    for o in rng.sample(orgs, 6):
        f = one(o.name, "founded_by")
        c = one(f, "born_in")
        r = one(c, "located_in")
        q("multi", f"In which region was the founder of {o.name} born?", r,
          [(o.name, "founded_by", f), (f, "born_in", c), (c, "located_in", r)], 3, ["the " + r])
    for x in rng.sample(products, 6):
        d = one(x.name, "designed_by")
        o = one(d, "works_for")
        fac = one(o, "member_of")
        q("multi", f"Which alliance does the employer of the designer of the {x.name} belong to?", fac,
          [(x.name, "designed_by", d), (d, "works_for", o), (o, "member_of", fac)], 3, ["the " + fac])

    # comparison (skip ties)
    def compare(items, rel, n, fmt):
        made = 0
        pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]
        rng.shuffle(pairs)
        for a, b in pairs:
            ya, yb = int(one(a.name, rel)), int(one(b.name, rel))
            if ya == yb:
                continue
            win = a.name if ya < yb else b.name
            q("comparison", fmt(a.name, b.name), win, [(a.name, rel, str(ya)), (b.name, rel, str(yb))], 2)
            made += 1
            if made == n:
                break
    compare(orgs, "founded_year", 6, lambda a, b: f"Which was founded earlier, {a} or {b}?")
    compare(people, "born_year", 6, lambda a, b: f"Who was born first, {a} or {b}?")
    compare(products, "launched_year", 4, lambda a, b: f"Which was launched first, the {a} or the {b}?")

    # global
    fac_facts = [t for t in W.triples if t[1] in SYMMETRIC_RELATIONS]
    gold = "; ".join(f"{s} {r.replace('_', ' ')} {o}" for s, r, o in fac_facts)
    for text in ["What are the main factions and how are they related?",
                 "Which alliances dominate the archipelago, and which of them are rivals?",
                 "Summarize the alliances in this world and the relations between them."]:
        q("global", text, gold, fac_facts + [t for t in W.triples if t[1] == "member_of"], len(_FACTIONS))
    # ... and a second global question, about the alliances' make-up: every member_of fact of the world
    mem_facts = [t for t in W.triples if t[1] == "member_of"]
    gold_m = "; ".join(f"{s} member of {o}" for s, _, o in mem_facts)
    for text in ["Which companies belong to each alliance?", "List the members of every alliance."]:
        q("global", text, gold_m, mem_facts, len(_FACTIONS))

    # Chinese single-hop over the Chinese subset (support = the zh passages)
    zh_q = []
    for p in people[:8]:
        c = one(p.name, "born_in")
        zh_q.append((f"{p.name}出生在哪个城市？", c, [(p.name, "born_in", c)]))
    for o in orgs[:4]:
        f = one(o.name, "founded_by")
        zh_q.append((f"{o.name}是谁创立的？", f, [(o.name, "founded_by", f)]))
    for text, ans, facts in zh_q:
        q("zh", text, ans, facts, 1)
        fs = set(facts)
        qs[-1]["support"] = sorted(p.id for p in passages if p.lang == "zh" and fs & set(p.triples))
    for item in qs:  # every gold answer is a true fact of the world
        assert all(tuple(f) in set(W.triples) for f in item["facts"]), item
        assert item["support"], item
    return qs


# -------------------------------------------------------------------------------------- output
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])|(?<=[。！？])|\n+")


def sentences(text: str) -> list[str]:
    """The sentences of a passage (header lines dropped), English and Chinese, for sentence embeddings."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return [s.strip() for s in _SENT_RE.split(body) if s.strip()]


def generate(seed: int = 0, out: str | Path = WORLD_DIR) -> dict[str, Path]:
    """Write ``world.json``, ``corpus.jsonl`` and ``questions.jsonl`` to ``out`` (atomic writes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = make_world(seed)
    passages = write_articles(world)
    questions = make_questions(world, passages)
    wj = {"seed": seed, "relations": list(RELATIONS),
          "entities": [{"id": e.id, "name": e.name, "type": e.type, "aliases": e.aliases, "attrs": e.attrs}
                       for e in world.entities.values()],
          "triples": [list(t) for t in world.triples]}
    paths = {"world": out / "world.json", "corpus": out / "corpus.jsonl", "questions": out / "questions.jsonl"}
    atomic_write_text(paths["world"], json.dumps(wj, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(paths["corpus"], "".join(json.dumps({"id": p.id, "article": p.article, "title": p.title,
                                                 "section": p.section, "lang": p.lang, "text": p.text,
                                                 "triples": [list(t) for t in p.triples]}, ensure_ascii=False) + "\n"
                                     for p in passages))
    atomic_write_text(paths["questions"], "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in questions))
    return paths


def article_text(corpus: list[dict[str, Any]], article: str, lang: str = "en") -> str:
    """Reassemble one article (all its section passages) as Markdown: ``# Title``, then ``## Section`` blocks."""
    parts = [p for p in corpus if p["article"] == article and p["lang"] == lang]
    if not parts:
        raise ValueError(f"no {lang} passages for article {article!r}; ids look like 'person:0', 'org:3'")
    return f"# {parts[0]['title']}\n\n" + "\n\n".join(p["text"].split("\n\n", 1)[1] for p in parts)


def load_corpus(root: str | Path = WORLD_DIR) -> list[dict[str, Any]]:
    """The shipped passages: dicts with id, article, title, section, lang, text, triples."""
    path = Path(root) / "corpus.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m labkit.experiments.world --out {root}`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def load_questions(root: str | Path = WORLD_DIR) -> list[dict[str, Any]]:
    path = Path(root) / "questions.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m labkit.experiments.world --out {root}`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def load_world(root: str | Path = WORLD_DIR) -> dict[str, Any]:
    path = Path(root) / "world.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m labkit.experiments.world --out {root}`")
    return json.loads(path.read_text(encoding="utf-8"))

