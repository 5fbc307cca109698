"""A model that learned to use tools (chapter 21): the questions, the training conversations, and the agent
loop that runs the fine-tuned course model with a calculator and the chapter-18 retriever.

**Questions (问题).** Three kinds, each a dict ``{"kind", "question", "answer", "tool", "arg"}``:

* ``direct``: single-digit sums (``What is 3+4?``), which the model should answer alone (no tool); there are
  only 100, all in training, so on these the test measures the decision *not* to call and memorisation;
* ``calc``: two- and three-digit ``+ - *`` (``What is 347*28?``), beyond a 0.9 M-parameter model;
* ``search``: single facts of the fictional world (``Where was Lionia Ravsby born?``). Train and test ask
  about *different* entities, so no fact of a test question was ever seen in training.

**Conversation (对话格式)** (the chapter-12 chat template; the observation comes back as a user turn)::

    <|user|>What is 347*28?<|end|><|assistant|><call>calc(347*28)</call><|end|>
    <|user|><obs>9716</obs><|end|><|assistant|>9716<|end|>

The loss covers the assistant turns only, so the model learns *when* and *how* to call and how to read the
observation, never to invent one. :func:`run_tool_agent` generates the first assistant turn greedily; if it is a
well-formed call it runs the tool and generates the second turn from the observation, else the first turn is the
answer. The observation of ``search`` is what the chapter-18 pipeline answers (BM25 top 3 passages +
:class:`labkit.retrieval.ExtractiveReader`), so a retrieval error becomes the agent's error, visibly.
"""
from __future__ import annotations

import json
import random
import re
from typing import Any, Sequence

import torch
from torch import nn

from labkit.agents.tools import Tool, ToolCallError, calculate, compact_to_json, format_compact_call, parse_tool_call
from labkit.datasets.world import load_corpus, load_world
from labkit.finetune import sft
from labkit.finetune.sft import END_TOKEN, apply_chat_template
from labkit.evaluation import exact_match
from labkit.retrieval import BM25, ExtractiveReader, tokenize

__all__ = ["WORLD_TEMPLATES", "arithmetic_questions", "sum_questions", "world_questions", "make_search_tool",
           "tool_conversation", "direct_conversation", "argument_candidates", "constrained_call", "copy_accuracy",
           "run_tool_agent", "run_direct", "accuracy_by_kind", "decision_counts"]

#: relation → question templates (the first is used for even-numbered entities, the second for odd ones).
WORLD_TEMPLATES: dict[str, tuple[str, str]] = {
    "born_in": ("Where was {} born?", "In which city was {} born?"),
    "born_year": ("In what year was {} born?", "When was {} born?"),
    "works_for": ("Which company does {} work for?", "Who employs {}?"),
    "founded_by": ("Who founded {}?", "Who was the founder of {}?"),
    "founded_year": ("In what year was {} founded?", "When was {} founded?"),
    "launched_year": ("In what year was the {} launched?", "When did the {} go on sale?"),
    "designed_by": ("Who designed the {}?", "Who was the designer of the {}?"),
}
_OPS = ("+", "-", "*")


def _q(kind: str, question: str, answer: str, tool: str | None = None, arg: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "question": question, "answer": answer, "tool": tool, "arg": arg}


def arithmetic_questions(n: int, seed: int, exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``n`` distinct questions ``What is a<op>b?`` with ``a, b`` in [10, 999], ops cycling ``+ - *``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < n:
        a, b, op = rng.randint(10, 999), rng.randint(10, 999), _OPS[len(out) % 3]
        expr = f"{a}{op}{b}"
        if expr in seen:
            continue
        seen.add(expr)
        out.append(_q("calc", f"What is {expr}?", calculate(expr), "calc", expr))
    return out


def sum_questions() -> list[dict[str, Any]]:
    """The 100 single-digit sums ``What is a+b?`` (a, b in 0..9), answered without a tool."""
    return [_q("direct", f"What is {a}+{b}?", str(a + b)) for a in range(10) for b in range(10)]


def world_questions(split: str, test_fraction: float = 0.25, seed: int = 0) -> list[dict[str, Any]]:
    """Questions about single facts of the shipped world, split by *subject entity* (seeded).

    ``split``: ``"train"`` or ``"test"``; an entity's facts are all in one split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    w = load_world()
    facts = [t for t in w["triples"] if t[1] in WORLD_TEMPLATES]
    subjects = sorted({s for s, _, _ in facts})
    random.Random(seed).shuffle(subjects)
    n_test = round(len(subjects) * test_fraction)
    keep = set(subjects[:n_test]) if split == "test" else set(subjects[n_test:])
    index = {s: i for i, s in enumerate(sorted(subjects))}
    out = []
    for s, rel, o in facts:
        if s in keep:
            q = WORLD_TEMPLATES[rel][index[s] % 2].format(s)
            out.append(_q("search", q, o, "search", q))
    return out


def make_search_tool(k: int = 3) -> Tool:
    """The chapter-18 retriever as a tool: BM25 top-``k`` English passages of data/world, then the extractive
    reader's short answer (``""`` when it finds none)."""
    texts = [c["text"] for c in load_corpus() if c.get("lang") == "en"]
    bm25, reader = BM25([tokenize(t) for t in texts]), ExtractiveReader()

    def search(query: str) -> str:
        top = [texts[i] for i, _ in bm25.search(tokenize(query), k)]
        return reader(query, top)

    return Tool("search", "Look up a fact about the fictional world (retriever + reader).",
                {"query": {"type": "string", "description": "the question"}}, search)


def tool_conversation(q: dict[str, Any], observation: str) -> dict[str, Any]:
    """The training record of a tool question: call, observation (user turn), answer."""
    return {"messages": [{"role": "user", "content": q["question"]},
                         {"role": "assistant", "content": format_compact_call(q["tool"], q["arg"])},
                         {"role": "user", "content": f"<obs>{observation}</obs>"},
                         {"role": "assistant", "content": q["answer"]}]}


def direct_conversation(q: dict[str, Any]) -> dict[str, Any]:
    """The training record that answers at once (direct questions, and the no-tool baseline for all)."""
    return {"messages": [{"role": "user", "content": q["question"]},
                         {"role": "assistant", "content": q["answer"]}]}


def _generate(model: nn.Module, tok: Any, messages: list[list[dict[str, str]]], max_new: int) -> list[str]:
    """Greedy replies to each conversation (a placeholder last turn is dropped by ``generate_answers``)."""
    recs = [{"messages": m + [{"role": "assistant", "content": "?"}]} for m in messages]
    return [s.strip() for s in sft.generate_answers(model, tok, recs, max_new_tokens=max_new)]


_EXPR = re.compile(r"\d+\s*[-+*/]\s*\d+")


def argument_candidates(question: str) -> list[str]:
    """The spans a call argument may be under constrained decoding: every arithmetic expression in the
    question, and the question itself."""
    return _EXPR.findall(question) + [question]


@torch.no_grad()
def constrained_call(model: nn.Module, tok: Any, question: str, max_new_tokens: int = 40) -> str:
    """Greedy first reply to ``question`` with the call's argument constrained to :func:`argument_candidates`.

    Decoding is free until the reply reads ``<call>name(``; then only tokens that keep the argument a prefix
    of a candidate are allowed (``)`` once it equals one; ``)`` is forced when no candidate extends it), then
    free again until ``<|end|>``. This is structured-output decoding (约束解码): the model still decides
    whether to call, which tool, and which span; the mask supplies the exact copy a 0.9 M-parameter model
    without induction heads cannot make.
    """
    end, close = tok.special_tokens[END_TOKEN], tok.encode(")", allowed_special="none")[0]
    cands = [tok.encode(c, allowed_special="none") for c in argument_candidates(question)]
    ids = apply_chat_template([{"role": "user", "content": question}], tok, add_generation_prompt=True)
    cache = model.new_cache()
    logits = model(torch.tensor([ids]), cache)[0, -1]
    out: list[int] = []
    arg: list[int] | None = None          # the argument so far, while inside the parentheses
    for _ in range(max_new_tokens):
        if arg is not None:
            allowed = {c[len(arg)] for c in cands if c[:len(arg)] == arg and len(c) > len(arg)}
            if any(c == arg for c in cands):
                allowed.add(close)
            mask = torch.full_like(logits, float("-inf"))
            mask[sorted(allowed)] = 0.0
            nxt = int((logits + mask).argmax())
            arg = None if nxt == close else arg + [nxt]
        else:
            nxt = int(logits.argmax())
        if nxt == end:
            break
        out.append(nxt)
        text = tok.decode(out)
        if arg is None and nxt != close and text.startswith("<call>") and text.endswith("(") and "(" not in text[:-1]:
            arg = []
        logits = model(torch.tensor([[nxt]]), cache)[0, -1]
    return tok.decode(out).strip()


@torch.no_grad()
def copy_accuracy(model: nn.Module, n: int = 16, length: int = 30, seed: int = 0,
                  vocab: tuple[int, int] = (100, 1000)) -> float:
    """In-context copying (the induction-head test): random tokens ``x`` (``n`` rows of ``length``) fed as
    ``x x``; the fraction of the second half's tokens the model predicts greedily. A model with induction heads
    scores near 1, one without scores near chance (1 / vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(vocab[0], vocab[1], (n, length), generator=g)
    ids = torch.cat([x, x], 1)
    pred = model(ids)[:, length:-1].argmax(-1)
    return float((pred == ids[:, length + 1:]).float().mean())


def run_tool_agent(model: nn.Module, tok: Any, questions: Sequence[dict[str, Any]], tools: Sequence[Tool],
                   max_new_tokens: int = 40, constrained: bool = False) -> list[dict[str, Any]]:
    """Run the two-step agent on every question; return one trace per question.

    ``constrained=False``: both replies decoded freely (greedy). ``constrained=True``: the call by
    :func:`constrained_call`, and the answer is the observation itself (LangChain's ``return_direct``).

    A trace: ``question``, ``kind``, ``gold``, ``step1`` (the first reply), ``call`` (the JSON call or
    ``None``), ``error`` (the :class:`ToolCallError` message of a bad call, else ``None``), ``observation``,
    ``prediction`` and ``correct`` (exact match after SQuAD normalisation).
    """
    if constrained:
        first = [constrained_call(model, tok, q["question"], max_new_tokens) for q in questions]
    else:
        first = _generate(model, tok, [[{"role": "user", "content": q["question"]}] for q in questions], max_new_tokens)
    traces, pending = [], []
    for q, reply in zip(questions, first):
        tr = {"question": q["question"], "kind": q["kind"], "gold": q["answer"], "step1": reply, "call": None,
              "error": None, "observation": None, "prediction": reply}
        if "<call>" in reply:
            try:
                call = parse_tool_call(compact_to_json(reply, tools), tools)
                tr["call"] = call.to_json()
                fn = {t.name: t for t in tools}[call.name].fn
                tr["observation"] = fn(**call.arguments)
                pending.append(tr)
            except ToolCallError as e:
                tr["error"], tr["prediction"] = str(e), ""
        traces.append(tr)
    convs = [[{"role": "user", "content": t["question"]}, {"role": "assistant", "content": t["step1"]},
              {"role": "user", "content": f"<obs>{t['observation']}</obs>"}] for t in pending]
    if constrained:
        answers = [t["observation"] for t in pending]
    else:
        answers = _generate(model, tok, convs, 16) if convs else []
    for t, ans in zip(pending, answers):
        t["prediction"] = ans
    for t in traces:
        t["correct"] = bool(exact_match(t["prediction"], t["gold"]))
    return traces


def run_direct(model: nn.Module, tok: Any, questions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer every question in one turn (no tool); traces with ``prediction`` and ``correct``."""
    preds = _generate(model, tok, [[{"role": "user", "content": q["question"]}] for q in questions], 16)
    return [{"question": q["question"], "kind": q["kind"], "gold": q["answer"], "prediction": p,
             "correct": bool(exact_match(p, q["answer"]))} for q, p in zip(questions, preds)]


def accuracy_by_kind(traces: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Exact-match accuracy per question kind and ``"all"`` (rounded to 4 decimals)."""
    if not traces:
        raise ValueError("traces is empty: run the agent on at least one question")
    out = {}
    for kind in sorted({t["kind"] for t in traces}) + ["all"]:
        sel = [t["correct"] for t in traces if kind == "all" or t["kind"] == kind]
        out[kind] = round(sum(sel) / len(sel), 4)
    return out


def decision_counts(traces: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Per question kind ``[right decisions, questions]``: a call of the right tool for ``calc``/``search``
    (name only, the argument is not judged), no call for ``direct``."""
    if not traces:
        raise ValueError("traces is empty: run the agent on at least one question")
    want = {"calc": "calc", "search": "search", "direct": None}
    out: dict[str, list[int]] = {}
    for t in traces:
        name = None if t.get("call") is None else json.loads(t["call"])["name"]
        row = out.setdefault(t["kind"], [0, 0])
        row[0] += name == want.get(t["kind"], "?")
        row[1] += 1
    return dict(sorted(out.items()))
