"""Hidden tests of chapter 24's lab tasks: column- and row-parallel linear layers on simulated ranks, and the
1F1B pipeline schedule.

References: ``F.linear`` / ``nn.Linear`` and the dense MLP ``Linear → GELU → Linear`` (outputs and, through
autograd, the gradients of the weights and the input), on random sizes and world sizes; for 1F1B, Megatron-LM's
non-interleaved schedule (warm-up ``min(K - s - 1, M)`` forwards, steady one-forward-one-backward, cool-down)
written out here, the op order of labkit's ``pipeline_schedule("1f1b")``, and an event simulation of the
learner's schedule (no deadlock, bubble ``(K-1)/(M+K-1)``, at most ``min(K - s, M)`` activations per stage).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.parallel import pipeline_schedule

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ---- 24.A column_parallel / row_parallel ---------------------------------------------------------------
def _layer(g: torch.Generator, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(d_out, d_in, generator=g), torch.randn(d_out, generator=g)


def _column(L: Learner, g: torch.Generator) -> None:
    for world in (1, 2, _n(g, 3, 4)):
        d_in, d_out = _n(g, 2, 9), world * _n(g, 1, 4)
        w, b = _layer(g, d_in, d_out)
        for lead in [(5,), (2, 3)]:
            x = torch.randn(*lead, d_in, generator=g)
            parts = list(L.column_parallel(x, w, b, world))
            exact(len(parts), world, quiet=True, name=f"world={world}: one output per rank")
            ref = F.linear(x, w, b)
            size = d_out // world
            for r, part in enumerate(parts):
                close(part, ref[..., r * size:(r + 1) * size], atol=1e-5, quiet=True,
                      name=f"world={world}, x {tuple(x.shape)}: rank {r} computes output features "
                           f"{r * size}..{(r + 1) * size - 1} of F.linear(x, w, b)")


def _row(L: Learner, g: torch.Generator) -> None:
    for world in (1, 2, _n(g, 3, 4)):
        d_in, d_out = world * _n(g, 1, 4), _n(g, 1, 7)
        w, b = _layer(g, d_in, d_out)
        b = b + 10.0                                   # a bias added once per rank would show at once
        x = torch.randn(_n(g, 1, 4), 3, d_in, generator=g)
        parts = list(x.chunk(world, dim=-1))
        close(L.row_parallel(parts, w, b, world), F.linear(x, w, b), atol=1e-5, quiet=True,
              name=f"world={world}: row_parallel(x split in {world} feature slices) == F.linear(x, w, b), bias added once")


def _no_bias(L: Learner, g: torch.Generator) -> None:
    w, _ = _layer(g, 6, 4)
    x = torch.randn(3, 6, generator=g)
    close(torch.cat(list(L.column_parallel(x, w, None, 2)), -1), F.linear(x, w), atol=1e-5, quiet=True,
          name="column_parallel with b=None")
    close(L.row_parallel(list(x.chunk(3, -1)), w, None, 3), F.linear(x, w), atol=1e-5, quiet=True,
          name="row_parallel with b=None")


def _megatron_mlp(L: Learner, g: torch.Generator) -> None:
    world, d = _n(g, 2, 4), _n(g, 3, 8)
    h = world * _n(g, 2, 5)
    dense = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    with torch.no_grad():
        for p in dense.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(2, 5, d, generator=g)
    xr = x.clone().requires_grad_()
    dense(xr).pow(2).sum().backward()
    W1, b1, W2, b2 = (p.detach().clone().requires_grad_() for p in dense.parameters())
    xm = x.clone().requires_grad_()
    hidden = [F.gelu(part) for part in L.column_parallel(xm, W1, b1, world)]
    out = L.row_parallel(hidden, W2, b2, world)
    close(out, dense(x), atol=1e-5, quiet=True,
          name=f"Megatron MLP on {world} ranks (W1 by output rows, GELU on each rank's slice, W2 by input columns) == dense")
    out.pow(2).sum().backward()
    for name, mine, ref in [("W1", W1, dense[0].weight), ("b1", b1, dense[0].bias), ("W2", W2, dense[2].weight),
                            ("b2", b2, dense[2].bias), ("x", xm, xr)]:
        assert mine.grad is not None, f"no gradient reached {name}: keep the computation differentiable"
        close(mine.grad, ref.grad, atol=1e-4, quiet=True, name=f"d loss / d {name} == the dense MLP's")


# ---- 24.B one_f_one_b ----------------------------------------------------------------------------------
def _megatron_order(s: int, K: int, M: int) -> list[tuple[str, int]]:
    """Megatron-LM's ``forward_backward_pipelining_without_interleaving``: warm-up, steady 1F1B, cool-down."""
    warm = min(K - s - 1, M)
    steady = M - warm
    ops = [("F", i) for i in range(warm)]
    for i in range(steady):
        ops += [("F", warm + i), ("B", i)]
    return ops + [("B", i) for i in range(steady, M)]


def _learner_orders(L: Learner, K: int, M: int) -> list[list[tuple[str, int]]]:
    return [[(str(op), int(i)) for op, i in L.one_f_one_b(s, K, M)] for s in range(K)]


def _simulate(orders: list[list[tuple[str, int]]], t_f: float = 1.0, t_b: float = 2.0) -> tuple[float, float, list[int]]:
    """Run each stage's ops in its order as soon as their inputs are ready; (makespan, bubble, peak activations)."""
    K = len(orders)
    done, pos, free, busy = {}, [0] * K, [0.0] * K, 0.0
    live, peak = [0] * K, [0] * K
    while any(pos[s] < len(orders[s]) for s in range(K)):
        moved = False
        for s in range(K):
            if pos[s] == len(orders[s]):
                continue
            op, i = orders[s][pos[s]]
            deps = ([("F", s - 1, i)] if s > 0 else []) if op == "F" else \
                [("F", s, i)] + ([("B", s + 1, i)] if s < K - 1 else [])
            if all(d in done for d in deps):
                end = max([free[s]] + [done[d] for d in deps]) + (t_f if op == "F" else t_b)
                done[(op, s, i)], free[s], pos[s], moved = end, end, pos[s] + 1, True
                busy += t_f if op == "F" else t_b
                live[s] += 1 if op == "F" else -1
                peak[s] = max(peak[s], live[s])
        assert moved, f"the schedule deadlocks: stage orders {orders} wait on each other"
    makespan = max(free)
    return makespan, 1 - busy / (K * makespan), peak


def _sizes(g: torch.Generator) -> list[tuple[int, int]]:
    return [(4, 8), (2, 4), (_n(g, 2, 6), _n(g, 1, 12)), (_n(g, 3, 5), _n(g, 6, 16))]


def _fb_megatron(L: Learner, g: torch.Generator) -> None:
    for K, M in _sizes(g):
        for s, order in enumerate(_learner_orders(L, K, M)):
            exact(order, _megatron_order(s, K, M), quiet=True, name=f"K={K}, M={M}: stage {s}'s ops == Megatron's 1F1B order")


def _fb_labkit(L: Learner, g: torch.Generator) -> None:
    K, M = _n(g, 2, 6), _n(g, 2, 10)
    ref = pipeline_schedule("1f1b", K, M)
    for s, order in enumerate(_learner_orders(L, K, M)):
        exact(order, [(op, i) for op, i, _, _ in sorted(ref.ops[s], key=lambda o: o[2])], quiet=True,
              name=f"K={K}, M={M}: stage {s} == the op order of labkit's 1F1B simulator")


def _fb_properties(L: Learner, g: torch.Generator) -> None:
    for K, M in _sizes(g):
        orders = _learner_orders(L, K, M)
        for s, order in enumerate(orders):
            exact(sorted(i for op, i in order if op == "F"), list(range(M)), quiet=True,
                  name=f"K={K}, M={M}, stage {s}: one forward per micro-batch")
            exact(sorted(i for op, i in order if op == "B"), list(range(M)), quiet=True,
                  name=f"K={K}, M={M}, stage {s}: one backward per micro-batch")
        _, bubble, peak = _simulate(orders)
        close(bubble, (K - 1) / (M + K - 1), atol=1e-12, quiet=True, name=f"K={K}, M={M}: bubble == (K-1)/(M+K-1)")
        exact(peak, [min(K - s, M) for s in range(K)], quiet=True,
              name=f"K={K}, M={M}: peak activations per stage == min(K - s, M) (GPipe holds M)")


def _fb_edges(L: Learner, g: torch.Generator) -> None:
    for K, M in [(1, 3), (4, 1), (5, 2)]:
        for s, order in enumerate(_learner_orders(L, K, M)):
            exact(order, _megatron_order(s, K, M), quiet=True,
                  name=f"K={K}, M={M} ({'one stage' if K == 1 else 'fewer micro-batches than stages'}): stage {s}")


TASKS = (
    Task("24.A", "column- and row-parallel linear layers (simulated ranks)", ("column_parallel", "row_parallel"), (
        Check("column_parallel: rank r's output features, 2-D and 3-D inputs", 1, _column),
        Check("row_parallel == F.linear, the bias added once", 1, _row),
        Check("b=None", 1, _no_bias),
        Check("the Megatron MLP on them == dense, with gradients", 1, _megatron_mlp),
    ), Forbidden(objects=((dist.all_reduce, "torch.distributed.all_reduce"),))),
    Task("24.B", "the 1F1B schedule", ("one_f_one_b",), (
        Check("== Megatron-LM's 1F1B order, every stage", 1, _fb_megatron),
        Check("== labkit's pipeline_schedule('1f1b')", 1, _fb_labkit),
        Check("simulated: no deadlock, bubble (K-1)/(M+K-1), peak min(K - s, M)", 1, _fb_properties),
        Check("K = 1, M = 1, M < K", 1, _fb_edges),
    ), Forbidden()),
)
