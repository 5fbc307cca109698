"""Encyclopedia articles about the fictional world (chapters 18-20): varied prose split into section passages.

Every entity of the world (:mod:`labkit.datasets.world.entities`) becomes an article of one or two sections;
each section is a :class:`Passage` that records the true triples its sentences state::

    # Orvane Kestrel              <- title (the entity's name)
    ## Early life                 <- section
    Orvane Kestrel was born in Dunmere in 1902. She ...

Phrasing is picked per sentence from several templates by one seeded RNG (``seed + 1``), drawn in a fixed
order: people, companies, cities, regions, factions, products, events; then a Chinese subset (no draws).
Later sentences use pronouns or a generic noun ("The company"); other articles often use an alias (surname,
short company name, nickname), so a retriever must resolve them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from labkit.datasets.world.entities import _FACTIONS, SYMMETRIC_RELATIONS, Entity, Triple, World

__all__ = ["Passage", "write_articles"]

#: ``ref(name)``: how another article mentions an entity (draws from the articles' RNG).
RefFn = Callable[[str], str]


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
    """One section of an article: its text (``# Title``, ``## Section``, sentences) and the triples it states."""

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


def _make_ref(world: World, rng: random.Random) -> RefFn:
    """The ``ref`` of :func:`write_articles`, drawing from its ``rng``."""
    by_name = {e.name: e for e in world.entities.values()}

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

    return ref


def _person_passages(world: World, rng: random.Random, ref: RefFn) -> list[Passage]:
    """People: "Early life" (birth, nickname) and "Career" (employer, companies founded, designs)."""
    out: list[Passage] = []
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
    return out


def _org_passages(world: World, rng: random.Random, ref: RefFn) -> list[Passage]:
    """Companies: "History" (founding, headquarters) and "Affiliations" (alliance, products, staff)."""
    out: list[Passage] = []
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
    return out


def _city_passages(world: World, rng: random.Random, ref: RefFn) -> list[Passage]:
    """Cities: "Geography" (region, companies based there)."""
    out: list[Passage] = []
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
    return out


def _region_passages(world: World) -> list[Passage]:
    """Regions: "Overview" (their towns). No RNG draws."""
    out: list[Passage] = []
    for r in world.by_type("region"):
        cs = [c.name for c in world.by_type("city") if c.attrs["region"] == r.name]
        sents = [(f"{r.name} is a region of the northern archipelago.", []),
                 (f"Its towns include {', '.join(cs)}.", [(c, "located_in", r.name) for c in cs])]
        out.append(_section(f"{r.id}#overview", r, "Overview", "en", sents))
    return out


def _faction_passages(world: World, rng: random.Random) -> list[Passage]:
    """Factions: "Members" and "Relations" (allies and rivals)."""
    out: list[Passage] = []
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
    return out


def _product_passages(world: World, rng: random.Random, ref: RefFn) -> list[Passage]:
    """Products: "Description" (maker, designer, launch year)."""
    out: list[Passage] = []
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
    return out


def _event_passages(world: World, rng: random.Random) -> list[Passage]:
    """Events: "Summary" (place, year, participants)."""
    out: list[Passage] = []
    for ev in world.by_type("event"):
        a = ev.attrs
        Ev, c, y, parts = ev.name, a["held_in"], a["event_year"], a["participant"]
        sents = [(rng.choice([f"The {Ev} took place in {c} in {y}.",
                              f"The {Ev} was held in {c} in {y}."]),
                  [(Ev, "held_in", c), (Ev, "event_year", str(y))]),
                 (f"{parts[0]} and {parts[1]} took part in it.", [(Ev, "participant", q) for q in parts])]
        out.append(_section(f"{ev.id}#summary", ev, "Summary", "en", sents))
    return out


def _chinese_passages(world: World, zh_people: int, zh_orgs: int) -> list[Passage]:
    """Chinese subset: short articles about some people and orgs (names stay in Latin script). No RNG draws."""
    out: list[Passage] = []
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


def write_articles(world: World, *, zh_people: int = 8, zh_orgs: int = 4) -> list[Passage]:
    """Render every entity as an encyclopedia article, split into section passages.

    Phrasing is picked per sentence from several templates by a seeded RNG; later sentences refer to the
    subject by pronoun or by a generic noun ("The company"); other articles often use an alias (surname,
    short company name, nickname). Each passage records the true triples its sentences state.
    """
    rng = random.Random(world.seed + 1)
    ref = _make_ref(world, rng)
    out: list[Passage] = []
    # the RNG is drawn in this order (people, companies, cities, regions, factions, products, events)
    out += _person_passages(world, rng, ref)
    out += _org_passages(world, rng, ref)
    out += _city_passages(world, rng, ref)
    out += _region_passages(world)
    out += _faction_passages(world, rng)
    out += _product_passages(world, rng, ref)
    out += _event_passages(world, rng)
    out += _chinese_passages(world, zh_people, zh_orgs)
    return out
