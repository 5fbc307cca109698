"""Hidden tests of chapter 15's lab tasks: GAE over a batch of episodes, and PPO's clipped policy and value losses.

References (none of them labkit's): an independent float64 reference for GAE written as the explicit sum
A_t = Σ_l (γλ)^l δ_{t+l} (not the backward recursion the task asks for), the discounted return computed as a
matrix product for λ = 1, and the worked example [0.446829, 0.37515, 0.3]; for PPO, the objective in the paper's
*min* form, −mean(min(ρA, clip(ρ, 1−ε, 1+ε)·A)), computed element by element in float64 with its gradient from
float64 autograd, TRL's clip-fraction definition, and ½ mean max((V − R)², (V_clip − R)²) (TRL / OpenAI
baselines) in float64, with hand-worked values. trl is not installed in the course environment.
"""
from __future__ import annotations

import torch

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


# ---- 15.A gae_advantages ---------------------------------------------------------------------------------
def _gae_reference(r: torch.Tensor, v: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = Σ_{l ≥ 0} (γλ)^l δ_{t+l} with δ_t = r_t + γ V_{t+1} − V_t and V_T = 0, as a float64 double loop."""
    r, v = r.double(), v.double()
    B, T = r.shape
    nxt = torch.cat([v[:, 1:], torch.zeros(B, 1, dtype=torch.float64)], 1)
    delta = r + gamma * nxt - v
    adv = torch.zeros(B, T, dtype=torch.float64)
    for t in range(T):
        for step in range(T - t):
            adv[:, t] += (gamma * lam) ** step * delta[:, t + step]
    return adv, adv + v


def _gae_random(L: Learner, g: torch.Generator) -> None:
    for B, T in ((_n(g, 2, 7), _n(g, 5, 23)), (1, _n(g, 2, 9)), (_n(g, 3, 9), 1)):
        gamma, lam = _u(g, 0.8, 1.0), _u(g, 0.5, 1.0)
        r = torch.randn(B, T, generator=g) * _u(g, 0.1, 3.0)
        v = torch.randn(B, T, generator=g)
        adv, ret = L.gae_advantages(r.clone(), v.clone(), gamma, lam)
        ref_adv, ref_ret = _gae_reference(r, v, gamma, lam)
        where = f"B={B}, T={T}, γ={gamma:.3f}, λ={lam:.3f}"
        exact(tuple(adv.shape), (B, T), quiet=True, name=f"advantages shape ({where})")
        close(adv.double(), ref_adv, atol=2e-5, rtol=1e-5, quiet=True,
              name=f"advantages == Σ_l (γλ)^l δ_(t+l) ({where})")
        close(ret.double(), ref_ret, atol=2e-5, rtol=1e-5, quiet=True, name=f"returns == advantages + values ({where})")


def _gae_worked(L: Learner, g: torch.Generator) -> None:
    adv, ret = L.gae_advantages(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), 0.99, 0.95)
    close(adv, torch.tensor([[0.446829, 0.37515, 0.3]]), atol=1e-6, quiet=True,
          name="worked example r = [0, 0, 1], V = [0.5, 0.6, 0.7], γ = 0.99, λ = 0.95")
    close(ret, torch.tensor([[0.946829, 0.97515, 1.0]]), atol=1e-6, quiet=True, name="its returns A + V")
    B, T, gamma = _n(g, 2, 5), _n(g, 4, 12), _u(g, 0.8, 1.0)
    r, v = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    adv0, _ = L.gae_advantages(r, v, gamma, 0.0)
    nxt = torch.cat([v[:, 1:], torch.zeros(B, 1)], 1)
    close(adv0, r + gamma * nxt - v, atol=1e-5, quiet=True, name=f"λ = 0: A_t = δ_t (the one-step TD error), T = {T}")
    adv1, _ = L.gae_advantages(r, v, gamma, 1.0)
    k = torch.arange(T, dtype=torch.float64)
    W = torch.where(k[None, :] >= k[:, None], gamma ** (k[None, :] - k[:, None]), 0.0)
    close(adv1.double(), r.double() @ W.T - v.double(), atol=2e-5, quiet=True,
          name="λ = 1: A_t = discounted return G_t − V_t")


def _gae_constants(L: Learner, g: torch.Generator) -> None:
    B, T = _n(g, 2, 6), _n(g, 3, 11)
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, generator=g, dtype=torch.float64)
    adv, ret = L.gae_advantages(r, v, 1.0, 0.95)
    ref_adv, ref_ret = _gae_reference(r, v, 1.0, 0.95)
    exact(adv.dtype, torch.float64, quiet=True, name="float64 inputs give float64 advantages")
    close(adv, ref_adv, atol=1e-12, quiet=True, name="float64 inputs: advantages to 1e-12 (computed in float64)")
    close(ret, ref_ret, atol=1e-12, quiet=True, name="float64 inputs: returns to 1e-12")
    vg = torch.randn(B, T, generator=g).requires_grad_()
    adv, ret = L.gae_advantages(torch.randn(B, T, generator=g), vg, 1.0, 0.95)
    exact((adv.requires_grad, ret.requires_grad), (False, False), quiet=True,
          name="values that require grad: advantages and returns are constants (detached targets)")


# ---- 15.B ppo_policy_loss, ppo_value_loss ----------------------------------------------------------------------
def _policy_reference(lp_new: torch.Tensor, lp_old: torch.Tensor, adv: torch.Tensor, eps: float):
    """−mean(min(ρA, clip(ρ)A)) in float64, element by element, its gradient and TRL's clip fraction."""
    x = lp_new.detach().double().requires_grad_()
    ratio = torch.exp(x - lp_old.double())
    a = adv.double()
    terms = torch.stack([torch.min(ratio.flatten()[i] * a.flatten()[i],
                                   ratio.flatten()[i].clamp(1 - eps, 1 + eps) * a.flatten()[i])
                         for i in range(ratio.numel())])
    loss = -terms.mean()
    (grad,) = torch.autograd.grad(loss, x)
    r = ratio.detach()
    clipped = ((a > 0) & (r > 1 + eps)) | ((a < 0) & (r < 1 - eps))
    return loss.detach(), grad, clipped


def _random_ppo_inputs(g: torch.Generator, shape: tuple[int, ...]):
    lp_old = -torch.rand(shape, generator=g) * 5 - 0.05
    lp_new = lp_old + torch.randn(shape, generator=g) * 0.4
    adv = torch.randn(shape, generator=g)
    return lp_new, lp_old, adv


def _policy_values(L: Learner, g: torch.Generator) -> None:
    for shape in ((_n(g, 2, 6), _n(g, 3, 17)), (_n(g, 5, 40),), (1, 1)):
        eps = _u(g, 0.05, 0.35)
        lp_new, lp_old, adv = _random_ppo_inputs(g, shape)
        loss, frac = L.ppo_policy_loss(lp_new.clone(), lp_old.clone(), adv.clone(), eps)
        ref_loss, _, clipped = _policy_reference(lp_new, lp_old, adv, eps)
        where = f"shape {shape}, ε = {eps:.3f}"
        close(float(loss), float(ref_loss), atol=1e-6, rtol=1e-5, quiet=True,
              name=f"loss == −mean(min(ρA, clip(ρ, 1−ε, 1+ε)A)) ({where})")
        close(float(frac), float(clipped.double().mean()), atol=1e-6, quiet=True,
              name=f"clip fraction == share of tokens with (A > 0, ρ > 1+ε) or (A < 0, ρ < 1−ε) ({where})")


def _policy_gradient(L: Learner, g: torch.Generator) -> None:
    shape, eps = (_n(g, 2, 5), _n(g, 4, 13)), _u(g, 0.1, 0.3)
    lp_new, lp_old, adv = _random_ppo_inputs(g, shape)
    x = lp_new.clone().requires_grad_()
    old, a = lp_old.clone().requires_grad_(), adv.clone().requires_grad_()
    loss, _ = L.ppo_policy_loss(x, old, a, eps)
    loss.backward()
    _, ref_grad, clipped = _policy_reference(lp_new, lp_old, adv, eps)
    assert x.grad is not None, "the loss must be differentiable with respect to logp_new"
    close(x.grad.double(), ref_grad, atol=1e-6, rtol=1e-5, quiet=True,
          name=f"d loss / d logp_new == the float64 reference's ({shape}, ε = {eps:.3f})")
    assert bool(clipped.any()), "internal: the random case should clip some tokens"
    exact(bool((x.grad[clipped] == 0).all()), True, quiet=True,
          name=f"the {int(clipped.sum())} clipped tokens get exactly zero gradient")
    for t, what in ((old, "logp_old"), (a, "advantages")):
        assert t.grad is None or bool((t.grad == 0).all()), (
            f"a gradient flowed into `{what}`: it is a constant of the rollout (detach it)")


def _policy_first_minibatch(L: Learner, g: torch.Generator) -> None:
    shape = (_n(g, 2, 6), _n(g, 2, 9))
    lp = -torch.rand(shape, generator=g) * 4
    adv = torch.randn(shape, generator=g)
    loss, frac = L.ppo_policy_loss(lp.clone(), lp.clone(), adv, 0.2)
    close(float(loss), float(-adv.double().mean()), atol=1e-6, quiet=True,
          name="ρ = 1 everywhere (the first minibatch): loss = −mean(A)")
    exact(float(frac), 0.0, quiet=True, name="ρ = 1: clip fraction 0")
    lp_old = torch.log(torch.tensor([0.3, 0.2, 0.4, 0.1, 0.25]))
    ratio = torch.tensor([1.05, 1.5, 0.5, 0.5, 1.5])
    a = torch.tensor([1.0, 2.0, -1.0, 1.0, -3.0])
    loss, frac = L.ppo_policy_loss(lp_old + ratio.log(), lp_old, a, 0.2)
    # min(ρA, clip(ρ)A) = [1.05, min(3, 2.4), min(−0.5, −0.8), min(0.5, 0.8), min(−4.5, −3.6)]; loss = −mean = 0.27
    close(float(loss), 0.27, atol=1e-5, quiet=True,
          name="worked example ρ = [1.05, 1.5, 0.5, 0.5, 1.5], A = [1, 2, −1, 1, −3], ε = 0.2: loss 0.27")
    close(float(frac), 0.4, atol=1e-7, quiet=True, name="worked example: 2 of 5 tokens clipped")


def _value_reference(v: torch.Tensor, v_old: torch.Tensor, ret: torch.Tensor, c: float | None) -> torch.Tensor:
    v, v_old, ret = v.double(), v_old.double(), ret.double()
    err = (v - ret) ** 2
    if c is None:
        return 0.5 * err.mean()
    v_clip = v_old + (v - v_old).clamp(-c, c)
    return 0.5 * torch.maximum(err, (v_clip - ret) ** 2).mean()


def _value_random(L: Learner, g: torch.Generator) -> None:
    for shape in ((_n(g, 2, 6), _n(g, 3, 15)), (_n(g, 4, 30),)):
        c = _u(g, 0.05, 0.5)
        v_old = torch.randn(shape, generator=g)
        v = (v_old + torch.randn(shape, generator=g) * 0.5).requires_grad_()
        ret = torch.randn(shape, generator=g)
        loss = L.ppo_value_loss(v, v_old.clone(), ret.clone(), c)
        close(float(loss.detach()), float(_value_reference(v.detach(), v_old, ret, c)), atol=1e-6, rtol=1e-5, quiet=True,
              name=f"value loss == ½ mean max((V − R)², (V_clip − R)²) (shape {shape}, clip {c:.3f})")
        loss.backward()
        x = v.detach().double().requires_grad_()
        (ref_grad,) = torch.autograd.grad(_value_reference(x, v_old, ret, c), x)
        close(v.grad.double(), ref_grad, atol=1e-6, rtol=1e-5, quiet=True,
              name=f"d value loss / d V == the reference's (shape {shape})")
        v2 = v.detach().clone().requires_grad_()
        loss_none = L.ppo_value_loss(v2, v_old, ret, None)
        close(float(loss_none.detach()), float(_value_reference(v.detach(), v_old, ret, None)), atol=1e-6, rtol=1e-5,
              quiet=True, name="clip=None: the plain ½ mean (V − R)²")


def _value_worked(L: Learner, g: torch.Generator) -> None:
    v_old, v, ret = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, -0.5, 1.1]), torch.tensor([2.0, 0.0, 0.0])
    # V_clip = [0.2, −0.2, 1.1]; (V − R)² = [1, 0.25, 1.21]; (V_clip − R)² = [3.24, 0.04, 1.21]; max = [3.24, 0.25, 1.21]
    close(float(L.ppo_value_loss(v, v_old, ret, 0.2)), 0.5 * (3.24 + 0.25 + 1.21) / 3, atol=1e-6, quiet=True,
          name="worked example: V_old = [0, 0, 1], V = [1, −0.5, 1.1], R = [2, 0, 0], clip 0.2 → 0.783333")
    shape = (_n(g, 2, 5), _n(g, 2, 7))
    v_old = torch.randn(shape, generator=g)
    ret = torch.randn(shape, generator=g).requires_grad_()
    v = (v_old + 1.0).requires_grad_()           # every V moved by 1 > clip: the clipped error is pinned at V_old ± c
    loss = L.ppo_value_loss(v, v_old, ret, 0.2)
    loss.backward()
    assert ret.grad is None or bool((ret.grad == 0).all()), "a gradient flowed into `returns`: they are targets"


_FORBIDDEN = Forbidden(packages=("labkit", "trl"))

TASKS = (
    Task("15.A", "GAE over a batch of episodes (advantages and returns)", ("gae_advantages",), (
        Check("random (B, T), γ, λ, incl. B = 1 and T = 1 == the float64 sum Σ_l (γλ)^l δ_(t+l)", 2, _gae_random),
        Check("the worked example [0.446829, 0.37515, 0.3]; λ = 0 gives δ, λ = 1 gives G − V", 1, _gae_worked),
        Check("float64 stays float64 (1e-12); advantages and returns carry no gradient", 1, _gae_constants),
    ), _FORBIDDEN),
    Task("15.B", "PPO's clipped policy loss and clipped value loss", ("ppo_policy_loss", "ppo_value_loss"), (
        Check("policy loss and clip fraction == the float64 min-form reference (random shapes and ε)", 2,
              _policy_values),
        Check("gradient == the reference's; clipped tokens exactly 0; nothing flows into logp_old or A", 2,
              _policy_gradient),
        Check("ρ = 1 gives −mean(A) and no clipping; the worked example (loss 0.27, 2 of 5 clipped)", 1,
              _policy_first_minibatch),
        Check("value loss and its gradient == ½ mean max((V − R)², (V_clip − R)²); clip=None is plain MSE", 2,
              _value_random),
        Check("value loss worked example 0.783333; no gradient into the returns", 1, _value_worked),
    ), _FORBIDDEN),
)
