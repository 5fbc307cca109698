"""KL to the reference policy (chapters 15-16): per-token estimators and the exact KL.

For a token a ~ π sampled by the policy (log-probs of that token under π and π_ref, any shape):

    k1 = log π(a) − log π_ref(a)                       unbiased, can be < 0
    k2 = ½ (log π(a) − log π_ref(a))²                  ≥ 0, biased, low variance
    k3 = π_ref/π − 1 − log(π_ref/π)                    unbiased and ≥ 0 (Schulman)

``exact_kl`` sums over the whole vocabulary from full logits (..., V) → (...).
"""
from __future__ import annotations

import torch

from labkit.core.validate import require_float_tensor, require_same_shape, working_dtype

__all__ = ["kl_k1", "kl_k2", "kl_k3", "exact_kl"]


def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k1 = log π(a) − log π_ref(a) for a sampled token a ~ π: unbiased for KL(π‖π_ref), can be < 0."""
    require_same_shape(logp, logp_ref, "logp", "logp_ref")
    return logp - logp_ref


def kl_k2(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π − log π_ref)²: ≥ 0, biased, low variance."""
    require_same_shape(logp, logp_ref, "logp", "logp_ref")
    return 0.5 * (logp - logp_ref) ** 2


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 = (π_ref/π − 1) − log(π_ref/π) for a ~ π: unbiased and always ≥ 0 (Schulman's estimator)."""
    require_same_shape(logp, logp_ref, "logp", "logp_ref")
    log_r = logp_ref - logp
    return torch.expm1(log_r) - log_r


def exact_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(π‖π_ref) = Σ_v π(v) (log π(v) − log π_ref(v)) at every position, from full distributions.

    (..., V), (..., V) → (...), in at least float32 (float64 logits stay float64).
    """
    require_float_tensor(logits, "logits")
    require_float_tensor(ref_logits, "ref_logits")
    require_same_shape(logits, ref_logits, "logits", "ref_logits")
    dt = working_dtype(logits.dtype, ref_logits.dtype)
    logp = torch.log_softmax(logits.to(dt), -1)
    logq = torch.log_softmax(ref_logits.to(dt), -1)
    return (logp.exp() * (logp - logq)).sum(-1)
