"""The translation files of the Chinese edition: ``notebooks/zh/translations/NN_topic.yaml``.

One file per chapter, one entry per Markdown cell of the English notebook, keyed by the cell's id, in notebook
order::

    notebook: 01_softmax_and_losses.ipynb
    cells:
      2dcde713:
        en: "5f1c0a9e2b7d"        # cell_hash() of the English text this translation was made from
        zh: |-
          # 01 · Softmax 与损失函数 (Softmax and losses)
          ...

``en`` is the first 12 hex digits of the sha256 of the English cell's source (UTF-8): when the English cell
changes, the hash no longer matches and the translation is *stale*. ``zh`` is a YAML literal block, so LaTeX and
Markdown read as they are written; an empty ``zh`` is a *missing* translation. ``hints:`` translates, the same
way, the ``# HINT: ...`` line of each function in the cells tagged ``task`` or ``solution`` (keyed
``CELLID.function``; the Chinese learner copies show it). Entries whose cell or hint is no longer in the English
notebook are kept under ``orphans:`` (never deleted silently) until a translator reuses or deletes them.

:func:`dump_translations` writes the same bytes for the same content (comments are not kept: the file header
is regenerated), and :func:`parse_translations` of its output gives back every ``zh`` exactly, trailing
newlines and spaces included: a value a literal block cannot hold exactly (e.g. a carriage return) is written
as a double-quoted string instead.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labkit.core.io import atomic_write_text

__all__ = ["EDITION_KEY", "Entry", "Translations", "cell_hash", "parse_translations", "dump_translations",
           "read_translations",
           "write_translations", "HASH_LEN"]

HASH_LEN = 12
#: Notebook metadata key of a generated Chinese notebook (its language, source, and hint translations).
EDITION_KEY = "labkit_edition"
_HASH_RE = re.compile(rf"[0-9a-f]{{{HASH_LEN}}}")
_HEADER = """\
# Chinese (简体中文) translation of notebooks/{notebook}: one entry per Markdown cell, keyed by cell id.
# en: first {n} hex digits of sha256 of the English cell this zh translates (stale when the English changes).
# Generated notebook: notebooks/zh/{notebook} (python -m labkit zh build). Comments here are not kept.
"""


def _load(text: str) -> object:
    """yaml.safe_load, with libyaml's C parser when PyYAML has it (same result, several times faster)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def cell_hash(source: str) -> str:
    """First ``HASH_LEN`` (12) hex digits of sha256(source as UTF-8): the fingerprint of an English cell."""
    if not isinstance(source, str):
        raise TypeError(f"source must be a str (a cell's text), got {type(source).__name__}")
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:HASH_LEN]


@dataclass
class Entry:
    """One Markdown cell's translation: ``en`` the hash of the English it translates, ``zh`` the Chinese
    (``""`` while missing)."""
    en: str
    zh: str = ""


@dataclass
class Translations:
    """A chapter's translation file: the English notebook's file name, entries by cell id (notebook order),
    hint entries by ``CELLID.function``, and orphans (entries whose cell or hint left the English notebook)."""
    notebook: str
    cells: dict[str, Entry] = field(default_factory=dict)
    orphans: dict[str, Entry] = field(default_factory=dict)
    hints: dict[str, Entry] = field(default_factory=dict)


def _entries(raw: object, where: str) -> dict[str, Entry]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping of cell id -> {{en, zh}}, got {type(raw).__name__}")
    out: dict[str, Entry] = {}
    for key, val in raw.items():
        if not isinstance(val, dict) or set(val) - {"en", "zh"} or "en" not in val:
            raise ValueError(f"{where}[{key}] must be a mapping with 'en' (12-hex hash) and 'zh' (text); "
                             f"got {val!r:.80}")
        en, zh = val["en"], val.get("zh", "")
        zh = "" if zh is None else zh
        if not isinstance(en, str) or not _HASH_RE.fullmatch(en):
            raise ValueError(f"{where}[{key}].en must be {HASH_LEN} lowercase hex digits in quotes "
                             f"(cell_hash of the English cell), got {en!r}")
        if not isinstance(zh, str):
            raise ValueError(f"{where}[{key}].zh must be text (a YAML literal block '|-'), got {type(zh).__name__}")
        out[str(key)] = Entry(en, zh)
    return out


def parse_translations(text: str, where: str = "translation file") -> Translations:
    """Parse a translation file's text; ValueError naming ``where`` and the bad entry when malformed."""
    try:
        raw = _load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{where} is not valid YAML: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("notebook"), str):
        raise ValueError(f"{where} must be a mapping with 'notebook: NN_topic.ipynb' and 'cells:'")
    extra = set(raw) - {"notebook", "cells", "hints", "orphans"}
    if extra:
        raise ValueError(f"{where} has unknown top-level keys {sorted(extra)}; allowed: notebook, cells, hints, "
                         "orphans")
    return Translations(raw["notebook"], _entries(raw.get("cells"), f"{where}: cells"),
                        _entries(raw.get("orphans"), f"{where}: orphans"),
                        _entries(raw.get("hints"), f"{where}: hints"))


def _key(key: str) -> str:
    """A mapping key written plain when YAML reads it back as the same string, else double-quoted."""
    plain = bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", key))
    if plain:
        try:
            plain = _load(f"{key}: 0") == {key: 0}
        except yaml.YAMLError:
            plain = False
    return key if plain else json.dumps(key, ensure_ascii=False)


def _literal(text: str, indent: int) -> str:
    """``text`` as a YAML block scalar ``|`` at ``indent`` spaces, with the chomping indicator that keeps its
    trailing newlines exactly (``-`` none, clip one, ``+`` several) and an indentation indicator when the text
    starts with a space or a blank line."""
    chomp = "-" if not text.endswith("\n") else ("+" if text.endswith("\n\n") or text == "\n" else "")
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    ind = "2" if (lines[0].startswith(" ") or lines[0] == "") else ""
    pad = " " * indent
    return f"|{ind}{chomp}\n" + "\n".join(pad + line if line else "" for line in lines)


def _scalar(text: str, indent: int) -> str:
    """``text`` as a literal block when that round-trips exactly, else as a double-quoted string (``""`` when
    empty)."""
    if text == "":
        return '""'
    block = _literal(text, indent)
    try:
        if _load("a:\n  b:\n    zh: " + block + "\n")["a"]["b"]["zh"] == text:
            return block
    except yaml.YAMLError:
        pass
    quoted = json.dumps(text, ensure_ascii=False)
    if _load("k: " + quoted)["k"] != text:
        quoted = json.dumps(text, ensure_ascii=True)
    return quoted


def _dump_entries(entries: dict[str, Entry]) -> list[str]:
    out = []
    for key, e in entries.items():
        out += [f"  {_key(key)}:", f'    en: "{e.en}"', "    zh: " + _scalar(e.zh, 6)]
    return out


def dump_translations(tr: Translations) -> str:
    """The file text of ``tr``: a fixed header, ``notebook``, ``cells`` in the order given, then ``orphans`` (only
    when there are any). Deterministic: equal ``tr`` give equal text."""
    lines = [_HEADER.format(notebook=tr.notebook, n=HASH_LEN).rstrip("\n"), f"notebook: {tr.notebook}",
             "cells:" if tr.cells else "cells: {}"]
    lines += _dump_entries(tr.cells)
    if tr.hints:
        lines += ["# The '# HINT:' line of each lab-task and exercise function (CELLID.function), "
                  "for the learner copies.",
                  "hints:"] + _dump_entries(tr.hints)
    if tr.orphans:
        lines += ["# Cells or hints no longer in the English notebook: reuse their text under the new id, "
                  "then delete them.",
                  "orphans:"] + _dump_entries(tr.orphans)
    text = "\n".join(lines) + "\n"
    back = parse_translations(text, "dump_translations output")
    if back != tr:
        raise AssertionError("dump_translations does not round-trip; please report this text")  # pragma: no cover
    return text


def read_translations(path: str | Path) -> Translations:
    """Read and check one translation file (ValueError naming the file when malformed)."""
    path = Path(path)
    return parse_translations(path.read_text(encoding="utf-8"), str(path))


def write_translations(path: str | Path, tr: Translations) -> bool:
    """Write ``tr`` atomically when its text differs from the file's; True when the file changed."""
    path, text = Path(path), dump_translations(tr)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return True
