"""GraphRAG (chapter 20): triple extraction, entity resolution, the graph and its communities, search.
"""
from __future__ import annotations

from .search import (  # noqa: F401
    EXTRACTION_PROMPT,
    LITERAL,
    SCHEMA,
    SYMMETRIC,
    EntityResolver,
    GraphRAG,
    LLMExtractor,
    build_graph,
    community_reports,
    detect_communities,
    extract_triples,
    extraction_scores,
    global_search,
    local_search,
    normalize_triples,
    rule_extract,
    score_global_answer,
)

__all__ = ['SCHEMA', 'LITERAL', 'SYMMETRIC', 'EntityResolver', 'extract_triples', 'rule_extract', 'LLMExtractor', 'EXTRACTION_PROMPT', 'extraction_scores', 'normalize_triples', 'build_graph', 'detect_communities', 'community_reports', 'local_search', 'global_search', 'score_global_answer', 'GraphRAG']
