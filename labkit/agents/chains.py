"""Chains (链), chapter 21: ``prompt | llm | parser`` in a few lines, LangChain's composition without it.

A :class:`Runnable` wraps one step ``x -> y``; ``a | b`` is the :class:`Chain` that feeds a's output to b.
:func:`as_runnable` lifts the course's pieces: a :class:`~labkit.agents.prompts.PromptTemplate` (dict of
variables → prompt text), a parser (text → data, via its ``parse``) and any callable (an LLM: text → text).
``Chain.invoke(x, trace=list)`` appends ``(step name, output)`` per step, which is how one debugs a chain.

:class:`RuleLLM` is a stand-in model for demos and tests: the first rule whose regular expression matches
the prompt gives the reply (``\\1`` … refer to its groups).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from labkit.agents.prompts import PromptTemplate

__all__ = ["Runnable", "Chain", "as_runnable", "RuleLLM"]


class Runnable:
    """One named step ``fn(x)``; compose with ``|``."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn, self.name = fn, name or getattr(fn, "__name__", type(fn).__name__)

    def invoke(self, x: Any, trace: list[tuple[str, Any]] | None = None) -> Any:
        y = self.fn(x)
        if trace is not None:
            trace.append((self.name, y))
        return y

    def __or__(self, other: Any) -> "Chain":
        return Chain([self, as_runnable(other)])

    def __ror__(self, other: Any) -> "Chain":
        return Chain([as_runnable(other), self])


class Chain(Runnable):
    """Steps run left to right; a chain piped into another flattens into one list of steps."""

    def __init__(self, steps: Sequence[Runnable]) -> None:
        flat: list[Runnable] = []
        for s in steps:
            flat.extend(s.steps if isinstance(s, Chain) else [s])
        if not flat:
            raise ValueError("a chain needs at least one step")
        self.steps = flat
        super().__init__(self._run, " | ".join(s.name for s in flat))

    def _run(self, x: Any) -> Any:
        for s in self.steps:
            x = s.invoke(x)
        return x

    def invoke(self, x: Any, trace: list[tuple[str, Any]] | None = None) -> Any:
        for s in self.steps:
            x = s.invoke(x, trace)
        return x


def _format_prompt(tmpl: PromptTemplate) -> Callable[[Any], str]:
    def prompt(values: Any) -> str:
        if not isinstance(values, dict):
            raise TypeError(f"a prompt step takes a dict of variables {tmpl.input_variables}, "
                            f"got {type(values).__name__}")
        return tmpl.format(**values)
    return prompt


def as_runnable(x: Any) -> Runnable:
    """A :class:`Runnable` from a Runnable, a PromptTemplate, a parser (has ``parse``) or a callable."""
    if isinstance(x, Runnable):
        return x
    if isinstance(x, PromptTemplate):
        return Runnable(_format_prompt(x), "prompt")
    if hasattr(x, "parse") and callable(x.parse):
        return Runnable(x.parse, type(x).__name__)
    if callable(x):
        return Runnable(x)
    raise TypeError(f"cannot use a {type(x).__name__} as a chain step; pass a PromptTemplate, a parser "
                    "(with .parse) or a callable")


class RuleLLM:
    """A deterministic stand-in LLM: ``rules`` are ``(regex, reply)``; the first match answers, else ``default``."""

    def __init__(self, rules: Sequence[tuple[str, str]], default: str = "I don't know.") -> None:
        self.rules = [(re.compile(p, re.S), r) for p, r in rules]
        self.default = default
        self.__name__ = "llm"

    def __call__(self, prompt: str) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        for pat, reply in self.rules:
            m = pat.search(prompt)
            if m:
                return m.expand(reply)
        return self.default
