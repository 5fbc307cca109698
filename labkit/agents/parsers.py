"""Output parsers (输出解析器), chapter 21: format instructions for the model, and a parser that turns its text
back into data or raises :class:`OutputParserError` (a ``ValueError``) saying what was malformed.

* :class:`KeyValueParser`: ``key: value`` lines for a fixed list of keys. Round trip:
  ``parse(render(d)) == d`` for every dict of one-line string values.
* :class:`JSONParser`: the first ``{...}`` object in the text (models like to add prose around it), with
  required keys.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["OutputParserError", "KeyValueParser", "JSONParser"]


class OutputParserError(ValueError):
    """The model's output does not have the promised format."""


def _check_keys(keys: Sequence[str]) -> list[str]:
    if isinstance(keys, str) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise TypeError("keys must be a non-empty list of non-empty strings, e.g. ['name', 'city']")
    if len(set(keys)) != len(keys):
        raise ValueError(f"keys must be distinct, got {list(keys)}")
    return list(keys)


@dataclass(frozen=True)
class KeyValueParser:
    """``key: value`` lines, one per key in ``keys`` (order free, blank lines and surrounding text ignored)."""

    keys: Sequence[str]

    def __post_init__(self) -> None:
        _check_keys(self.keys)
        for k in self.keys:
            if ":" in k or "\n" in k:
                raise ValueError(f"key {k!r} must not contain ':' or a newline")

    def format_instructions(self) -> str:
        lines = "\n".join(f"{k}: <{k}>" for k in self.keys)
        return f"Answer with exactly these lines, one per key:\n{lines}"

    def render(self, values: Mapping[str, str]) -> str:
        """The text a perfect model would write for ``values``."""
        bad = [k for k in self.keys if not isinstance(values.get(k), str) or "\n" in values[k]]
        if bad or set(values) != set(self.keys):
            raise ValueError(f"values must map exactly {list(self.keys)} to one-line strings; "
                             f"check {bad or sorted(values)}")
        return "\n".join(f"{k}: {values[k]}" for k in self.keys)

    def parse(self, text: str) -> dict[str, str]:
        """``{key: value}``; raises OutputParserError for a missing, repeated or empty key."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        found: dict[str, str] = {}
        for line in text.splitlines():
            m = re.match(r"^\s*([^:]+?)\s*:\s?(.*)$", line)
            if m and m.group(1) in self.keys:
                if m.group(1) in found:
                    raise OutputParserError(f"key {m.group(1)!r} appears twice in the output")
                found[m.group(1)] = m.group(2).rstrip()
        missing = [k for k in self.keys if not found.get(k)]
        if missing:
            raise OutputParserError(f"output lacks the line(s) {[k + ': ...' for k in missing]}; got {text[:80]!r}")
        return {k: found[k] for k in self.keys}


@dataclass(frozen=True)
class JSONParser:
    """The first balanced ``{...}`` JSON object in the text, which must contain ``required`` keys."""

    required: Sequence[str] = ()

    def format_instructions(self) -> str:
        keys = ", ".join(f'"{k}": ...' for k in self.required)
        return f"Answer with one JSON object {{{keys}}} and nothing else."

    def parse(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        start = text.find("{")
        if start < 0:
            raise OutputParserError(f"no JSON object in the output {text[:80]!r}")
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError as e:
            raise OutputParserError(f"malformed JSON ({e.msg} at char {start + e.pos}) in {text[:80]!r}") from None
        missing = [k for k in self.required if k not in obj]
        if missing:
            raise OutputParserError(f"JSON object lacks required key(s) {missing}; got keys {sorted(obj)}")
        return obj
