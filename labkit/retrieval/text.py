"""Text handling for retrieval (chapters 18-20): the tokenizer (English words, Chinese characters plus
character bigrams), the stopword list, lossless sentence splitting, and sentences with pronouns replaced by
the passage title.

    tokenize("The Kestrel-2 出生在") == ['the', 'kestrel-2', '出', '生', '在', '出生', '生在']
"""
from __future__ import annotations

import re
from typing import Sequence

__all__ = ["STOPWORDS", "tokenize", "split_sentences", "sentences_with_titles"]


_CJK = "\u4e00-\u9fff\u3400-\u4dbf"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[a-z0-9]+(?:-[a-z0-9]+)*")
STOPWORDS = frozenset("""a an the of in on at to for by with from and or is are was were be been being it its
this that these those as which who whom whose what when where how why did does do has have had he she his her
their they them there here into than then so such not no yes one after before since while also just very""".split())


def tokenize(text: str, *, stopwords: bool = False, bigrams: bool = True) -> list[str]:
    """Lowercase word tokens; Chinese (CJK) characters become single-character tokens plus bigrams.

    ``tokenize("The Kestrel-2 出生在")`` → ``['the', 'kestrel-2', '出', '生', '在', '出生', '生在']``: hyphenated
    names stay one token, digits form words, bigrams join adjacent CJK characters only.
    ``stopwords=True`` drops common English function words.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    low = text.lower().replace("'s ", " ")
    toks = _TOKEN_RE.findall(low)
    if stopwords:
        toks = [t for t in toks if t not in STOPWORDS]
    if bigrams:
        runs = re.findall(rf"[{_CJK}]{{2,}}", low)
        toks += [r[i:i + 2] for r in runs for i in range(len(r) - 1)]
    return toks


_SENT_SPLIT = re.compile(r"(?<=[。！？])|(?<=[.!?])(?=\s)|(?<=\n\n)")


def split_sentences(text: str) -> list[str]:
    """Sentence pieces for English (. ! ? followed by space) and Chinese (。！？); lossless: ``"".join`` == text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [s for s in _SENT_SPLIT.split(text) if s]


_PRONOUN_RE = re.compile(r"^(She|He|It|The company|The device|The city|The alliance|The event)\b")
_PRONOUN_MID_RE = re.compile(r"(?<=\s)(she|he|it)(?=\s)")


def sentences_with_titles(passages: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(passage rank, title, sentence)`` for every sentence, with a subject pronoun (He/She/It, "The company",
    她/他/它/公司) replaced by the passage's ``# Title``: the simplest coreference resolution (指代消解)."""
    if isinstance(passages, str):
        raise TypeError("passages must be a list of strings; wrap a single passage in a list")
    out = []
    for r, p in enumerate(passages):
        if not isinstance(p, str):
            raise TypeError(f"passages[{r}] must be a str, got {type(p).__name__}")
        m = re.search(r"^# (.+)$", p, re.M)
        title = m.group(1).strip() if m else ""
        body = "\n".join(line for line in p.splitlines() if not line.startswith("#"))
        for s in split_sentences(body):
            s = s.strip()
            if not s:
                continue
            if title:
                s = _PRONOUN_RE.sub(title, s)
                s = re.sub(r"^Its\b", title + "'s", s)
                s = _PRONOUN_MID_RE.sub(title, s)
                s = re.sub(r"(?<=[。，])(她|他|它|公司)", title, s)
                s = re.sub(r"^(她|他|它|公司)", title, s)
            out.append((r, title, s))
    return out
