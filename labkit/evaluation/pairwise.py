"""Ratings from pairwise battles (an arena): online Elo vs the Bradley–Terry maximum-likelihood fit.

A battle is (a, b, s) with s = 1 if a wins, 0 if b wins, ½ for a tie. Both models say

    P(a beats b) = σ(θ_a − θ_b) = 1 / (1 + 10^{(R_b − R_a)/400}),    R = 400 θ / ln 10   (Elo points)

**Elo** updates after every battle, in order: E_a = σ(θ_a − θ_b), R_a += K (s − E_a), R_b −= K (s − E_a).
The result depends on the order of the battles and never settles (each step moves by ~K).
**Bradley–Terry** maximises the log-likelihood of all battles at once (order-free):

    ℓ(θ) = Σ_battles s log σ(θ_a − θ_b) + (1 − s) log σ(θ_b − θ_a)  −  (λ/2) ‖θ‖²

which is logistic regression without intercept on x = e_a − e_b. θ is defined up to a constant (x·1 = 0),
fixed here by Σθ = 0. Newton's method: g = Xᵀ(s − p) − λθ, H = Xᵀ diag(p(1−p)) X + λI.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["ELO_SCALE", "elo_expected", "elo_ratings", "bradley_terry_fit", "to_elo_points", "bootstrap_ratings",
           "simulate_battles"]

#: Elo points per natural-log unit of strength: 400 / ln 10 ≈ 173.72.
ELO_SCALE = 400.0 / math.log(10.0)


def _battles(a: Sequence[int], b: Sequence[int], s: Sequence[float], n_players: int):
    a, b, s = np.asarray(a), np.asarray(b), np.asarray(s, dtype=np.float64)
    if not (a.shape == b.shape == s.shape) or a.ndim != 1:
        raise ValueError(f"a {a.shape}, b {b.shape} and s {s.shape} must be 1-D arrays of the same length "
                         "(one entry per battle)")
    if isinstance(n_players, bool) or not isinstance(n_players, int) or n_players < 2:
        raise ValueError(f"n_players must be an int >= 2, got {n_players!r}")
    if a.size and not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise TypeError("a and b must hold integer player indices")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_players):
        raise ValueError(f"player indices must be in [0, n_players) = [0, {n_players})")
    if np.any(a == b):
        raise ValueError("a player cannot battle itself (a[i] == b[i]); drop those battles")
    if not np.all((s == 0) | (s == 0.5) | (s == 1)):
        raise ValueError("s must be 1 (a wins), 0 (b wins) or 0.5 (tie)")
    return a.astype(np.int64), b.astype(np.int64), s


def elo_expected(r_a: float | np.ndarray, r_b: float | np.ndarray) -> float | np.ndarray:
    """E_a = 1 / (1 + 10^((R_b − R_a)/400)), the expected score of a against b."""
    return 1.0 / (1.0 + 10.0 ** ((np.asarray(r_b) - np.asarray(r_a)) / 400.0))


def elo_ratings(a: Sequence[int], b: Sequence[int], s: Sequence[float], n_players: int, *, k: float = 32.0,
                initial: float = 1000.0) -> np.ndarray:
    """Online Elo over the battles in the given order: (n_players,) ratings in Elo points."""
    a, b, s = _battles(a, b, s, n_players)
    if not k > 0:
        raise ValueError(f"k (the Elo step size) must be > 0, got {k}")
    r = np.full(n_players, float(initial))
    for i, j, si in zip(a.tolist(), b.tolist(), s.tolist()):
        delta = k * (si - 1.0 / (1.0 + 10.0 ** ((r[j] - r[i]) / 400.0)))
        r[i] += delta
        r[j] -= delta
    return r


def bradley_terry_fit(a: Sequence[int], b: Sequence[int], s: Sequence[float], n_players: int, *, l2: float = 0.0,
                      tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Maximum-likelihood Bradley–Terry strengths θ (n_players,), natural-log units, Σθ = 0 (module docstring).

    Raises ValueError when the MLE does not exist without a prior (a player who never lost or never won, or
    players that never meet): pass ``l2 > 0`` then."""
    a, b, s = _battles(a, b, s, n_players)
    if a.size == 0:
        raise ValueError("no battles: pass at least one (a, b, s)")
    X = np.zeros((a.size, n_players))
    X[np.arange(a.size), a] = 1.0
    X[np.arange(a.size), b] = -1.0
    theta, ones = np.zeros(n_players), np.ones((n_players, n_players)) / n_players
    for _ in range(max_iter):
        p = np.exp(-np.logaddexp(0.0, -(X @ theta)))             # σ(θ_a − θ_b) without overflow
        g = X.T @ (s - p) - l2 * theta
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(n_players)
        try:
            step = np.linalg.solve(H + ones, g)     # + 11ᵀ/n removes the shift direction (g ⟂ 1 when l2 = 0)
        except np.linalg.LinAlgError:
            step = np.full(n_players, np.nan)
        theta = theta + step
        if not np.all(np.isfinite(theta)) or np.abs(theta - theta.mean()).max() > 30:
            raise ValueError("the Bradley–Terry MLE does not exist for these battles (a player never lost or "
                             "never won, or the battle graph is disconnected); pass l2 > 0 (a Gaussian prior)")
        theta -= theta.mean()
        if np.abs(step).max() < tol:
            break
    return theta


def to_elo_points(theta: np.ndarray, anchor: float = 1000.0) -> np.ndarray:
    """θ (log-odds units, any shift) → Elo points with mean ``anchor``: anchor + 400/ln10 · (θ − mean θ)."""
    theta = np.asarray(theta, dtype=np.float64)
    return anchor + ELO_SCALE * (theta - theta.mean())


def bootstrap_ratings(a: Sequence[int], b: Sequence[int], s: Sequence[float], n_players: int, *, n_boot: int = 200,
                      seed: int = 0, l2: float = 0.0) -> np.ndarray:
    """Bradley–Terry θ refitted on ``n_boot`` resamples of the battles (with replacement): (n_boot, n_players).

    Percentiles of each column give confidence intervals, e.g. np.percentile(out, [2.5, 97.5], axis=0)."""
    a, b, s = _battles(a, b, s, n_players)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n_players))
    for t in range(n_boot):
        idx = rng.integers(0, a.size, a.size)
        out[t] = bradley_terry_fit(a[idx], b[idx], s[idx], n_players, l2=l2)
    return out


def simulate_battles(theta: Sequence[float], n_battles: int, *, seed: int = 0, tie_margin: float = 0.0):
    """A simulated arena: uniformly random pairs a ≠ b, a wins with probability σ(θ_a − θ_b).

    With ``tie_margin`` > 0, a draw u ~ U(0,1) within ±tie_margin/2 of that probability is a tie (s = ½).
    Returns integer arrays a, b and float array s, each (n_battles,)."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 1 or theta.size < 2:
        raise ValueError("theta must be a 1-D array with at least 2 strengths")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, theta.size, n_battles)
    b = (a + rng.integers(1, theta.size, n_battles)) % theta.size          # uniform over the other players
    p = 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
    u = rng.random(n_battles)
    s = (u < p).astype(np.float64)
    if tie_margin > 0:
        s[np.abs(u - p) < tie_margin / 2] = 0.5
    return a, b, s
