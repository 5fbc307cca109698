r"""RAG evaluation (chapter 19): the retrieval side (context precision and recall) and the answer side
(faithfulness, answer correctness), defined so that each can be computed without an LLM judge, plus the
parser for the "question: … answer: … XXX" test-set format of the source notes.

Context precision (RAGAS), for the top-K contexts with relevance :math:`v_k \in \{0, 1\}`:

.. math:: \mathrm{CP@K} = \frac{\sum_{k=1}^{K} \mathrm{P@}k \cdot v_k}{\#\{\text{relevant in top } K\}},
          \qquad \mathrm{P@}k = \frac{1}{k}\sum_{i \le k} v_i   \quad (0 \text{ when none is relevant})

Context recall = the share of the reference's claims (here: the gold facts) that the contexts state (subject,
object and a cue word of the relation).
Faithfulness = the share of the answer's claims the contexts support (RAGAS asks an LLM to split the answer into
statements and to verify each; here a short answer is one claim, verified by normalised string containment).
Answer correctness = SQuAD exact match and token F1 against the gold answer (RAGAS blends an LLM-judged
factual F1 with embedding similarity).
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from labkit.retrieval.advanced.reader_data import states
from labkit.evaluation import normalize_answer

__all__ = ["context_precision_at_k", "context_recall", "faithfulness", "parse_qa_pairs", "format_qa_pairs"]


def context_precision_at_k(relevant: Sequence[bool | int], k: int) -> float:
    """RAGAS context precision of a ranked list's first ``k`` relevance flags (see the module formula)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(relevant, (str, bytes)):
        raise TypeError("relevant must be a sequence of 0/1 flags, not a string")
    v = [int(bool(x)) for x in list(relevant)[:k]]
    hits, total = 0, 0.0
    for i, r in enumerate(v, start=1):
        hits += r
        total += hits / i * r
    return total / hits if hits else 0.0


def _contains(context: str, claim: str) -> bool:
    c, n = f" {normalize_answer(context)} ", normalize_answer(claim)
    return bool(n) and f" {n} " in c


def context_recall(facts: Sequence[Sequence[str]], contexts: Sequence[str]) -> float:
    """Share of the gold facts ``(subject, relation, object)`` stated by at least one context: it names the
    subject and the object and has a cue word of the relation (:func:`labkit.retrieval.advanced.states`).
    No facts → ValueError (recall is undefined)."""
    if isinstance(contexts, str):
        raise TypeError("contexts must be a list of strings; wrap a single context in a list")
    if len(facts) == 0:
        raise ValueError("facts is empty: context recall needs at least one reference claim")
    ok = sum(any(states(c, f) for c in contexts) for f in facts)
    return ok / len(facts)


def faithfulness(answer: str, contexts: Sequence[str]) -> float:
    """Share of the answer's claims supported by the contexts. Claims: the answer split at commas and "and"
    (a short answer is one claim); a claim is supported when a context contains it after SQuAD
    normalisation. An empty answer makes no claim: the score is NaN (RAGAS also returns NaN), not 1."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    if isinstance(contexts, str):
        raise TypeError("contexts must be a list of strings; wrap a single context in a list")
    claims = [c for c in re.split(r",|\band\b", answer) if normalize_answer(c)]
    if not claims:
        return math.nan
    return sum(any(_contains(ctx, c) for ctx in contexts) for c in claims) / len(claims)


def format_qa_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    """The notes' test-set generator output: ``question: …?\\nanswer: … XXX`` per pair, separated by newlines."""
    return "\n".join(f"question: {q}\nanswer: {a} XXX" for q, a in pairs)


def parse_qa_pairs(text: str, num_questions: int | None = None) -> list[tuple[str, str]]:
    """Parse ``question: … ?`` / ``answer: … XXX`` blocks into ``(question, answer)`` pairs.

    Blocks are split at the ``XXX`` separator; each must hold one ``question:`` line ending in ``?`` and one
    ``answer:``. Raises ValueError naming the block when one is malformed, or when ``num_questions`` is given
    and a different number of pairs was found (a generator that ignored the instruction).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    pairs = []
    for i, block in enumerate(b for b in text.split("XXX") if b.strip()):
        m = re.search(r"question:\s*(.+?)\s*\n\s*answer:\s*(.+?)\s*$", block.strip(), re.S | re.I)
        if not m:
            raise ValueError(f"block {i} is not 'question: …?\\nanswer: …': {block.strip()[:60]!r}")
        q, a = m.group(1).strip(), " ".join(m.group(2).split())
        if not q.endswith("?"):
            raise ValueError(f"block {i}: the question must end with '?', got {q!r}")
        pairs.append((q, a))
    if num_questions is not None and len(pairs) != num_questions:
        raise ValueError(f"expected num_questions={num_questions} pairs, parsed {len(pairs)}")
    return pairs
