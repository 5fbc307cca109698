"""Write the long dialogue of chapter 21's memory comparison: ``data/agents/dialogue.json`` (seed 0, 60 turns).

Command (deterministic, no model, < 1 s)::

    python -m labkit.experiments.dialogue [OUT]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from labkit.agents import DIALOGUE_PATH, make_dialogue
from labkit.core.io import atomic_write_json

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dialogue to ``argv[0]`` (default data/agents/dialogue.json)."""
    out = Path(argv[0]) if argv else DIALOGUE_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, make_dialogue(n_turns=60, seed=0))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
