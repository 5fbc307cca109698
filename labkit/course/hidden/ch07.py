"""Hidden tests of chapter 07's lab tasks: one AdamW update, global-norm gradient clipping and the warmup +
cosine learning-rate schedule.

References: ``torch.optim.AdamW`` (several steps, two hyperparameter sets, a state resumed mid-run),
``torch.nn.utils.clip_grad_norm_`` (gradients and returned norm, parameters without a gradient) and
transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` (the same cosine; its warmup is one step behind
the course's convention, whose first update already uses ``max_lr / warmup``), plus worked values.
"""
from __future__ import annotations

import math

import torch
import torch.optim.adam as adam_module
import torch.optim.adamw as adamw_module
import torch.optim.lr_scheduler as lr_scheduler
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, LearnerError, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


# ---- 07.A adamw_step -----------------------------------------------------------------------------------
def _shapes(g: torch.Generator) -> list[tuple[int, ...]]:
    return [(_n(g, 2, 9),), (_n(g, 2, 5), _n(g, 3, 7)), (2, _n(g, 1, 3), _n(g, 2, 5))]


def _run_adamw(L: Learner, g: torch.Generator, shape: tuple[int, ...], steps: int, hp: dict,
               start: dict | None = None) -> None:
    """``steps`` updates of the learner's adamw_step against torch.optim.AdamW on one tensor."""
    p0 = torch.randn(shape, generator=g)
    ref = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([ref], lr=hp["lr"], betas=hp["betas"], eps=hp["eps"], weight_decay=hp["weight_decay"])
    ours = p0.clone()
    state = {"t": 0, "m": torch.zeros(shape), "v": torch.zeros(shape)}
    if start is not None:  # resume from a state torch reached after start["t"] steps
        for _ in range(start["t"]):
            ref.grad = torch.randn(shape, generator=g)
            opt.step()
        st = opt.state[ref]
        ours = ref.detach().clone()
        state = {"t": int(st["step"]), "m": st["exp_avg"].clone(), "v": st["exp_avg_sq"].clone()}
    for _ in range(steps):
        grad = torch.randn(shape, generator=g) * _u(g, 0.1, 3.0)
        ref.grad = grad.clone()
        opt.step()
        L.adamw_step(ours, grad.clone(), state, hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"])
    where = f"shape {shape}, {hp}" + (f", resumed at t = {start['t']}" if start else "")
    close(ours, ref.detach(), atol=2e-6, rtol=1e-5, quiet=True, name=f"p after {steps} updates ({where})")
    exact(int(state["t"]), int(opt.state[ref]["step"]), quiet=True, name=f"state['t'] after the updates ({where})")
    close(state["m"], opt.state[ref]["exp_avg"], atol=1e-6, rtol=1e-5, quiet=True, name=f"state['m'] ({where})")
    close(state["v"], opt.state[ref]["exp_avg_sq"], atol=1e-6, rtol=1e-5, quiet=True, name=f"state['v'] ({where})")


def _adamw_torch(L: Learner, g: torch.Generator) -> None:
    for shape in _shapes(g):
        hp = {"lr": _u(g, 1e-3, 3e-2), "betas": (_u(g, 0.8, 0.95), _u(g, 0.9, 0.999)), "eps": 1e-8,
              "weight_decay": _u(g, 0.0, 0.3)}
        _run_adamw(L, g, shape, _n(g, 5, 12), hp)


def _adamw_first_step(L: Learner, g: torch.Generator) -> None:
    shape, lr = (_n(g, 3, 9), 4), _u(g, 1e-3, 1e-1)
    p0 = torch.randn(shape, generator=g)
    grad = torch.randn(shape, generator=g) * 10 ** _u(g, -3, 2)
    ours = p0.clone()
    L.adamw_step(ours, grad, {"t": 0, "m": torch.zeros(shape), "v": torch.zeros(shape)}, lr, (0.9, 0.95), 1e-8, 0.0)
    close(ours, p0 - lr * grad / (grad.abs() + 1e-8), atol=1e-6, quiet=True,
          name="bias correction: the first update moves every weight by lr·sign(g), whatever |g| is")


def _adamw_decoupled(L: Learner, g: torch.Generator) -> None:
    shape, lr, wd = (_n(g, 2, 6), 3), _u(g, 1e-3, 5e-2), _u(g, 0.05, 0.5)
    p0 = torch.randn(shape, generator=g)
    ours = p0.clone()
    L.adamw_step(ours, torch.zeros(shape), {"t": 0, "m": torch.zeros(shape), "v": torch.zeros(shape)}, lr,
                 (0.9, 0.999), 1e-8, wd)
    close(ours, p0 * (1 - lr * wd), atol=1e-7, quiet=True,
          name=f"decoupled weight decay: with g = 0 the weights shrink by exactly 1 − lr·λ = {1 - lr * wd:.6f} "
               "(Adam with L2 would add λθ to g and move by lr·sign(θ))")


def _adamw_resume(L: Learner, g: torch.Generator) -> None:
    hp = {"lr": _u(g, 1e-3, 1e-2), "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    _run_adamw(L, g, (_n(g, 3, 8), _n(g, 2, 5)), 4, hp, start={"t": _n(g, 3, 9)})


# ---- 07.B clip_grad_global -----------------------------------------------------------------------------
def _params_with_grads(g: torch.Generator, scale: float) -> list[torch.nn.Parameter]:
    ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(_n(g, 2, 7), _n(g, 2, 9)), (_n(g, 1, 11),),
                                                                     (3, _n(g, 1, 4), 2), (5,)]]
    for i, p in enumerate(ps):
        if i != 3:                          # the last one has no gradient: skipped
            p.grad = torch.randn(p.shape, generator=g) * scale
    return ps


def _copies(ps: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    out = []
    for p in ps:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def _clip_above(L: Learner, g: torch.Generator) -> None:
    for scale in (_u(g, 1.0, 3.0), _u(g, 50.0, 500.0)):
        ours = _params_with_grads(g, scale)
        ref = _copies(ours)
        max_norm = _u(g, 0.2, 2.0)
        ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        norm = L.clip_grad_global(ours, max_norm)
        close(float(norm), float(ref_norm), atol=1e-5, rtol=1e-6, quiet=True,
              name=f"returned norm (before clipping) == clip_grad_norm_'s, max_norm {max_norm:.3f}")
        for i, (a, b) in enumerate(zip(ours, ref)):
            if b.grad is None:
                assert a.grad is None, "a parameter without a gradient must stay without one"
            else:
                close(a.grad, b.grad, atol=1e-6, rtol=1e-5, quiet=True,
                      name=f"clipped gradient of parameter {i} == clip_grad_norm_'s (max_norm {max_norm:.3f})")


def _clip_below(L: Learner, g: torch.Generator) -> None:
    ours = _params_with_grads(g, 1e-3)
    before = [None if p.grad is None else p.grad.clone() for p in ours]
    norm = L.clip_grad_global(iter(ours), 10.0)          # a generator, as model.parameters() is
    ref = torch.sqrt(sum((b ** 2).sum() for b in before if b is not None))
    close(float(norm), float(ref), atol=1e-7, rtol=1e-6, quiet=True,
          name="the norm of all gradients together, from a generator of parameters")
    for p, b in zip(ours, before):
        if b is not None:
            close(p.grad, b, atol=1e-9, quiet=True, name="a norm below max_norm leaves every gradient as it was")


def _clip_nonfinite(L: Learner, g: torch.Generator) -> None:
    for bad in (float("nan"), float("inf")):
        ps = _params_with_grads(g, 1.0)
        ps[1].grad[0] = bad
        before = [p.grad.clone() for p in ps if p.grad is not None]
        try:
            L.clip_grad_global(ps, 1.0)
        except LearnerError as e:  # the learner's own exception, wrapped by the Learner proxy
            cause = e.__cause__
            assert isinstance(cause, ValueError), (f"a {bad} gradient raised {type(cause).__name__}; raise "
                                                   "ValueError naming the non-finite norm")
        else:
            raise AssertionError(f"a {bad} gradient: the norm is not finite, so clipping must raise ValueError "
                                 "(scaling by a NaN factor would make every weight NaN)")
        after = [p.grad for p in ps if p.grad is not None]
        for a, b in zip(after, before):
            assert torch.equal(a.nan_to_num(), b.nan_to_num()), "raise before touching any gradient"


# ---- 07.C lr_schedule ----------------------------------------------------------------------------------
def _hf_lrs(max_lr: float, warmup: int, total: int, min_lr: float, n: int) -> list[float]:
    """lr of transformers' cosine-with-min-lr schedule at steps 0..n-1."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr=min_lr)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _lr_warmup(L: Learner, g: torch.Generator) -> None:
    max_lr, W, S = _u(g, 1e-4, 1e-2), _n(g, 2, 20), _n(g, 40, 90)
    got = [L.lr_schedule(t, max_lr, W, S, max_lr / 10) for t in range(W)]
    close(got, [max_lr * (t + 1) / W for t in range(W)], atol=1e-15, rtol=1e-12, quiet=True,
          name=f"warmup W = {W}: step t takes max_lr·(t + 1)/W (the first update already moves, the peak at t = W − 1)")


def _lr_cosine_hf(L: Learner, g: torch.Generator) -> None:
    max_lr, W, S = _u(g, 1e-4, 1e-2), _n(g, 1, 15), _n(g, 30, 80)
    min_lr = max_lr * _u(g, 0.0, 0.3)
    hf = _hf_lrs(max_lr, W, S, min_lr, S + 1)
    got = [L.lr_schedule(t, max_lr, W, S, min_lr) for t in range(W, S + 1)]
    close(got, hf[W:S + 1], atol=1e-15, rtol=1e-9, quiet=True,
          name=f"cosine part (W = {W}, S = {S}) == transformers' get_cosine_with_min_lr_schedule_with_warmup")
    close([L.lr_schedule(t, max_lr, W, S, min_lr) for t in range(W - 1)], hf[1:W], atol=1e-15, rtol=1e-9,
          quiet=True, name="warmup == transformers' one step later (its step 0 has lr 0, ours max_lr / W)")


def _lr_edges(L: Learner, g: torch.Generator) -> None:
    max_lr, min_lr = 3e-3, 3e-4
    exact([L.lr_schedule(t, max_lr, 5, 20, min_lr) for t in (20, 21, 500)], [min_lr] * 3, quiet=True,
          name="from step total on: min_lr")
    close(L.lr_schedule(0, max_lr, 0, 20, min_lr), max_lr, atol=1e-15, quiet=True,
          name="warmup = 0: step 0 already takes max_lr")
    close(L.lr_schedule(10, 1.0, 0, 20, 0.0), 0.5, atol=1e-12, quiet=True,
          name="half way through the cosine (t = 10 of 20, no warmup, min_lr 0): 0.5·max_lr")
    close(L.lr_schedule(5, max_lr, 5, 20), max_lr, atol=1e-15, quiet=True, name="min_lr defaults to 0: t = W gives max_lr")


_ADAMW_FORBIDDEN = Forbidden(
    patch=((torch.optim, "AdamW", "torch.optim.AdamW"), (torch.optim, "Adam", "torch.optim.Adam"),
           (adamw_module, "adamw", "torch.optim.adamw.adamw"), (adam_module, "adam", "torch.optim.adam.adam"),
           (torch, "_fused_adamw_", "torch._fused_adamw_")),
    packages=("labkit", "transformers"))
_CLIP_FORBIDDEN = Forbidden(
    patch=((torch.nn.utils, "clip_grad_norm_", "torch.nn.utils.clip_grad_norm_"),
           (torch.nn.utils, "clip_grad_norm", "torch.nn.utils.clip_grad_norm"),
           (torch.nn.utils, "get_total_norm", "torch.nn.utils.get_total_norm"),
           (torch.nn.utils, "clip_grads_with_norm_", "torch.nn.utils.clip_grads_with_norm_")),
    packages=("labkit", "transformers"))
_LR_FORBIDDEN = Forbidden(
    objects=tuple((getattr(lr_scheduler, n), f"torch.optim.lr_scheduler.{n}") for n in
                  ("CosineAnnealingLR", "LinearLR", "SequentialLR", "OneCycleLR", "LambdaLR")),
    packages=("labkit", "transformers"))

TASKS = (
    Task("07.A", "one AdamW update (moments, bias correction, decoupled weight decay)", ("adamw_step",), (
        Check("several updates, random shapes and hyperparameters == torch.optim.AdamW (p, t, m, v)", 2, _adamw_torch),
        Check("bias correction: the first update is lr·sign(g)", 1, _adamw_first_step),
        Check("decoupled weight decay: g = 0 shrinks p by 1 − lr·λ", 1, _adamw_decoupled),
        Check("continues from a state reached mid-run (t counted per tensor)", 1, _adamw_resume),
    ), _ADAMW_FORBIDDEN),
    Task("07.B", "gradient clipping by the global norm", ("clip_grad_global",), (
        Check("norm above max_norm: gradients and returned norm == torch.nn.utils.clip_grad_norm_", 2, _clip_above),
        Check("norm below max_norm: gradients unchanged; parameters from a generator", 1, _clip_below),
        Check("a NaN or inf gradient: ValueError before touching anything", 1, _clip_nonfinite),
    ), _CLIP_FORBIDDEN),
    Task("07.C", "the warmup + cosine learning-rate schedule", ("lr_schedule",), (
        Check("linear warmup: step t takes max_lr·(t + 1)/W", 1, _lr_warmup),
        Check("cosine part == transformers' cosine-with-min-lr schedule", 1, _lr_cosine_hf),
        Check("min_lr after total, warmup 0, the default min_lr", 1, _lr_edges),
    ), _LR_FORBIDDEN),
)
