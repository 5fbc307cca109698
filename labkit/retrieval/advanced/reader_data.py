"""Training and test data for the reader trained in chapter 19: template questions about single facts, each
with a short context of sentences (the gold sentence plus distractors).

The reader must *read*, not remember: its training questions come from **other worlds** (the world generator of
:mod:`labkit.datasets.world` with seeds ``1 … n``: other facts, other names), never from the shipped world
(seed 0) whose 107 questions are the test set. Every training question string that equals a test question is
dropped (:func:`training_records` reports how many; the shipped run drops 35 of them).

A record is a chat record (``labkit.finetune.sft`` format)::

    {"messages": [{"role": "user", "content": "<sentence 1> <sentence 2>\\nQ: <question>"},
                  {"role": "assistant", "content": "<answer>"}]}

Sentences are ``"Title: sentence"`` strings (:func:`world_sentences`), so one sentence alone names its subject.
"""
from __future__ import annotations

import random
import re
from typing import Any, Sequence

from labkit.datasets.world import make_world, sentences, write_articles

__all__ = ["QUESTION_TEMPLATES", "RELATION_CUES", "states", "fact_questions", "world_sentences", "reader_record", "rename_record", "training_records",
           "gold_sentences"]

#: relation → question phrasings (``{s}``: the subject). The shipped single-hop questions use the first five
#: relations' phrasings; the rest are added so the reader sees every relation a sentence can state.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "born_in": ("Where was {s} born?", "In which city was {s} born?"),
    "works_for": ("Which company does {s} work for?", "Who employs {s}?"),
    "founded_by": ("Who founded {s}?",),
    "launched_year": ("In what year was the {s} launched?", "When did the {s} go on sale?"),
    "designed_by": ("Who designed the {s}?",),
    "born_year": ("In what year was {s} born?", "When was {s} born?"),
    "founded_year": ("In what year was {s} founded?", "When was {s} founded?"),
    "headquartered_in": ("Where is {s} headquartered?", "In which city is {s} based?"),
    "member_of": ("Which alliance is {s} a member of?",),
    "made_by": ("Which company makes the {s}?", "Who manufactures the {s}?"),
    "located_in": ("In which region is {s}?",),
    "held_in": ("Where did the {s} take place?",),
    "event_year": ("In what year did the {s} take place?",),
}


#: relation → words one of which a sentence must contain to state it (the title is in every sentence, so
#: naming the subject and the object is not enough: "X: In 1934 she founded O" does not say X works for O).
RELATION_CUES: dict[str, tuple[str, ...]] = {
    "born_in": ("born", "native", "出生"), "born_year": ("born", "出生"),
    "works_for": ("works for", "joined", "employed", "engineer at", "staff", "工作"),
    "founded_by": ("founded", "established", "创立"), "founded_year": ("founded", "established", "创立"),
    "headquartered_in": ("headquarter", "head office", "based", "总部"),
    "member_of": ("member", "belongs", "joined the", "成员"),
    "made_by": ("made by", "manufactur", "produces", "released"), "designed_by": ("design",),
    "launched_year": ("launched", "on sale", "first sold", "released"),
    "located_in": ("city in", "lies in", "port town", "towns include"), "held_in": ("took place", "held"),
    "event_year": ("took place", "held"),
}


def states(sentence: str, fact: Sequence[str]) -> bool:
    """Whether ``sentence`` states ``(subject, relation, object)``: it names both and has a cue of the relation."""
    subj, rel, obj = fact
    low = sentence.lower()
    return subj in sentence and obj in sentence and any(c in low for c in RELATION_CUES.get(rel, ("",)))


def world_sentences(passages: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(passage id, "Title: sentence")`` for every sentence of every passage, in corpus order: exactly the
    texts whose MiniLM embeddings data/world/sentence_emb.npz ships (``labkit.experiments.world``), so the
    retrieval unit and the reader's context are the same strings. The title keeps a pronoun's subject.

    ``passages``: dicts with ``id``, ``title``, ``text`` (the shipped corpus format).
    """
    return [(p["id"], f"{p['title']}: {s}") for p in passages for s in sentences(p["text"])]


def fact_questions(passages: Sequence[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """One template question per (sentence, fact) where the sentence names both the subject and the answer.

    Returns dicts ``question, answer, relation, fact, sentence, passage``; the phrasing is drawn from ``rng``.
    """
    sents = world_sentences(passages)
    trip = {p["id"]: p["triples"] for p in passages}
    out = []
    for pid, s in sents:
        for subj, rel, obj in trip[pid]:
            if rel not in QUESTION_TEMPLATES or subj == obj or not states(s, (subj, rel, obj)):
                continue
            q = rng.choice(QUESTION_TEMPLATES[rel]).format(s=subj)
            out.append({"question": q, "answer": obj, "relation": rel, "fact": [subj, rel, obj],
                        "sentence": s, "passage": pid})
    return out


def reader_record(question: str, context: Sequence[str], answer: str | None = None) -> dict[str, Any]:
    """The chat record of one reader example: ``user`` = the context sentences joined by spaces, a newline,
    ``Q: question``; ``assistant`` = the answer (omitted when ``answer`` is None: a prompt for generation)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    if isinstance(context, str):
        raise TypeError("context must be a list of sentences; wrap a single sentence in a list")
    user = (" ".join(context) + "\n" if context else "") + "Q: " + question
    msgs = [{"role": "user", "content": user}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return {"messages": msgs}


def _passages_of(seed: int) -> tuple[list[dict[str, Any]], set[str]]:
    """The passages of world ``seed`` and the capitalised words of its entity names (for renaming)."""
    world = make_world(seed)
    words = {w for e in world.entities.values() for n in [e.name, *e.aliases] for w in re.findall(r"[A-Z][a-z]+", n)}
    return ([{"id": p.id, "title": p.title, "lang": p.lang, "text": p.text, "triples": [list(t) for t in p.triples]}
             for p in write_articles(world)], words)


_CONS, _VOW = "bcdfghjklmnprstvwz", "aeiou"


def rename_record(record: dict[str, Any], words: set[str], rng: random.Random) -> dict[str, Any]:
    """The record with every name word (a capitalised word of an entity name, in ``words``) replaced, consistently
    within the record, by a random pronounceable word ("Ellvale" → "Tizuke"). The answer stays a span of the
    context, but its spelling can no longer be guessed from the world's naming habits: only copying works."""
    mapping: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        if w not in words:
            return w
        if w not in mapping:
            n = rng.randint(2, 3)
            mapping[w] = "".join(rng.choice(_CONS) + rng.choice(_VOW) for _ in range(n)).capitalize()
        return mapping[w]

    return {"messages": [{"role": m["role"], "content": re.sub(r"[A-Z][a-z]+", sub, m["content"])}
                         for m in record["messages"]]}


def training_records(seeds: Sequence[int], *, exclude: Sequence[str] = (), n_context: Sequence[int] = (1, 2, 3),
                     closed_book: float = 0.0, rename: float = 0.0,
                     seed: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Reader training records from the worlds ``seeds`` (never 0, the shipped test world).

    Each fact question gets a context of ``k`` sentences (``k`` drawn from ``n_context``): the gold sentence
    and ``k - 1`` distractors (half of them from the same article, where possible), shuffled. A fraction
    ``closed_book`` of the records has no context. Questions whose text is in ``exclude`` (the test
    questions) are dropped. A fraction ``rename`` of the records gets its names replaced by random words
    (:func:`rename_record`), a copying curriculum. Returns ``(records, n_dropped)``.
    """
    if 0 in seeds:
        raise ValueError("seeds must not contain 0: world 0 is the shipped test world; use seeds 1, 2, ...")
    rng = random.Random(seed)
    banned = set(exclude)
    records, dropped = [], 0
    for ws in seeds:
        passages, words = _passages_of(ws)
        sents = world_sentences(passages)
        by_article: dict[str, list[str]] = {}
        for pid, s in sents:
            by_article.setdefault(pid.split("#")[0], []).append(s)
        for fq in fact_questions(passages, rng):
            if fq["question"] in banned:
                dropped += 1
                continue
            k = rng.choice(list(n_context))
            same = [s for s in by_article[fq["passage"].split("#")[0]] if s != fq["sentence"]]
            ctx = [fq["sentence"]]
            while len(ctx) < k:
                pool = same if same and rng.random() < 0.5 else [s for _, s in sents]
                cand = rng.choice(pool)
                if cand not in ctx:
                    ctx.append(cand)
            rng.shuffle(ctx)
            if rng.random() < closed_book:
                ctx = []
            rec = reader_record(fq["question"], ctx, fq["answer"])
            records.append(rename_record(rec, words, rng) if rng.random() < rename else rec)
    return records, dropped


def gold_sentences(question: dict[str, Any], sentences: Sequence[tuple[str, str]]) -> list[str]:
    """The sentences that state a gold fact of ``question`` (:func:`states`; else naming subject and object), in
    fact order.

    ``sentences``: :func:`world_sentences` of the corpus. A fact no sentence states in full contributes the
    sentences of its supporting passages that name the object (so an alias-only sentence still counts).
    """
    out: list[str] = []
    for subj, rel, obj in question["facts"]:
        hits = [s for _, s in sentences if states(s, (subj, rel, obj))] or [s for _, s in sentences if subj in s and obj in s]
        if not hits:
            hits = [s for pid, s in sentences if pid in question["support"] and obj in s]
        for s in hits[:1]:
            if s not in out:
                out.append(s)
    return out
