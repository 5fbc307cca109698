"""labkit: the canonical implementations behind *LLM Internals, From Scratch* (从零实现大模型).

Subpackages by layer, lowest first (an import-linter contract in pyproject.toml forbids upward imports)::

    core → datasets → tokenizer → blocks → model → train | quant | memory → finetune → align
         → retrieval → parallel → experiments → course

Subpackages are imported lazily, so ``import labkit`` is cheap and ``labkit.blocks`` works without a
separate import. Each subpackage re-exports its public names (``labkit.blocks.causal_mask``).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .core.check import close, exact, exercise  # noqa: E402
from .core.repro import seed_everything  # noqa: E402

__all__ = ["close", "exact", "exercise", "seed_everything", "setup_notebook", "__version__"]


def setup_notebook(seed: int = 0) -> None:
    """First call in every notebook: inline figures, a consistent figure style, seeds, print options.

    Figures are inline even when ``MPLBACKEND=Agg`` is set (CI), so stored outputs and nbval agree.
    """
    try:
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None:
            ip.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass
    import warnings

    # tqdm.auto (imported by transformers) warns on stderr when ipywidgets is absent; nbval compares stderr.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import matplotlib.pyplot as plt
    import torch

    plt.rcParams.update({"figure.figsize": (6.4, 3.6), "figure.dpi": 100, "axes.grid": True,
                         "grid.alpha": 0.3, "font.size": 10})
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    seed_everything(seed)


def __getattr__(name: str) -> Any:
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'labkit' has no attribute or submodule {name!r}") from None
        raise
