"""Layer 0, core: what every chapter uses. Checks (``check``), seeds (``repro``), paths to data/ (``paths``),
atomic file writes and checked reads (``io``), stable softmax and losses (``numerics``, chapter 01), the data
manifest (``manifest``), learner-facing messages in English and Chinese (``messages``).
"""
from __future__ import annotations

from .check import MaxAbsDiff, close, exact, exercise  # noqa: F401
from .io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json  # noqa: F401
from .manifest import (  # noqa: F401
    WRITE_COMMAND,
    ManifestDiff,
    compute_manifest,
    diff_manifest,
    read_manifest,
    sha256_file,
    verify_data_file,
    verify_manifest,
    write_manifest,
)
from .messages import LANG_ENV, MESSAGES, language, localize_label, message  # noqa: F401
from .numerics import cross_entropy, entropy, kl_divergence, log_softmax, logsumexp, naive_softmax, stable_softmax  # noqa: F401
from .paths import DATA, NOTEBOOKS, ROOT, data_path  # noqa: F401
from .repro import seed_everything  # noqa: F401
from .validate import (  # noqa: F401
    require_finite,
    require_float_tensor,
    require_ids_in_vocab,
    require_in_range,
    require_int,
    require_positive,
    require_same_shape,
    require_tensor,
    require_token_ids,
    working_dtype,
)

__all__ = ["close", "exact", "exercise", "MaxAbsDiff", "require_tensor", "require_same_shape", "require_positive", "require_token_ids", "require_float_tensor", "require_int", "require_in_range", "require_finite", "require_ids_in_vocab", "working_dtype", "seed_everything", "ROOT", "DATA", "NOTEBOOKS", "data_path", "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "read_json", "naive_softmax", "stable_softmax", "logsumexp", "log_softmax", "cross_entropy", "kl_divergence", "entropy", "sha256_file", "compute_manifest", "write_manifest", "read_manifest", "verify_manifest", "ManifestDiff", "diff_manifest", "verify_data_file", "WRITE_COMMAND", "LANG_ENV", "MESSAGES", "language", "localize_label", "message"]
