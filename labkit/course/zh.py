"""The Chinese edition (中文版): ``python -m labkit zh {status, sync, build, check, todo, accept}``.

``notebooks/zh/NN_topic.ipynb`` is *generated*: the English notebook with every Markdown cell's source replaced
by its translation from ``notebooks/zh/translations/NN_topic.yaml`` (format: :mod:`labkit.course.zh_format`).
Code cells, outputs, metadata and cell ids are the English notebook's, so the Chinese notebooks are never
executed on their own: :func:`chapter_problems` (``check``, tests/test_zh.py) proves they carry the English code
and outputs, and that every translation exists and is current.

* ``sync [NN ...]``   create/update translation files: an entry for each new Markdown cell (``zh: ""``, missing),
  entries of vanished cells moved to ``orphans:``; a stale translation keeps its text and old hash.
* ``todo NN``         print the English of each missing or stale cell, with its id: what to translate next.
* ``accept NN ID ..`` after updating a stale translation, record that it matches the current English.
* ``build [NN ...]``  write the Chinese notebooks (only when their bytes change); same bytes on every run.
* ``check [--all]``   exit 1 listing missing, stale and orphan entries, broken relative links, generated
  notebooks that differ from what ``build`` writes, stray Chinese notebooks; ``--all`` also requires a
  translation file for every chapter (otherwise chapters without one are only listed).
* ``status``          per-chapter progress.

``NN`` is a chapter number (``01``) or a notebook name (``01_softmax_and_losses``). Without it, every chapter
with a translation file.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from labkit.core.io import atomic_write_text
from labkit.core.paths import NOTEBOOKS, ROOT
from labkit.course.student import HINT_RE, SOLUTION_TAG, TASK_TAG
from labkit.course.zh_format import (
    EDITION_KEY,
    Entry,
    Translations,
    cell_hash,
    read_translations,
    write_translations,
)

__all__ = ["ZH_DIR", "TRANSLATIONS", "EDITION_KEY", "Layout", "english_markdown", "english_hints", "sync_translations",
           "build_notebook", "render_notebook", "parity_problems", "link_problems", "chapter_problems",
           "ChapterStatus", "chapter_status", "refresh_edition", "main_zh", "USAGE"]

ZH_DIR = NOTEBOOKS / "zh"
TRANSLATIONS = ZH_DIR / "translations"
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")

USAGE = """usage: python -m labkit zh COMMAND [NN ...]   (NN: 01 or 01_softmax_and_losses; default: translated chapters)

  status                 per-chapter progress: translated / Markdown cells, missing, stale, orphans
  sync [NN ...]          add entries for new or changed-id Markdown cells (creates the file for a new chapter NN),
                         move entries of vanished cells to orphans; never deletes a translation
  todo NN                print the English of each missing or stale cell (what to translate next)
  accept NN ID [ID ...]  a stale translation was updated: record the current English hash for these cell ids
  build [NN ...]         write notebooks/zh/NN_topic.ipynb from the English notebook + the translation file
  check [--all] [NN ...] exit 1 on missing/stale/orphan translations, broken links, generated notebooks that
                         differ from build's; --all: every chapter must have a translation file
"""


@dataclass(frozen=True)
class Layout:
    """Where the editions live (tests point it at a temporary copy)."""
    english: Path = NOTEBOOKS
    zh: Path = ZH_DIR

    @property
    def translations(self) -> Path:
        return self.zh / "translations"

    def chapters(self) -> list[Path]:
        """The English chapters, ``NN_topic.ipynb`` sorted by NN."""
        return sorted(self.english.glob("[0-9][0-9]_*.ipynb"))

    def translation_file(self, english: Path) -> Path:
        return self.translations / f"{english.stem}.yaml"

    def resolve(self, name: str) -> Path:
        """The English notebook of ``01``, ``01_softmax_and_losses`` or ``...ipynb``; ValueError when unknown."""
        stem = Path(name).stem
        hits = [p for p in self.chapters() if p.stem == stem or p.name[:2] == stem]
        if len(hits) != 1:
            raise ValueError(f"chapter {name!r} names no single notebook in {self.english}; use a number like 01 "
                             "or a name like 01_softmax_and_losses")
        return hits[0]


def english_markdown(nb: nbformat.NotebookNode) -> dict[str, str]:
    """``{cell id: source}`` of the Markdown cells, in notebook order; ValueError on a missing or repeated id."""
    out: dict[str, str] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        cid = cell.get("id")
        if not cid or cid in out:
            raise ValueError(f"cell {i}: Markdown cell id {cid!r} is missing or repeated; give it a unique id "
                             "(nbformat.validator.normalize or re-save with nbformat >= 5.1)")
        out[cid] = cell.source
    return out


def english_hints(nb: nbformat.NotebookNode) -> dict[str, str]:
    """``{"CELLID.function": hint}``: the ``# HINT: ...`` text of each function in the cells tagged ``task`` or
    ``solution`` (what a learner copy shows in the stub), in notebook order."""
    out: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not {TASK_TAG, SOLUTION_TAG} & set(cell.get("metadata", {}).get("tags", [])):
            continue
        lines = {cell.source.count("\n", 0, m.start()) + 1: m.group(1) for m in HINT_RE.finditer(cell.source)}
        for node in ast.parse(cell.source).body:
            if isinstance(node, ast.FunctionDef):
                out.update({f"{cell.id}.{node.name}": text for n, text in lines.items()
                            if node.lineno <= n <= node.end_lineno})
    return out


def _sections(nb: nbformat.NotebookNode, tr: Translations) -> tuple[tuple[str, dict[str, str], dict[str, Entry]], ...]:
    """``(kind, English texts by key, translation entries by key)`` for the Markdown cells and the hints."""
    return ("cell", english_markdown(nb), tr.cells), ("hint", english_hints(nb), tr.hints)


def sync_translations(nb: nbformat.NotebookNode, tr: Translations) -> tuple[Translations, list[str], list[str]]:
    """A new :class:`Translations`: entries in notebook order, one per Markdown cell and per hint (existing ones
    kept as they are, orphans whose key is back restored, new ones ``Entry(hash, "")``), entries whose cell or hint
    is no longer there moved to ``orphans``. Returns ``(translations, added keys, orphaned keys)``."""
    added: list[str] = []
    gone: list[str] = []
    orphans = dict(tr.orphans)
    new: dict[str, dict[str, Entry]] = {}
    for kind, english, have in _sections(nb, tr):
        added += [k for k in english if k not in have and k not in orphans]
        new[kind] = {k: have[k] if k in have else orphans.pop(k, None) or Entry(cell_hash(src))
                     for k, src in english.items()}
        gone += [k for k in have if k not in english]
        orphans.update({k: have[k] for k in have if k not in english})
    return Translations(tr.notebook, new["cell"], orphans, new["hint"]), added, gone


def build_notebook(nb: nbformat.NotebookNode, tr: Translations) -> nbformat.NotebookNode:
    """The Chinese notebook: a copy of ``nb`` whose Markdown sources are the translations (a missing one keeps
    the English); everything else is ``nb``'s. Its metadata records the edition, the source notebook and the
    hint translations ``{English hint: Chinese hint}`` that its learner copy uses."""
    out = nbformat.from_dict(nb)  # deep copy
    for cell in out.cells:
        entry = tr.cells.get(cell.get("id")) if cell.cell_type == "markdown" else None
        if entry is not None and entry.zh:
            cell.source = entry.zh
    hints = english_hints(nb)
    out.metadata[EDITION_KEY] = {"language": "zh-CN", "source": f"../{tr.notebook}",
                                 "generated_by": "python -m labkit zh build (edit the translation file, not this)",
                                 "hints": {hints[k]: e.zh for k, e in tr.hints.items() if k in hints and e.zh}}
    return out


def render_notebook(nb: nbformat.NotebookNode) -> str:
    """The file text nbformat.write gives (the form ``make execute`` stores)."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def parity_problems(en: nbformat.NotebookNode, zh: nbformat.NotebookNode) -> list[str]:
    """What differs between the editions beyond Markdown text: cell count, order, ids, types, code sources,
    outputs, execution counts, cell metadata, attachments; notebook metadata apart from the edition key."""
    if len(en.cells) != len(zh.cells):
        return [f"{len(zh.cells)} cells, the English notebook has {len(en.cells)}"]
    probs = []
    for i, (a, b) in enumerate(zip(en.cells, zh.cells)):
        keys = set(a) | set(b)
        if a.cell_type == "markdown" and b.cell_type == "markdown":
            keys.discard("source")
        diff = sorted(k for k in keys if a.get(k) != b.get(k))
        if diff:
            probs.append(f"cell {i} (id {a.get('id')}): {', '.join(diff)} differ from the English notebook")
    meta = {k: v for k, v in zh.metadata.items() if k != EDITION_KEY}
    if meta != dict(en.metadata):
        probs.append("notebook metadata differs from the English notebook")
    return probs


def link_problems(tr: Translations, where: Path, english: Path | None = None) -> list[str]:
    """Relative links in the translations that do not resolve from the folder ``where`` (the Chinese notebooks
    sit one level below the English ones: ``../docs/x.md`` becomes ``../../docs/x.md``). A link to a chapter
    ``NN_topic.ipynb`` not translated yet counts as resolved when the English chapter exists in ``english``."""
    probs = []
    for cid, e in tr.cells.items():
        for target in _LINK.findall(e.zh):
            path = target.split("#", 1)[0]
            if not path or re.match(r"[a-z][a-z0-9+.-]*:", path):
                continue
            pending = english is not None and re.fullmatch(r"\d\d_\w+\.ipynb", path) and (english / path).exists()
            if not (where / path).exists() and not pending:
                probs.append(f"cell {cid}: link target {target} does not exist (relative to {where})")
    return probs


def chapter_problems(english: Path, layout: Layout = Layout()) -> list[str]:
    """Everything ``check`` reports for one chapter that has a translation file (empty list: all good)."""
    nb = nbformat.read(english, as_version=4)
    tfile = layout.translation_file(english)
    tr = read_translations(tfile)
    probs = [] if tr.notebook == english.name else [f"notebook: {tr.notebook}, should be {english.name}"]
    for kind, texts, have in _sections(nb, tr):
        for key, src in texts.items():
            e = have.get(key)
            if e is None or not e.zh:
                probs.append(f"{kind} {key}: missing translation" + (" (run sync)" if e is None else ""))
            elif e.en != cell_hash(src):
                probs.append(f"{kind} {key}: stale, the English changed since it was translated (todo, then accept)")
        probs += [f"{kind} {key}: not in the English notebook (run sync: it moves the entry to orphans)"
                  for key in have if key not in texts]
    probs += [f"orphan {k}: its cell or hint left the English notebook; reuse its text or delete it"
              for k in tr.orphans]
    probs += link_problems(tr, layout.zh, layout.english)
    zh_path = layout.zh / english.name
    want = render_notebook(build_notebook(nb, tr))
    if not zh_path.exists():
        probs.append(f"{zh_path.name} is missing (run build)")
    elif zh_path.read_text(encoding="utf-8") != want:
        parity = parity_problems(nb, nbformat.reads(zh_path.read_text(encoding="utf-8"), as_version=4))
        probs += [f"{zh_path.name} differs from what build writes (run build)"] + parity
    return [f"{tfile.stem}: {p}" for p in probs]


def refresh_edition(english: Path, layout: Layout = Layout()) -> Path | None:
    """Rewrite the Chinese notebook of ``english`` when that chapter has a translation file and the English
    notebook changed (``labkit execute --inplace`` calls this, so new outputs reach both editions); returns the
    file written, or None (not a chapter of ``layout``, no translation file, or already current)."""
    english = Path(english).resolve()
    if english.parent != layout.english.resolve() or not layout.translation_file(english).exists():
        return None
    text = render_notebook(build_notebook(nbformat.read(english, as_version=4),
                                          read_translations(layout.translation_file(english))))
    out = layout.zh / english.name
    if out.exists() and out.read_text(encoding="utf-8") == text:
        return None
    return atomic_write_text(out, text)


@dataclass
class ChapterStatus:
    """Progress of one chapter: items (Markdown cells + hints), translated and current, missing, stale, orphans."""
    name: str
    has_file: bool
    cells: int = 0
    done: int = 0
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    orphans: int = 0


def chapter_status(english: Path, layout: Layout = Layout()) -> ChapterStatus:
    """The :class:`ChapterStatus` of one English chapter (its items: Markdown cells and hints)."""
    nb = nbformat.read(english, as_version=4)
    tfile = layout.translation_file(english)
    tr = read_translations(tfile) if tfile.exists() else Translations(english.name)
    st = ChapterStatus(english.stem, tfile.exists(), orphans=len(tr.orphans))
    for _, english_text, have in _sections(nb, tr):
        st.cells += len(english_text)
        for key, src in english_text.items():
            e = have.get(key)
            if e is None or not e.zh:
                st.missing.append(key)
            elif e.en != cell_hash(src):
                st.stale.append(key)
            else:
                st.done += 1
    return st


def _selected(names: list[str], layout: Layout) -> list[Path]:
    if names:
        return [layout.resolve(n) for n in names]
    return [p for p in layout.chapters() if layout.translation_file(p).exists()]


def _sync(names: list[str], layout: Layout) -> int:
    for english in _selected(names, layout):
        tfile = layout.translation_file(english)
        tr = read_translations(tfile) if tfile.exists() else Translations(english.name)
        new, added, gone = sync_translations(nbformat.read(english, as_version=4), tr)
        changed = write_translations(tfile, new)
        print(f"{tfile.relative_to(ROOT) if tfile.is_relative_to(ROOT) else tfile}: "
              f"{'updated' if changed else 'no change'}; {len(added)} new, {len(gone)} moved to orphans")
    return 0


def _build(names: list[str], layout: Layout) -> int:
    for english in _selected(names, layout):
        if not layout.translation_file(english).exists():
            raise ValueError(f"{english.stem} has no translation file; start one with: zh sync {english.name[:2]}")
        out = refresh_edition(english, layout)
        print(f"wrote {out}" if out else f"{english.name}: up to date")
    return 0


def _check(args: list[str], layout: Layout) -> int:
    strict = "--all" in args
    names = [a for a in args if a != "--all"]
    chapters = _selected(names, layout)
    probs = [p for english in chapters for p in chapter_problems(english, layout)]
    known = {p.name for p in layout.chapters()}
    probs += [f"{p.name}: a Chinese notebook without its English chapter or translation file; delete it"
              for p in sorted(layout.zh.glob("*.ipynb"))
              if p.name not in known or not layout.translation_file(layout.english / p.name).exists()]
    untranslated = [p.stem for p in layout.chapters() if not layout.translation_file(p).exists()]
    if untranslated and not names:
        (probs.append if strict else print)(f"no translation file yet: {', '.join(untranslated)}")
    if probs:
        print(*probs, sep="\n")
    print(f"zh check: {len(chapters)} chapter(s) checked, {len(probs)} problem(s)")
    return 1 if probs else 0


def _status(layout: Layout) -> int:
    total = done = 0
    for english in layout.chapters():
        st = chapter_status(english, layout)
        total, done = total + st.cells, done + st.done
        if not st.has_file:
            print(f"{st.name:<40} no translation file ({st.cells} Markdown cells and hints)")
            continue
        print(f"{st.name:<40} {st.done:>3}/{st.cells:<3} translated" + (" ✓" if st.done == st.cells else "")
              + (f"  missing {len(st.missing)}" if st.missing else "")
              + (f"  stale {len(st.stale)}" if st.stale else "")
              + (f"  orphans {st.orphans}" if st.orphans else ""))
    print(f"{'all chapters':<40} {done:>3}/{total:<3} Markdown cells and hints translated and current")
    return 0


def _todo(names: list[str], layout: Layout) -> int:
    for english in [layout.resolve(n) for n in names]:
        nb = nbformat.read(english, as_version=4)
        texts = english_markdown(nb) | english_hints(nb)
        st = chapter_status(english, layout)
        for key in st.missing + st.stale:
            what = "stale (update zh, then accept)" if key in st.stale else "missing"
            kind = "hint" if "." in key else "cell"  # hint keys are CELLID.function
            print(f"===== {english.stem} {kind} {key}: {what}; en: \"{cell_hash(texts[key])}\"\n{texts[key]}\n")
    return 0


def _accept(args: list[str], layout: Layout) -> int:
    english = layout.resolve(args[0])
    nb = nbformat.read(english, as_version=4)
    tfile = layout.translation_file(english)
    tr = read_translations(tfile)
    for key in args[1:]:
        _, texts, have = next((s for s in _sections(nb, tr) if key in s[1] and key in s[2]), (None, {}, {}))
        if key not in have:
            raise ValueError(f"{key!r} is not an entry of {tfile.name} and a Markdown cell id or hint key "
                             f"(CELLID.function) of {english.name}")
        have[key] = Entry(cell_hash(texts[key]), have[key].zh)
    write_translations(tfile, tr)
    print(f"{tfile.name}: {len(args) - 1} translation(s) marked current")
    return 0


def main_zh(argv: list[str], layout: Layout = Layout()) -> int:
    """Run one ``zh`` command; the exit status (0 ok, 1 check failed, 2 usage error)."""
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    commands = {"sync": _sync, "build": _build, "check": _check, "todo": _todo, "accept": _accept}
    if cmd == "status" and not rest:
        return _status(layout)
    if cmd in commands and len(rest) >= {"todo": 1, "accept": 2}.get(cmd, 0):
        try:
            return commands[cmd](rest, layout)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"usage error: zh {' '.join(argv)}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main_zh(sys.argv[1:]))
