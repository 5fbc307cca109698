"""Chunking (chapter 18): split a document into chunks of at most ``size`` characters.

Modes ``fixed`` (sliding windows, stride ``size - overlap``), ``recursive`` (the separators in
``RECURSIVE_SEPARATORS``, coarsest first), ``sentence`` (whole sentences, English and Chinese) and
``markdown`` (one chunk per header section). Every chunk is a contiguous substring of the text.
"""
from __future__ import annotations

import re
from typing import Sequence

from labkit.retrieval.text import split_sentences

__all__ = ["RECURSIVE_SEPARATORS", "chunk_text"]


RECURSIVE_SEPARATORS = ("\n\n", "\n", ". ", "。", " ", "")


def _check_size(size: int, overlap: int) -> None:
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (size, overlap)):
        raise TypeError(f"size and overlap must be ints, got {type(size).__name__} and {type(overlap).__name__}")
    if size < 1:
        raise ValueError(f"size ({size}) must be >= 1 character")
    if overlap < 0 or overlap >= size:
        raise ValueError(f"overlap ({overlap}) must satisfy 0 <= overlap < size ({size}); "
                         f"try overlap = size // 10 = {size // 10}")


def _merge(pieces: list[str], size: int, overlap: int) -> list[str]:
    """Greedily pack consecutive pieces (each <= size) into chunks <= size; each new chunk starts with
    the tail pieces of the previous one whose total length is <= overlap. Chunks stay contiguous substrings."""
    chunks: list[str] = []
    cur: list[str] = []
    cur_len = 0
    for p in pieces:
        if cur and cur_len + len(p) > size:
            chunks.append("".join(cur))
            while cur and (cur_len > overlap or cur_len + len(p) > size):
                cur_len -= len(cur.pop(0))
        cur.append(p)
        cur_len += len(p)
    if cur:
        chunks.append("".join(cur))
    return chunks


def _split_keep(text: str, sep: str) -> list[str]:
    """Split after each occurrence of ``sep``, keeping it at the end of the piece ("" → characters)."""
    if sep == "":
        return list(text)
    parts = text.split(sep)
    out = [p + sep for p in parts[:-1]] + [parts[-1]]
    return [p for p in out if p]


def _recursive_pieces(text: str, size: int, seps: Sequence[str]) -> list[str]:
    if len(text) <= size:
        return [text]
    sep = next((s for s in seps if s == "" or s in text), "")
    rest = seps[seps.index(sep) + 1:] if sep in seps else ()
    out: list[str] = []
    for piece in _split_keep(text, sep):
        out += [piece] if len(piece) <= size else _recursive_pieces(piece, size, rest or ("",))
    return out


def chunk_text(text: str, size: int, overlap: int = 0, *, mode: str = "fixed") -> list[str]:
    """Split ``text`` into chunks of at most ``size`` characters.

    Modes:
      * ``"fixed"``: windows ``text[i*s : i*s + size]`` with stride ``s = size - overlap``.
      * ``"recursive"``: split on the first separator in ``\\n\\n, \\n, ". ", 。, " ", ""`` that occurs,
        recurse into pieces still too long, then greedily merge pieces with ``overlap`` carried over.
      * ``"sentence"``: split after ``. ! ?`` (followed by whitespace) and after ``。！？``; pack whole
        sentences; a sentence longer than ``size`` falls back to recursive splitting.
      * ``"markdown"``: one chunk per header section (a header-only section joins the next one); long
        sections are split recursively. Chunks never cross a header.

    Every chunk is a contiguous substring of ``text``; with ``overlap=0`` the chunks concatenate to ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _check_size(size, overlap)
    if not text:
        return []
    if mode == "fixed":
        step = size - overlap
        starts = range(0, max(len(text) - overlap, 1), step)
        return [text[i:i + size] for i in starts]
    if mode == "recursive":
        return _merge(_recursive_pieces(text, size, RECURSIVE_SEPARATORS), size, overlap)
    if mode == "sentence":
        pieces: list[str] = []
        for s in split_sentences(text):
            pieces += [s] if len(s) <= size else _recursive_pieces(s, size, RECURSIVE_SEPARATORS[2:])
        return _merge(pieces, size, overlap)
    if mode == "markdown":
        sections = [s for s in re.split(r"(?m)^(?=#{1,6} )", text) if s]
        merged: list[str] = []
        carry = ""
        for s in sections:
            body = s.split("\n", 1)[1].strip() if s.startswith("#") and "\n" in s else ("" if s.startswith("#") else s)
            if s.startswith("#") and not body:
                carry += s
                continue
            merged.append(carry + s)
            carry = ""
        if carry:
            merged.append(carry)
        out: list[str] = []
        for s in merged:
            out += [s] if len(s) <= size else _merge(_recursive_pieces(s, size, RECURSIVE_SEPARATORS), size, overlap)
        return out
    raise ValueError(f"mode must be one of 'fixed', 'recursive', 'sentence', 'markdown'; got {mode!r}")
