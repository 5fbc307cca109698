"""Conversation memory (对话记忆), chapter 21, part 1: the memories that keep (part of) the transcript.

The source notes (digest part A, 12) list eight kinds, after LangChain's classes:

====================  ==================================  =====================================
kind                  LangChain class                     here
====================  ==================================  =====================================
full buffer           ``ConversationBufferMemory``        :class:`BufferMemory`
sliding window (k)    ``ConversationBufferWindowMemory``  :class:`WindowMemory`
entity                ``ConversationEntityMemory``        :class:`~labkit.agents.memory_store.EntityMemory`
knowledge graph       ``ConversationKGMemory``            :class:`~labkit.agents.memory_store.KGMemory`
summary               ``ConversationSummaryMemory``       :class:`SummaryMemory` (extractive, rule-based)
summary + buffer      ``ConversationSummaryBufferMemory`` :class:`SummaryBufferMemory`
token buffer          ``ConversationTokenBufferMemory``   :class:`TokenBufferMemory`
vector retrieval      ``VectorStoreRetrieverMemory``      :class:`~labkit.agents.memory_store.VectorMemory`
====================  ==================================  =====================================

Every memory has ``save(user, assistant)`` (one exchange) and ``context(query) -> str`` (the text that goes
into the next prompt; ``query`` is the new user message, used by the memories that select by content).

**Token buffer, corrected.** The notes say the token buffer keeps "the most recent *and most critical*"
turns. It keeps the most recent messages whose total token count fits ``max_tokens`` and drops the oldest
first; nothing measures importance. The invariant: after every save, ``tokens(context) <= max_tokens``.

**Summary.** LangChain asks an LLM to rewrite a running summary. Ours is *extractive and rule-based*: the first
sentence of each user message (no model), so it is cheap and deterministic and loses whatever a user said
after their first sentence; the comparison in the notebook measures that loss.
"""
from __future__ import annotations

import re
from typing import Callable

__all__ = ["Message", "window_messages", "token_buffer_messages", "BufferMemory", "WindowMemory",
           "TokenBufferMemory", "SummaryMemory", "SummaryBufferMemory", "first_sentence", "render_messages"]

Message = tuple[str, str]
TokenCounter = Callable[[str], int]


def render_messages(messages: list[Message]) -> str:
    """``Human: …`` / ``AI: …`` lines, LangChain's buffer string."""
    return "\n".join(f"{'Human' if r == 'user' else 'AI'}: {t}" for r, t in messages)


def window_messages(messages: list[Message], k: int) -> list[Message]:
    """The last ``k`` exchanges: the last ``2k`` messages (all of them if there are fewer)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (exchanges kept), got {k!r}")
    return list(messages[-2 * k:])


def token_buffer_messages(messages: list[Message], max_tokens: int, count_tokens: TokenCounter) -> list[Message]:
    """The longest *suffix* of ``messages`` whose :func:`render_messages` text has ``<= max_tokens`` tokens.

    Walks back from the newest message and stops at the first one that would overflow the budget (older
    messages are never skipped over to fill the space: the buffer is a contiguous, most-recent window).
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if not callable(count_tokens):
        raise TypeError("count_tokens must be a callable str -> int, e.g. lambda s: len(tok.encode(s))")
    kept: list[Message] = []
    for m in reversed(messages):
        if count_tokens(render_messages([m, *kept])) > max_tokens:
            break
        kept.insert(0, m)
    return kept


def _check_text(user: str, assistant: str) -> None:
    if not isinstance(user, str) or not isinstance(assistant, str):
        raise TypeError(f"user and assistant must be str, got {type(user).__name__}, {type(assistant).__name__}")


class BufferMemory:
    """Every message so far (grows without bound)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def save(self, user: str, assistant: str) -> None:
        _check_text(user, assistant)
        self.messages += [("user", user), ("assistant", assistant)]

    def context(self, query: str = "") -> str:
        return render_messages(self.messages)


class WindowMemory(BufferMemory):
    """The last ``k`` exchanges (``2k`` messages); ``k=1`` gives exactly the last two messages."""

    def __init__(self, k: int) -> None:
        window_messages([], k)   # checks k
        super().__init__()
        self.k = k

    def context(self, query: str = "") -> str:
        return render_messages(window_messages(self.messages, self.k))


class TokenBufferMemory(BufferMemory):
    """The most recent messages whose rendered lines total at most ``max_tokens`` (oldest dropped first).

    Tokens are counted per rendered line (``Human: …``) with ``count_tokens``; the lines are joined by one
    newline, counted as well. A single message longer than the budget is dropped whole, never cut.
    """

    def __init__(self, max_tokens: int, count_tokens: TokenCounter) -> None:
        token_buffer_messages([], max_tokens, count_tokens)   # checks the arguments
        super().__init__()
        self.max_tokens, self.count = max_tokens, count_tokens

    def save(self, user: str, assistant: str) -> None:
        super().save(user, assistant)
        self.messages = token_buffer_messages(self.messages, self.max_tokens, self.count)


def first_sentence(text: str) -> str:
    """The text up to and including its first ``.``, ``!`` or ``?`` (the whole text if none)."""
    m = re.match(r"\s*(.+?[.!?])(\s|$)", text, re.S)
    return (m.group(1) if m else text).strip()


class SummaryMemory:
    """A running *extractive* summary: the first sentence of every user message (no model, rule-based)."""

    def __init__(self) -> None:
        self.summary: list[str] = []

    def save(self, user: str, assistant: str) -> None:
        _check_text(user, assistant)
        self.summary.append(first_sentence(user))

    def context(self, query: str = "") -> str:
        return "Summary: " + " ".join(self.summary) if self.summary else ""


class SummaryBufferMemory:
    """Recent messages verbatim within ``max_tokens``; older ones folded into the extractive summary."""

    def __init__(self, max_tokens: int, count_tokens: TokenCounter) -> None:
        self.buffer = TokenBufferMemory(max_tokens, count_tokens)
        self.summary = SummaryMemory()
        self._all: list[Message] = []

    def save(self, user: str, assistant: str) -> None:
        self.buffer.save(user, assistant)
        combined = self._all + [("user", user), ("assistant", assistant)]
        cut = len(combined) - len(self.buffer.messages)
        self._all = combined[cut:]
        for role, text in combined[:cut]:
            if role == "user":
                self.summary.summary.append(first_sentence(text))

    def context(self, query: str = "") -> str:
        return "\n".join(p for p in (self.summary.context(), self.buffer.context()) if p)
