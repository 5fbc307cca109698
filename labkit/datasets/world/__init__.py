"""The fictional world for retrieval and GraphRAG: entities and true triples, articles, questions, files.
"""
from __future__ import annotations

from .articles import RELATIONS, LITERAL_RELATIONS, Entity, World, make_world, write_articles, make_questions, generate, article_text, load_corpus, load_questions, load_world, sentences, WORLD_DIR  # noqa: F401

__all__ = ["RELATIONS", "LITERAL_RELATIONS", "Entity", "World", "make_world", "write_articles", "make_questions", "generate", "article_text", "load_corpus", "load_questions", "load_world", "sentences", "WORLD_DIR"]
