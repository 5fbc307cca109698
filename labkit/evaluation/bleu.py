"""BLEU (Papineni et al., 2002) from scratch, equal to ``sacrebleu`` 2.x with its default tokenizer ``13a``.

Per segment, with hypothesis n-gram counts h(g) and, over the references, the largest count of each n-gram
r(g) = max_j r_j(g):

    correct_n = Σ_{|g| = n} min(h(g), r(g))        (clipped matches)      total_n = Σ_{|g| = n} h(g)

The *corpus* sums these statistics over all segments first (it is **not** the mean of sentence BLEUs):

    p_n = Σ correct_n / Σ total_n,  BP = 1 if c ≥ r else exp(1 − r/c),  BLEU = 100·BP·exp((1/N) Σ_n log p_n)

with c the hypothesis length and r, per segment, the reference length closest to it (ties → the
shorter), summed over segments. Smoothing (Chen & Cherry, 2014) replaces a zero p_n: ``floor`` (ε/total_n), ``add-k``
(k added to correct_n and total_n for n ≥ 2), ``exp`` (1/(2^m · total_n) for the m-th zero order, NIST); the
effective order (``sentence_bleu``'s default) averages only over the orders n with total_n > 0.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

__all__ = ["BLEUResult", "tokenize_13a", "ngram_counts", "bleu_statistics", "closest_ref_length",
           "bleu_from_statistics", "corpus_bleu", "corpus_bleu_score", "sentence_bleu", "SMOOTH_METHODS"]

#: Smoothing methods and their default value (``None``: the method takes no value).
SMOOTH_METHODS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}

_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),   # split off punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),                 # period / comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),                 # period / comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),                      # dash after a digit
)


@dataclass(frozen=True)
class BLEUResult:
    """A BLEU score (0-100) with its parts: n-gram precisions in percent, brevity penalty, lengths, counts."""

    score: float
    precisions: tuple[float, ...]
    bp: float
    sys_len: int
    ref_len: int
    counts: tuple[float, ...]
    totals: tuple[float, ...]


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenisation as sacrebleu's ``13a``: unescape 4 HTML entities, split off punctuation.

    Returns the tokens joined by single spaces. ``"Hello, world."`` → ``"Hello , world ."``; ``"3.5"``
    and ``"1,000"`` stay whole (a period or comma between digits is kept).
    """
    if not isinstance(line, str):
        raise TypeError(f"`line` must be a str, got {type(line).__name__}")
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for ent, ch in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(ent, ch)
    line = f" {line} "
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    """Counts of every n-gram (a tuple of tokens) with 1 ≤ n ≤ max_order."""
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def closest_ref_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length closest to ``hyp_len``; on a tie the shorter one (sacrebleu / mteval)."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def bleu_statistics(hypothesis: str, references: Sequence[str], max_order: int = 4,
                    tokenize: bool = True) -> list[int]:
    """Sufficient statistics of one segment: [hyp_len, ref_len, correct_1..N, total_1..N] (length 2 + 2N)."""
    hyp = (tokenize_13a(hypothesis) if tokenize else hypothesis).split()
    refs = [(tokenize_13a(r) if tokenize else r).split() for r in references]
    ref_max: Counter = Counter()
    for ref in refs:
        for g, c in ngram_counts(ref, max_order).items():
            ref_max[g] = max(ref_max[g], c)
    correct, total = [0] * max_order, [0] * max_order
    for g, c in ngram_counts(hyp, max_order).items():
        total[len(g) - 1] += c
        correct[len(g) - 1] += min(c, ref_max.get(g, 0))
    return [len(hyp), closest_ref_length(len(hyp), [len(r) for r in refs])] + correct + total


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -9999999999.0        # sacrebleu floors log(0) to a huge negative number


def bleu_from_statistics(stats: Sequence[float], max_order: int = 4, smooth_method: str = "none",
                         smooth_value: float | None = None, effective_order: bool = False) -> BLEUResult:
    """BLEU from summed statistics ``[c, r, correct_1..N, total_1..N]`` (see the module docstring)."""
    if smooth_method not in SMOOTH_METHODS:
        raise ValueError(f"smooth_method must be one of {sorted(SMOOTH_METHODS)}, got {smooth_method!r}")
    if len(stats) != 2 + 2 * max_order:
        raise ValueError(f"stats has {len(stats)} entries; expected 2 + 2 * max_order = {2 + 2 * max_order}")
    k = SMOOTH_METHODS[smooth_method] if smooth_value is None else smooth_value
    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct, total = list(stats[2:2 + max_order]), list(stats[2 + max_order:])
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    prec = [0.0] * max_order
    if not any(correct):
        return BLEUResult(0.0, tuple(prec), bp, sys_len, ref_len, tuple(correct), tuple(total))
    n_used, halvings = max_order, 1.0
    for n in range(max_order):
        if smooth_method == "add-k" and n > 0:
            correct[n] += k
            total[n] += k
        if total[n] == 0:
            break
        if effective_order:
            n_used = n + 1
        if correct[n] == 0:
            if smooth_method == "exp":
                halvings *= 2
                prec[n] = 100.0 / (halvings * total[n])
            elif smooth_method == "floor":
                prec[n] = 100.0 * k / total[n]
        else:
            prec[n] = 100.0 * correct[n] / total[n]
    score = bp * math.exp(sum(_log(p) for p in prec[:n_used]) / n_used)
    return BLEUResult(score, tuple(prec), bp, sys_len, ref_len, tuple(correct), tuple(total))


def _check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
        raise TypeError("hypotheses must be a list of strings (one per segment); wrap a single one as [hyp]")
    if isinstance(references, str) or len(references) == 0:
        raise ValueError("references must be a non-empty list of reference streams, each a list with one "
                         "string per hypothesis: [[ref1_seg1, ref1_seg2, ...], [ref2_seg1, ...]]")
    for j, stream in enumerate(references):
        if isinstance(stream, str):
            raise TypeError(f"references[{j}] is a str; pass a list of streams, e.g. [refs] not refs")
        if len(stream) != len(hypotheses):
            raise ValueError(f"references[{j}] has {len(stream)} segments but hypotheses has {len(hypotheses)}; "
                             "every reference stream needs one string per hypothesis")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, smooth_method: str = "exp",
                smooth_value: float | None = None, max_order: int = 4, effective_order: bool = False,
                lowercase: bool = False) -> BLEUResult:
    """Corpus BLEU with sacrebleu's signature: ``references`` is a list of *streams*, each one string per
    hypothesis (``[[r1_seg1, r1_seg2], [r2_seg1, r2_seg2]]``). Statistics are summed over segments, then
    combined once (module docstring); ``None`` in a stream means "no such reference for this segment"."""
    _check_corpus(hypotheses, references)
    if not hypotheses:
        raise ValueError("hypotheses is empty; BLEU needs at least one segment")
    summed = [0] * (2 + 2 * max_order)
    for i, hyp in enumerate(hypotheses):
        refs = [s[i] for s in references if s[i] is not None]
        if not refs:
            raise ValueError(f"segment {i} has no reference (all streams give None)")
        if lowercase:
            hyp, refs = hyp.lower(), [r.lower() for r in refs]
        summed = [a + b for a, b in zip(summed, bleu_statistics(hyp, refs, max_order))]
    return bleu_from_statistics(summed, max_order, smooth_method, smooth_value, effective_order)


def sentence_bleu(hypothesis: str, references: Sequence[str], *, smooth_method: str = "exp",
                  smooth_value: float | None = None, max_order: int = 4, effective_order: bool = True) -> BLEUResult:
    """BLEU of one segment against its references (a list of strings), sacrebleu's ``sentence_bleu``."""
    if not isinstance(hypothesis, str):
        raise TypeError(f"hypothesis must be a str, got {type(hypothesis).__name__}")
    if isinstance(references, str):
        raise TypeError("references must be a list of strings; wrap a single reference as [ref]")
    if len(references) == 0:
        raise ValueError("references is empty; pass at least one reference string")
    return bleu_from_statistics(bleu_statistics(hypothesis, references, max_order), max_order, smooth_method,
                                smooth_value, effective_order)


def corpus_bleu_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]], smooth_method: str = "exp",
                      max_order: int = 4) -> float:
    """Corpus BLEU as a plain float in [0, 100] (13a tokens, no effective order): ``corpus_bleu(...).score``."""
    return corpus_bleu(hypotheses, references, smooth_method=smooth_method, max_order=max_order).score
