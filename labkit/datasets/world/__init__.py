"""The fictional world for retrieval and GraphRAG (chapters 18-20), generated, never memorized: entities and
true triples (``entities``), encyclopedia articles cut into passages (``articles``), question sets with gold
answers (``questions``), and the shipped files in data/world/ (``io``).
"""
from __future__ import annotations

from .articles import Passage, write_articles  # noqa: F401
from .entities import LITERAL_RELATIONS, RELATIONS, SYMMETRIC_RELATIONS, Entity, World, make_world  # noqa: F401
from .io import WORLD_DIR, article_text, generate, load_corpus, load_questions, load_world, sentences  # noqa: F401
from .questions import make_questions  # noqa: F401

__all__ = ["RELATIONS", "LITERAL_RELATIONS", "SYMMETRIC_RELATIONS", "Entity", "World", "make_world", "Passage", "write_articles", "make_questions", "WORLD_DIR", "sentences", "generate", "article_text", "load_corpus", "load_questions", "load_world"]
