"""Hidden tests of chapter 23's lab task: one ZeRO-1 Adam step on simulated ranks in one process (no torchrun,
no process group).

Reference: ``torch.optim.Adam`` on the whole vector with the rank-averaged gradient, in float64, over several
steps; the sharded state must hold exactly rank ``r``'s ``⌈n/P⌉`` elements of Adam's ``exp_avg`` /
``exp_avg_sq`` (padding included), on random sizes ``n`` that ``P`` does not divide, and other ``lr``, betas, eps.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim import adam as torch_adam

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _run(L: Learner, g: torch.Generator, P: int, n: int, steps: int, hp: dict, what: str) -> list[dict]:
    """``steps`` ZeRO-1 steps of the learner against Adam on the full vector; returns the learner's states."""
    w0 = torch.randn(n, generator=g, dtype=torch.float64)
    ref = w0.clone().requires_grad_()
    opt = torch.optim.Adam([ref], **hp)
    params, states = [w0.clone() for _ in range(P)], [{} for _ in range(P)]
    for t in range(1, steps + 1):
        grads = [torch.randn(n, generator=g, dtype=torch.float64) * (r + 1) for r in range(P)]
        ref.grad = torch.stack(grads).mean(0)
        opt.step()
        params = list(L.zero1_adam_step([p.clone() for p in params], [x.clone() for x in grads], states, **hp))
        exact(len(params), P, quiet=True, name=f"{what}: one parameter vector per rank")
        for r, p in enumerate(params):
            close(p, ref.detach(), atol=1e-6, quiet=True,  # float64 inputs; a float32 state passes too
                  name=f"{what}: rank {r}'s parameters after step {t} == Adam on the rank-averaged gradient")
    _check_state(states, opt.state[ref], n, P, steps, what)
    return states


def _check_state(states: list[dict], full: dict, n: int, P: int, steps: int, what: str) -> None:
    s = math.ceil(n / P)
    for key in ("exp_avg", "exp_avg_sq"):
        padded = F.pad(full[key], (0, s * P - n)).view(P, s)
        for r, st in enumerate(states):
            assert key in st, f"{what}: rank {r}'s state has no {key!r} (keys: {sorted(st)})"
            exact(tuple(torch.as_tensor(st[key]).shape), (s,), quiet=True,
                  name=f"{what}: rank {r}'s {key} holds only its shard, ⌈{n}/{P}⌉ = {s} elements")
            close(st[key], padded[r], atol=1e-7, quiet=True,
                  name=f"{what}: rank {r}'s {key} == shard {r} of Adam's {key} (zero-padded)")
    for r, st in enumerate(states):
        exact(int(st.get("step", -1)), steps, quiet=True, name=f"{what}: rank {r}'s step counter")


def _zero1_basic(L: Learner, g: torch.Generator) -> None:
    for P in (2, _n(g, 3, 5)):
        n = P * _n(g, 2, 6)
        _run(L, g, P, n, 3, {"lr": 1e-2}, f"P={P}, n={n}")


def _zero1_padding(L: Learner, g: torch.Generator) -> None:
    for P, n in [(3, 7), (4, 3), (_n(g, 2, 5), 4 * _n(g, 2, 5) + 1)]:
        _run(L, g, P, n, 3, {"lr": 5e-3}, f"P={P}, n={n} (padded)")


def _zero1_state(L: Learner, g: torch.Generator) -> None:
    _run(L, g, 3, 11, 5, {"lr": 1e-2}, "P=3, n=11, 5 steps")


def _zero1_hparams(L: Learner, g: torch.Generator) -> None:
    _run(L, g, 2, 9, 3, {"lr": 0.3, "betas": (0.5, 0.9), "eps": 1e-3}, "lr=0.3, betas=(0.5, 0.9), eps=1e-3")
    _run(L, g, 1, 6, 2, {"lr": 1e-3}, "P=1 (plain Adam)")


TASKS = (
    Task("23.A", "a ZeRO-1 sharded Adam step (simulated ranks)", ("zero1_adam_step",), (
        Check("every rank's parameters == Adam on the averaged gradient", 1, _zero1_basic),
        Check("n not divisible by P: padded shards", 1, _zero1_padding),
        Check("each rank's state holds only its shard of exp_avg, exp_avg_sq; step", 1, _zero1_state),
        Check("other lr, betas, eps; P = 1", 1, _zero1_hparams),
    ), Forbidden(objects=((torch.optim.Adam, "torch.optim.Adam"), (torch.optim.AdamW, "torch.optim.AdamW"),
                          (torch_adam.adam, "torch.optim.adam.adam"),
                          (dist.reduce_scatter, "torch.distributed.reduce_scatter")))),
)
