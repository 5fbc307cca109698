"""Question sets about the fictional world (chapters 18-20), with gold answers, facts and supporting passages.

Types: ``single`` (one fact), ``multi`` (2–3 hops across articles), ``comparison`` (two entities' years),
``global`` (the factions and how they relate, and the members of each), ``zh`` (single-hop, in Chinese).
A question is a dict::

    {"id": "multi-003", "type": "multi", "question": "...", "answer": "...", "answer_aliases": [...],
     "hops": 2, "facts": [[subject, relation, object], ...], "support": [passage ids]}

One seeded RNG (``seed + 2``) picks the entities and phrasings, drawn in the order of the types above.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from labkit.datasets.world.articles import Passage
from labkit.datasets.world.entities import _FACTIONS, SYMMETRIC_RELATIONS, Entity, Triple, World

__all__ = ["make_questions"]

#: ``ask(kind, text, answer, facts, hops, aliases=None)``: append one question to the set.
AskFn = Callable[..., None]
#: ``one(subject, relation)``: the (first) object of that relation in the world.
OneFn = Callable[[str, str], str]


def _support(passages: list[Passage], facts: list[Triple]) -> list[str]:
    """Passages stating at least one of the facts (the gold supporting passages)."""
    fs = set(facts)
    return sorted(p.id for p in passages if p.lang == "en" and fs & set(p.triples))


def _single_questions(W: World, rng: random.Random, q: AskFn, one: OneFn) -> None:
    """One fact: birthplace, employer, founder, launch year, designer."""
    people, orgs, products = W.by_type("person"), W.by_type("org"), W.by_type("product")
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


def _multi_questions(W: World, rng: random.Random, q: AskFn, one: OneFn) -> None:
    """Two or three hops across articles (employer's city, founder's birthplace or region, maker's alliance ...)."""
    people, orgs, products = W.by_type("person"), W.by_type("org"), W.by_type("product")
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


def _compare(rng: random.Random, q: AskFn, one: OneFn, items: list[Entity], rel: str, n: int,
             fmt: Callable[[str, str], str]) -> None:
    """``n`` comparison questions on the years ``rel`` of shuffled pairs of ``items`` (ties skipped)."""
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


def _comparison_questions(W: World, rng: random.Random, q: AskFn, one: OneFn) -> None:
    """Which of two entities came first (founding, birth, launch year); ties are skipped."""
    people, orgs, products = W.by_type("person"), W.by_type("org"), W.by_type("product")
    _compare(rng, q, one, orgs, "founded_year", 6, lambda a, b: f"Which was founded earlier, {a} or {b}?")
    _compare(rng, q, one, people, "born_year", 6, lambda a, b: f"Who was born first, {a} or {b}?")
    _compare(rng, q, one, products, "launched_year", 4, lambda a, b: f"Which was launched first, the {a} or the {b}?")


def _global_questions(W: World, q: AskFn) -> None:
    """The factions and how they relate, and the members of each alliance. No RNG draws."""
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


def _zh_questions(W: World, passages: list[Passage], qs: list[dict[str, Any]], q: AskFn, one: OneFn) -> None:
    """Chinese single-hop over the Chinese subset (support = the zh passages). No RNG draws."""
    people, orgs = W.by_type("person"), W.by_type("org")
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


def make_questions(world: World, passages: list[Passage]) -> list[dict[str, Any]]:
    """Question sets with gold answers, supporting facts and supporting passages.

    Types: ``single`` (one fact), ``multi`` (2–3 hops across articles), ``comparison`` (two entities'
    years), ``global`` (the factions and how they relate, and the members of each), ``zh`` (single-hop,
    in Chinese).
    Every gold answer is checked against the structured world when generated.
    """
    rng = random.Random(world.seed + 2)
    W = world
    qs: list[dict[str, Any]] = []

    def q(kind: str, text: str, answer: str, facts: list[Triple], hops: int, aliases: list[str] | None = None) -> None:
        qs.append({"id": f"{kind}-{sum(1 for x in qs if x['type'] == kind):03d}", "type": kind, "question": text,
                   "answer": answer, "answer_aliases": aliases or [], "hops": hops,
                   "facts": [list(f) for f in facts], "support": _support(passages, facts)})

    one = lambda s, r: W.objects(s, r)[0]  # noqa: E731
    _single_questions(W, rng, q, one)
    _multi_questions(W, rng, q, one)
    _comparison_questions(W, rng, q, one)
    _global_questions(W, q)
    _zh_questions(W, passages, qs, q, one)
    for item in qs:  # every gold answer is a true fact of the world
        assert all(tuple(f) in set(W.triples) for f in item["facts"]), item
        assert item["support"], item
    return qs
