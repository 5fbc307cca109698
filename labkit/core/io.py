"""Files written atomically and JSON read with errors that say which file and what to do.

Every file labkit writes (checkpoints, adapters, data sets, results) goes through :func:`atomic_path`:
the bytes land in a temporary file in the same folder, which then replaces the target in one
``os.replace``. A crash mid-write leaves the old file intact, never half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "read_json"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is deleted.

    The temporary name keeps ``path``'s suffix, so writers that append one (``np.save`` adds ``.npy``)
    write exactly the yielded file. Parent folders are created; the result is readable by all (0o644).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` as UTF-8 with ``\\n`` line endings (on every OS) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 1, sort_keys: bool = False,
                      ensure_ascii: bool = True) -> Path:
    """Write ``json.dumps(obj, ...) + "\\n"`` to ``path`` atomically (the course's one JSON layout: indent 1)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys,
                                              ensure_ascii=ensure_ascii) + "\n")


def read_json(path: str | Path, *, regenerate: str | None = None) -> Any:
    """Parse the JSON file ``path``; a missing or malformed file raises an error naming it.

    ``regenerate`` is the command that rebuilds the file (e.g. ``"make data"``); it is quoted in the
    error so the reader knows the fix.
    """
    path = Path(path)
    hint = f"; regenerate it with `{regenerate}`" if regenerate else ""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing{hint}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file (a folder?); pass the path of a JSON file{hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}){hint}") from None
