"""pass@k for code generation (Chen et al., 2021): the probability that at least one of k samples is correct.

With n ≥ k samples of which c pass, the unbiased estimator is

    pass@k = 1 − C(n − c, k) / C(n, k) = 1 − Π_{i = n−c+1}^{n} (1 − k / i)

(the product form never builds a huge binomial). The naive plug-in 1 − (1 − c/n)^k is *biased low*: it
treats the n samples as if drawn with replacement, and 1 − (1 − x)^k is concave, so by Jensen its mean is
below 1 − (1 − p)^k.
"""
from __future__ import annotations

import math

__all__ = ["pass_at_k", "pass_at_k_naive", "pass_at_k_binomial"]


def _check(n: int, c: int, k: int) -> None:
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must be in [0, n] = [0, {n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n] = [1, {n}], got {k}; draw at least k samples per problem")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k, 1 − C(n−c, k)/C(n, k), in the stable product form; 1.0 when n − c < k."""
    _check(n, c, k)
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_binomial(n: int, c: int, k: int) -> float:
    """The same estimator with exact integer binomials (a reference; slow for large n)."""
    _check(n, c, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_naive(n: int, c: int, k: int) -> float:
    """The biased plug-in estimate 1 − (1 − c/n)^k."""
    _check(n, c, k)
    return 1.0 - (1.0 - c / n) ** k
