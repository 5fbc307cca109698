"""Where things are: the repository root, data/ and notebooks/."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
NOTEBOOKS = ROOT / "notebooks"

__all__ = ["ROOT", "DATA", "NOTEBOOKS", "data_path"]


def data_path(*parts: str) -> Path:
    """Path of a shipped data file, with a clear error when it is missing."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(
            f"{p} is missing. Run `make data` to regenerate the shipped data, or check out a full clone."
        )
    return p
