"""data/MANIFEST: the sha256 of every shipped data file.

``python -m labkit manifest`` rewrites it from what is on disk; ``tests/test_data_manifest.py``
fails when a file changed without the manifest (or the manifest names a missing file).
Format, one line per file, sorted: ``<sha256>  <size in bytes>  <path relative to data/>``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from labkit.core.paths import DATA

__all__ = ["sha256_file", "compute_manifest", "write_manifest", "read_manifest", "verify_manifest"]

SKIP = {"MANIFEST", ".gitkeep"}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.name not in SKIP and "__pycache__" not in p.parts and not p.name.startswith(".")
    )


def compute_manifest(root: Path = DATA) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, size)} for every file under ``root`` except MANIFEST itself."""
    return {p.relative_to(root).as_posix(): (sha256_file(p), p.stat().st_size) for p in _files(root)}


def write_manifest(root: Path = DATA) -> Path:
    entries = compute_manifest(root)
    out = root / "MANIFEST"
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(f"{h}  {n}  {rel}\n" for rel, (h, n) in sorted(entries.items())))
    tmp.replace(out)  # atomic
    return out


def read_manifest(root: Path = DATA) -> dict[str, tuple[str, int]]:
    path = root / "MANIFEST"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            h, n, rel = line.split(maxsplit=2)
            out[rel] = (h, int(n))
    return out


def verify_manifest(root: Path = DATA) -> list[str]:
    """Problems found (empty list = all good)."""
    want, have = read_manifest(root), compute_manifest(root)
    problems = [f"missing file listed in MANIFEST: {r}" for r in sorted(set(want) - set(have))]
    problems += [f"file not in MANIFEST (run `python -m labkit manifest`): {r}" for r in sorted(set(have) - set(want))]
    problems += [f"checksum differs (run `python -m labkit manifest` if the change is intended): {r}"
                 for r in sorted(set(want) & set(have)) if want[r] != have[r]]
    return problems
