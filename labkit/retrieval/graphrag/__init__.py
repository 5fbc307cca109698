"""GraphRAG (chapter 20): triple extraction and entity resolution (``extract``), the graph, its communities
and their reports (``graph``), local and global search and the whole pipeline (``search``).
"""
from __future__ import annotations

from .extract import (  # noqa: F401
    EXTRACTION_PROMPT,
    LITERAL,
    SCHEMA,
    SYMMETRIC,
    EntityResolver,
    LLMExtractor,
    extract_triples,
    extraction_scores,
    normalize_triples,
    rule_extract,
)
from .graph import build_graph, community_reports, detect_communities  # noqa: F401
from .search import GraphRAG, global_search, local_search, score_global_answer  # noqa: F401

__all__ = ["SCHEMA", "LITERAL", "SYMMETRIC", "rule_extract", "EntityResolver", "EXTRACTION_PROMPT", "LLMExtractor", "extract_triples", "normalize_triples", "extraction_scores", "build_graph", "detect_communities", "community_reports", "local_search", "global_search", "score_global_answer", "GraphRAG"]
