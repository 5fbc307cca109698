"""Shared by the lab-task tests: a learner's (or instructor's) cell source as an importable module.

The hidden tests read function sources (``inspect.getsource``) to spot calls to the reference, so the cells
must live in a real file, not in ``exec``'d strings."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def module_from_source(tmp_path: Path, name: str, source: str) -> ModuleType:
    """Write ``source`` to ``tmp_path/<name>.py``, import it as module ``name`` (registered in sys.modules)."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
