"""The fictional world's files (chapters 18-20): generate them, load them, and cut passages into sentences.

    structured world (entities + true triples)  →  encyclopedia articles (varied prose, pronouns,
    aliases, facts spread across articles, a Chinese subset)  →  passages with the triples each states
    →  question sets with gold answers and supporting passages / facts.

:func:`generate` writes ``world.json``, ``corpus.jsonl`` and ``questions.jsonl`` to ``data/world/``
(deterministic: same seed → same bytes). Command, with the cached embeddings (an experiment)::

    python -m labkit.experiments.world --seed 0 --out data/world            # world.json, corpus.jsonl, questions.jsonl
    python -m labkit.experiments.world --seed 0 --out data/world --embed    # + passage/question/sentence MiniLM embeddings
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from labkit.core.io import atomic_write_text
from labkit.core.paths import DATA
from labkit.datasets.world.articles import write_articles
from labkit.datasets.world.entities import RELATIONS, make_world
from labkit.datasets.world.questions import make_questions

__all__ = ["WORLD_DIR", "sentences", "generate", "article_text", "load_corpus", "load_questions", "load_world"]


#: Where the shipped world files live.
WORLD_DIR = DATA / "world"

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
