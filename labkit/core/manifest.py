"""data/MANIFEST: the sha256 of every shipped data file.

``python -m labkit manifest`` *checks* data/ against it and lists what differs (changed / missing /
unlisted; exit status 1 on a mismatch); ``python -m labkit manifest --write`` rewrites it from what is
on disk (after regenerating data on purpose). ``tests/test_data_manifest.py`` fails when a file changed
without the manifest, and :func:`verify_data_file` lets loaders (``labkit.model.load_checkpoint``)
refuse a shipped file whose bytes are not the ones listed.
Format, one line per file, sorted: ``<sha256>  <size in bytes>  <path relative to data/>``.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from labkit.core.io import atomic_write_text
from labkit.core.paths import DATA

__all__ = ["sha256_file", "compute_manifest", "write_manifest", "read_manifest", "verify_manifest",
           "ManifestDiff", "diff_manifest", "verify_data_file", "WRITE_COMMAND"]

SKIP = {"MANIFEST", ".gitkeep"}
#: The command that rewrites data/MANIFEST (quoted in every message that asks for it).
WRITE_COMMAND = "python -m labkit manifest --write"
_LINE = re.compile(r"^([0-9a-f]{64})  (\d+)  (\S.*)$")
_HASHES: dict[tuple[str, int, int, int], str] = {}   # (path, size, mtime_ns, inode) -> sha256


def _root(root: str | Path | None) -> Path:
    return DATA if root is None else Path(root)   # read at call time (tests point DATA elsewhere)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the bytes of ``path`` (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached_sha256(path: Path, st: os.stat_result) -> str:
    """sha256 of ``path``, cached per (path, size, mtime, inode): a file loaded twice is hashed once."""
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.name not in SKIP and "__pycache__" not in p.parts and not p.name.startswith(".")
    )


def compute_manifest(root: str | Path | None = None) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, size)} for every file under ``root`` (default data/) except MANIFEST itself."""
    root = _root(root)
    return {p.relative_to(root).as_posix(): (sha256_file(p), p.stat().st_size) for p in _files(root)}


def _format(entries: dict[str, tuple[str, int]]) -> str:
    return "".join(f"{h}  {n}  {rel}\n" for rel, (h, n) in sorted(entries.items()))


def write_manifest(root: str | Path | None = None) -> Path:
    """Rewrite ``root/MANIFEST`` (atomically) from the files on disk; returns its path."""
    root = _root(root)
    return atomic_write_text(root / "MANIFEST", _format(compute_manifest(root)))


def read_manifest(root: str | Path | None = None) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, size)} as listed in ``root/MANIFEST``.

    Raises FileNotFoundError when MANIFEST is missing and ValueError naming the line when one is malformed.
    """
    path = _root(root) / "MANIFEST"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; create it from the files on disk with `{WRITE_COMMAND}` "
                                "(or restore it with `git checkout -- data/MANIFEST`)")
    out: dict[str, tuple[str, int]] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"{path}, line {i} is malformed: {line[:120]!r}; each line must be "
                             "'<64 hex sha256>  <size in bytes>  <path>' (two spaces between fields). "
                             f"Restore it with `git checkout -- data/MANIFEST` or rewrite it with `{WRITE_COMMAND}`")
        if m.group(3) in out:
            raise ValueError(f"{path}, line {i} lists {m.group(3)!r} a second time; rewrite it with `{WRITE_COMMAND}`")
        out[m.group(3)] = (m.group(1), int(m.group(2)))
    return out


@dataclass
class ManifestDiff:
    """What differs between MANIFEST (``want``) and data/ on disk (``have``); each list is sorted."""

    changed: list[str] = field(default_factory=list)    # listed and on disk, other bytes
    missing: list[str] = field(default_factory=list)    # listed, not on disk
    unlisted: list[str] = field(default_factory=list)   # on disk, not listed
    want: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)
    have: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.unlisted)

    def lines(self) -> list[str]:
        """One line per difference, ``changed  <path>  (sha256 ab12… → cd34…, 10 → 12 bytes)`` and so on."""
        out = []
        for r in self.changed:
            (h0, n0), (h1, n1) = self.want[r], self.have[r]
            out.append(f"changed   {r}  (sha256 {h0[:12]}… → {h1[:12]}…, {n0} → {n1} bytes)")
        out += [f"missing   {r}  (listed in MANIFEST, not on disk)" for r in self.missing]
        out += [f"unlisted  {r}  (on disk, not in MANIFEST)" for r in self.unlisted]
        return out


def diff_manifest(root: str | Path | None = None, *, want: dict[str, tuple[str, int]] | None = None) -> ManifestDiff:
    """Compare ``root/MANIFEST`` (or ``want``) with the files on disk. Raises as :func:`read_manifest`."""
    want = read_manifest(root) if want is None else want
    have = compute_manifest(root)
    return ManifestDiff(changed=sorted(r for r in set(want) & set(have) if want[r] != have[r]),
                        missing=sorted(set(want) - set(have)), unlisted=sorted(set(have) - set(want)),
                        want=want, have=have)


def verify_manifest(root: str | Path | None = None) -> list[str]:
    """Problems found (empty list = all good): one line per difference, or one line saying why MANIFEST
    cannot be read (missing or malformed) instead of a line for every file."""
    try:
        d = diff_manifest(root)
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    fix = (f" (if the change is intended, run `{WRITE_COMMAND}`; otherwise restore the file with "
           "`git checkout -- data/` or regenerate it as data/README.md says)")
    return [line + fix for line in d.lines()]


def verify_data_file(path: str | Path, regenerate: str, *, root: str | Path | None = None) -> bool:
    """Check one file against MANIFEST when it lies inside ``root`` (default data/) and is listed there.

    Returns True when it was checked, False when there is nothing to check it against (outside data/, not
    listed, or no MANIFEST). Raises ValueError naming the file and the fix (``regenerate``, the command that
    rebuilds it) when its size or sha256 differs. Hashing is cached per (path, size, mtime, inode).
    """
    path, root = Path(path), _root(root)
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return False
    if not (root / "MANIFEST").exists():
        return False
    entry = read_manifest(root).get(rel)
    if entry is None:
        return False
    st = path.stat()
    want_sha, want_size = entry
    if st.st_size != want_size:
        problem = f"has {st.st_size} bytes but data/MANIFEST lists {want_size} (truncated or replaced)"
    elif _cached_sha256(path, st) != want_sha:
        problem = "does not match its sha256 in data/MANIFEST (the bytes are corrupted or were changed)"
    else:
        return True
    raise ValueError(f"{path} {problem}; restore it with `git checkout -- data/{rel}` or regenerate it with "
                     f"`{regenerate}`; if you regenerated it on purpose, run `{WRITE_COMMAND}`")
