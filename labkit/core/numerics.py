"""Numerically stable softmax, log-sum-exp and the losses built on them (chapter 01).

Conventions: ``logits`` are unnormalized scores ``z``; a distribution is taken along ``dim``.

    softmax(z)_i = exp(z_i - m) / Σ_j exp(z_j - m),    m = max_j z_j
    logsumexp(z) = m + log Σ_j exp(z_j - m)
    CE(z, y)     = logsumexp(z) - z_y                   (one sample, integer target y)
    KL(P‖Q)      = Σ_i p_i (log p_i - log q_i)

Subtracting the max changes nothing mathematically (softmax is shift-invariant) but keeps every
``exp`` argument ≤ 0, so nothing overflows. *Dividing* by the max (a common mistake) is not an
identity and does not prevent overflow.
"""
from __future__ import annotations

import torch

__all__ = ["naive_softmax", "stable_softmax", "logsumexp", "log_softmax", "cross_entropy",
           "kl_divergence", "entropy"]


def _check_float(x: torch.Tensor, arg: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"`{arg}` must be a floating-point tensor, got {x.dtype}; call .float() first")


def naive_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(x) / Σ exp(x): the textbook formula, which overflows to inf/inf = NaN for large x."""
    _check_float(x, "x")
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def _safe_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    if x.dim() > 0 and not -x.dim() <= dim < x.dim():
        raise ValueError(f"`dim` ({dim}) is out of range for x of shape {tuple(x.shape)}")
    if x.dim() > 0 and x.shape[dim] == 0:
        raise ValueError(f"x has size 0 along dim {dim} (shape {tuple(x.shape)}): a softmax over no values is undefined")
    m = x.amax(dim=dim, keepdim=True)
    # A slice that is all -inf (fully masked) has max -inf; use 0 so that x - m stays -inf, not NaN.
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim`` computed as exp(x - max) / Σ exp(x - max). Shape of x is kept."""
    _check_float(x, "x")
    e = torch.exp(x - _safe_max(x, dim))
    return e / e.sum(dim=dim, keepdim=True)


def logsumexp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log Σ exp(x) along ``dim`` (that dim removed), as m + log Σ exp(x - m)."""
    _check_float(x, "x")
    m = _safe_max(x, dim)
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log softmax(x) = x - logsumexp(x): no exp of large numbers, no log of 0 from underflow."""
    return x - logsumexp(x, dim=dim).unsqueeze(dim)


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not ``ignore_index``; equals ``F.cross_entropy``.

    Args:
        logits: (N, C) or (N, C, d1, ...) like PyTorch, or (..., C) with ``targets`` (...) when the class
            dim is last and targets have one dim fewer (the usual LM layout (B, T, V) / (B, T)).
        targets: integer class indices.
        label_smoothing ε: the target distribution is (1-ε)·onehot + ε/C, so the loss is
            (1-ε)·(lse - z_y) + ε·(lse - mean_c z_c).
    Raises:
        ValueError: when every target is ignored (the mean would be 0/0 = NaN), on shape mismatches,
            or when ε is outside [0, 1].
    """
    _check_float(logits, "logits")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"`targets` must be a torch.Tensor of integer class indices, got {type(targets).__name__}; "
                        "convert it with torch.tensor(targets, dtype=torch.long)")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"`targets` must hold integer class indices, got {targets.dtype}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1], got {label_smoothing}")
    if logits.dim() == targets.dim() + 1 and logits.shape[:-1] == targets.shape:
        z, y = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    elif logits.dim() >= 2 and logits.dim() == targets.dim() + 1 and \
            logits.shape[:1] + logits.shape[2:] == targets.shape:
        z = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        y = targets.reshape(-1)
    else:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}; expected "
            "logits (..., C) with targets (...), or logits (N, C, ...) with targets (N, ...)")
    keep = y != ignore_index
    if not bool(keep.any()):
        raise ValueError(
            f"every target equals ignore_index={ignore_index}: the mean loss is undefined (0/0). "
            "Skip this batch or check the label masking")
    z, y = z[keep].to(torch.float64 if z.dtype == torch.float64 else torch.float32), y[keep].long()
    C = z.shape[-1]
    if bool((y < 0).any()) or bool((y >= C).any()):
        raise ValueError(f"`targets` must be in [0, {C}) or equal ignore_index; got values outside")
    lse = logsumexp(z, dim=-1)
    nll = lse - z.gather(-1, y[:, None]).squeeze(-1)
    if label_smoothing:
        smooth = lse - z.mean(dim=-1)
        nll = (1 - label_smoothing) * nll + label_smoothing * smooth
    return nll.mean().to(logits.dtype)


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """KL(P‖Q) = Σ p (log p − log q) along ``dim`` for P = softmax(p_logits), Q = softmax(q_logits).

    Computed from log-softmax, so it is finite for huge logits; terms with p = 0 contribute 0.
    """
    _check_float(p_logits, "p_logits")
    _check_float(q_logits, "q_logits")
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"p_logits {tuple(p_logits.shape)} and q_logits {tuple(q_logits.shape)} must have the same shape")
    log_p, log_q = log_softmax(p_logits, dim), log_softmax(q_logits, dim)
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=dim)


def entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """H(P) = −Σ p log p for P = softmax(logits), along ``dim``."""
    _check_float(logits, "logits")
    log_p = log_softmax(logits, dim)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=dim)
