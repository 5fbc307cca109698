"""A long seeded dialogue with facts to remember, and the memory comparison of chapter 21.

:func:`make_dialogue` writes ``n_turns`` exchanges: small talk (requests and long-ish assistant replies) with
the user's facts (:data:`FACTS`) stated once each in the first two thirds, sometimes as the first sentence of a
message, sometimes after a lead-in sentence. Two facts need two hops (``my sister is Mira`` … later …
``Mira is a nurse`` → *What does my sister do?*). After the dialogue come the probes: one question per fact.

:func:`compare_memories` replays the dialogue into each memory, then for every probe takes
``memory.context(probe)``: **recall** = fraction of probes whose answer occurs in that context (case-insensitive;
the context must *contain* the fact for a model to use it), **tokens** = mean token count of the context
(``count_tokens``, e.g. tiktoken cl100k). The shipped file is ``data/agents/dialogue.json``
(``python -m labkit.experiments.dialogue`` rewrites it).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from labkit.core.io import read_json
from labkit.core.manifest import verify_data_file
from labkit.core.paths import DATA

__all__ = ["FACTS", "DIALOGUE_PATH", "make_dialogue", "load_dialogue", "replay", "compare_memories"]

DIALOGUE_PATH: Path = DATA / "agents" / "dialogue.json"

#: (statement, probe question, answer); statements 12 and 13 refer to earlier facts (two hops).
FACTS: list[tuple[str, str, str]] = [
    ("my sister is Mira", "What is my sister's name?", "Mira"),
    ("my dog is Biscuit", "What is the name of my dog?", "Biscuit"),
    ("my home city is Porto", "Which city is my home city?", "Porto"),
    ("my employer is Halden Works", "Who is my employer?", "Halden Works"),
    ("my favourite food is mushroom risotto", "What is my favourite food?", "mushroom risotto"),
    ("my doctor is Dr Okafor", "Who is my doctor?", "Okafor"),
    ("my car is a green Volvo", "What car do I drive? Describe my car.", "green Volvo"),
    ("my birthday is in March", "When is my birthday?", "March"),
    ("my favourite sport is rowing", "What is my favourite sport?", "rowing"),
    ("my manager is Ingrid", "Who is my manager?", "Ingrid"),
    ("my locker number is 4417", "What is my locker number?", "4417"),
    ("my flight is on Friday", "When is my flight?", "Friday"),
    ("Mira is a nurse", "What does my sister do for a living?", "nurse"),
    ("Ingrid is from Oslo", "Where does my manager come from?", "Oslo"),
]
_LEADS = ["Long day today.", "Quick thing before I forget.", "Thanks for the help so far.", "Okay, next topic.",
          "Hm, let me think.", "Good morning again."]
_TOPICS = ["a lentil soup recipe", "learning chess openings", "fixing a squeaky door", "planning a hiking trip",
           "keeping basil alive", "writing a cover letter", "choosing a laptop", "sleeping better",
           "learning to juggle", "saving on heating", "a birthday gift for a friend", "starting to run",
           "organising a small library", "baking sourdough", "reading more books", "making cold brew coffee"]
_REQUESTS = ["Can you give me tips on {}?", "What should I know about {}?", "I need advice on {}.",
             "Any ideas about {}?"]
_REPLIES = ["Here are a few ideas about {}. Start small and keep notes on what works. Most people get better "
            "results by repeating a simple routine than by buying more equipment. Check back in a week.",
            "Good question about {}. The usual advice is to prepare in advance, to set a time limit, and to ask "
            "someone with experience. Keep the first attempt simple and adjust it afterwards.",
            "On {}: do not overthink it. Pick one method, follow it for a while, and compare before and after. "
            "If something feels wrong, change one thing at a time so that you learn what mattered."]


def _fact_message(rng: random.Random, statement: str) -> str:
    text = statement[0].upper() + statement[1:] + "."
    return f"{rng.choice(_LEADS)} {text}" if rng.random() < 0.5 else text


def make_dialogue(n_turns: int = 60, seed: int = 0) -> dict[str, Any]:
    """``{"turns": [{"user", "assistant"}], "probes": [{"question", "answer", "stated_at"}], "seed"}``."""
    if isinstance(n_turns, bool) or not isinstance(n_turns, int) or n_turns < 2 * len(FACTS):
        raise ValueError(f"n_turns must be an int >= {2 * len(FACTS)} (room for the facts), got {n_turns!r}")
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(1, (2 * n_turns) // 3), len(FACTS)))
    hop_free = [i for i in range(len(FACTS) - 2)]
    order = hop_free[:]
    rng.shuffle(order)
    order += [len(FACTS) - 2, len(FACTS) - 1]   # the two-hop facts come after the facts they build on
    at = dict(zip(order, slots))
    by_slot = {s: i for i, s in at.items()}
    turns = []
    for t in range(n_turns):
        topic = rng.choice(_TOPICS)
        if t in by_slot:
            user = _fact_message(rng, FACTS[by_slot[t]][0])
            reply = "Noted, I will remember that. " + rng.choice(_REPLIES).format(topic)
        else:
            user, reply = rng.choice(_REQUESTS).format(topic), rng.choice(_REPLIES).format(topic)
        turns.append({"user": user, "assistant": reply})
    probes = [{"question": q, "answer": a, "stated_at": at[i]} for i, (_, q, a) in enumerate(FACTS)]
    return {"seed": seed, "turns": turns, "probes": probes}


def load_dialogue(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped dialogue (sha256-checked against data/MANIFEST)."""
    path = DIALOGUE_PATH if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with `python -m labkit.experiments.dialogue`")
    verify_data_file(path, "python -m labkit.experiments.dialogue")
    return read_json(path)


def replay(memory: Any, turns: Sequence[Mapping[str, str]]) -> Any:
    """Save every exchange into ``memory`` (in order) and return it."""
    for t in turns:
        memory.save(t["user"], t["assistant"])
    return memory


def compare_memories(factories: Mapping[str, Callable[[], Any]], dialogue: Mapping[str, Any],
                     count_tokens: Callable[[str], int]) -> dict[str, dict[str, Any]]:
    """name → ``{"recall", "tokens", "hits"}`` for each memory built by ``factories[name]()``.

    ``recall``: fraction of probes whose answer is in ``context(question)``; ``tokens``: mean tokens of that
    context; ``hits``: per-probe booleans (probe order).
    """
    if not factories:
        raise ValueError("factories is empty: pass name -> zero-argument constructor of a memory")
    out = {}
    for name, make in factories.items():
        mem = replay(make(), dialogue["turns"])
        ctxs = [mem.context(p["question"]) for p in dialogue["probes"]]
        hits = [p["answer"].lower() in c.lower() for p, c in zip(dialogue["probes"], ctxs)]
        out[name] = {"recall": round(sum(hits) / len(hits), 4),
                     "tokens": round(sum(count_tokens(c) for c in ctxs) / len(ctxs), 1), "hits": hits}
    return out

