"""The reader of chapter 19: the course's tiny LLaMA fine-tuned to answer a question from a few sentences,
decoded greedily with each answer token's probability (the confidence FLARE and Self-RAG-style decisions use).

    prompt = <|user|>{sentences}\\nQ: {question}<|end|><|assistant|>   →   answer tokens … <|end|>

``answer(question, context)`` returns :class:`ReaderAnswer` (text, token probabilities, mean log-probability).
Prompts longer than the model's window keep their *last* ``max_seq_len - max_new_tokens`` tokens (the question
stays; the first context sentence is cut).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from labkit.finetune.sft import END_TOKEN, apply_chat_template
from labkit.retrieval.advanced.reader_data import reader_record

__all__ = ["ReaderAnswer", "LMReader", "candidate_spans"]


@dataclass
class ReaderAnswer:
    """One greedy answer: ``text``, ``probs`` (the probability of each generated token, ``<|end|>`` included)
    and ``ids`` (the generated token ids, ``<|end|>`` excluded)."""

    text: str
    probs: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    @property
    def min_prob(self) -> float:
        """The least confident token's probability (FLARE's trigger: retrieve when it is below θ)."""
        return min(self.probs) if self.probs else 0.0

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability of the generated tokens (length-normalised confidence)."""
        return sum(math.log(max(p, 1e-12)) for p in self.probs) / len(self.probs) if self.probs else -math.inf


_SPAN_RE = re.compile(r"(?<!\d)(?:1[89]\d\d|20\d\d)(?!\d)|[A-Z][A-Za-z0-9'-]*(?:\s+[A-Z][A-Za-z0-9'-]*)*")
_NOT_NAME = {"The", "It", "Its", "He", "She", "His", "Her", "In", "Since", "Born", "Friends", "Notable", "Companies",
             "Relations", "Q"}


def candidate_spans(text: str) -> list[str]:
    """Answer candidates of an extractive reader: years (1800–2099) and runs of capitalised Latin words
    (names; a name inside Chinese text ends at the first CJK character), with a leading sentence word such as
    "The" or "Since" dropped; distinct, in order of appearance."""
    out: list[str] = []
    for line in text.split("\n"):
        for m in _SPAN_RE.finditer(line):
            words = m.group(0).split()
            while words and words[0] in _NOT_NAME:
                words = words[1:]
            span = " ".join(words).rstrip(":")
            if span and span not in out:
                out.append(span)
    return out


class LMReader:
    """Greedy question answering with a labkit ``Llama`` and its tokenizer (chat template of chapter 12)."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_new_tokens: int = 12) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        self.model, self.tok, self.max_new = model.eval(), tokenizer, max_new_tokens
        self.end = tokenizer.special_tokens[END_TOKEN]
        self.window = model.config.max_seq_len - max_new_tokens

    def prompt_ids(self, question: str, context: Sequence[str]) -> list[int]:
        """Token ids of the prompt (chat template + ``<|assistant|>``), cut to the window from the left."""
        ids = apply_chat_template(reader_record(question, context)["messages"], self.tok, add_generation_prompt=True)
        return ids[-self.window:]

    @torch.no_grad()
    def answer_many(self, questions: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[ReaderAnswer]:
        """Greedy answers to every ``(question, context)`` pair; prompts of equal length decode together."""
        if isinstance(questions, str):
            raise TypeError("questions must be a list of strings; wrap a single question in a list")
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts; pass one context each")
        prompts = [self.prompt_ids(q, c) for q, c in zip(questions, contexts)]
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_len.setdefault(len(p), []).append(i)
        toks: list[list[int]] = [[] for _ in prompts]
        probs: list[list[float]] = [[] for _ in prompts]
        for _, idxs in sorted(by_len.items()):
            cache = self.model.new_cache()
            logits = self.model(torch.tensor([prompts[i] for i in idxs]), cache)[:, -1]
            done = torch.zeros(len(idxs), dtype=torch.bool)
            for _ in range(self.max_new):
                p = torch.softmax(logits.double(), -1)
                nxt = p.argmax(-1)
                for j, i in enumerate(idxs):
                    if not done[j]:
                        probs[i].append(float(p[j, nxt[j]]))
                        if int(nxt[j]) == self.end:
                            done[j] = True
                        else:
                            toks[i].append(int(nxt[j]))
                if bool(done.all()):
                    break
                logits = self.model(nxt[:, None], cache)[:, -1]
        return [ReaderAnswer(self.tok.decode(t).strip(), pr, t) for t, pr in zip(toks, probs)]

    @torch.no_grad()
    def span_scores(self, question: str, context: Sequence[str], spans: Sequence[str]) -> list[ReaderAnswer]:
        """Teacher-forced probabilities of each candidate answer (its tokens, then ``<|end|>``) after the prompt:
        ``log p(span) = Σ_t log p(y_t | prompt, y_<t)``, one forward pass per span (batched by length)."""
        prompt = self.prompt_ids(question, context)
        seqs = [prompt + self.tok.encode(sp) + [self.end] for sp in spans]
        out: list[ReaderAnswer] = [ReaderAnswer(sp) for sp in spans]
        by_len: dict[int, list[int]] = {}
        for i, sq in enumerate(seqs):
            by_len.setdefault(len(sq), []).append(i)
        for n, idxs in by_len.items():
            ids = torch.tensor([seqs[i][-self.model.config.max_seq_len:] for i in idxs])
            logp = torch.log_softmax(self.model(ids[:, :-1]).double(), -1)
            k = n - len(prompt)                                  # answer tokens + <|end|>
            tgt = ids[:, -k:]
            lp = logp[:, -k:].gather(-1, tgt[..., None])[..., 0]
            for row, i in enumerate(idxs):
                out[i].probs = lp[row].exp().tolist()
                out[i].ids = tgt[row, :-1].tolist()
        return out

    def answer_extractive(self, question: str, context: Sequence[str]) -> ReaderAnswer:
        """The candidate span of the context (:func:`candidate_spans`) with the highest log-probability under
        the reader; an empty answer when the context has no candidate (closed-book)."""
        spans = candidate_spans(" ".join(context))
        if not spans:
            return ReaderAnswer("")
        scored = self.span_scores(question, context, spans)
        return max(scored, key=lambda a: (sum(math.log(max(p, 1e-300)) for p in a.probs), -spans.index(a.text)))

    def read_many(self, questions: Sequence[str], contexts: Sequence[Sequence[str]]) -> list[ReaderAnswer]:
        """The chapter's reading mode: :meth:`answer_extractive` (the best-scored span of the context) where the
        context has candidate spans, greedy generation (:meth:`answer_many`) where it has none (closed-book)."""
        if isinstance(questions, str):
            raise TypeError("questions must be a list of strings; wrap a single question in a list")
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts; pass one context each")
        out: list[ReaderAnswer | None] = [None] * len(questions)
        free = [i for i, c in enumerate(contexts) if not candidate_spans(" ".join(c))]
        for i, a in zip(free, self.answer_many([questions[i] for i in free], [contexts[i] for i in free])):
            out[i] = a
        for i, (q, c) in enumerate(zip(questions, contexts)):
            if out[i] is None:
                out[i] = self.answer_extractive(q, c)
        return [a for a in out if a is not None]

    def answer(self, question: str, context: Sequence[str]) -> ReaderAnswer:
        """One greedy answer (see :meth:`answer_many`)."""
        return self.answer_many([question], [context])[0]
