"""Hidden tests of chapter 22's lab tasks: the ring all-reduce (simulated, with its message log) and DDP's
gradient averaging (simulated ranks in one process; no torchrun, no process group).

References: the plain sum ``torch.stack(xs).sum(0)`` in float64, the ring's message pattern (each worker
sends one chunk per step to its right neighbour, ``2(P-1)`` steps, ``2(P-1)/P·N`` elements per worker) and a
replay of the learner's own log, which must rebuild the learner's results; for DDP, one process running
``torch.optim.SGD`` on the whole batch (parameters, gradients and losses), over several steps.
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ---- 22.A ring_allreduce -------------------------------------------------------------------------------
def _inputs(g: torch.Generator, P: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(P)]


def _sum_check(L: Learner, xs: list[torch.Tensor], what: str) -> list[torch.Tensor]:
    kept = [x.clone() for x in xs]
    out = L.ring_allreduce(xs)
    exact(len(out), len(xs), quiet=True, name=f"{what}: one result per worker")
    total = torch.stack(kept).sum(0)
    for i, o in enumerate(out):
        close(o, total, atol=1e-12, quiet=True, name=f"{what}: worker {i} holds the sum")
    for i, (x, k) in enumerate(zip(xs, kept)):
        exact(x, k, quiet=True, name=f"{what}: worker {i}'s input is left unchanged")
    return out


def _ring_divisible(L: Learner, g: torch.Generator) -> None:
    for P in (2, 4, _n(g, 3, 8)):
        _sum_check(L, _inputs(g, P, (P * _n(g, 1, 5),)), f"P={P}, N divisible by P")


def _ring_uneven(L: Learner, g: torch.Generator) -> None:
    for P, shape in [(3, (10,)), (5, (3,)), (4, (3, 5)), (_n(g, 2, 6), (_n(g, 1, 13),))]:
        out = _sum_check(L, _inputs(g, P, shape), f"P={P}, a {shape} tensor")
        for i in range(1, P):
            exact(out[i], out[0], quiet=True, name=f"P={P}, a {shape} tensor: worker {i}'s copy is bit for bit worker 0's "
                                                   "(the all-gather copies finished chunks)")


def _logged(L: Learner, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[tuple[int, int, int, int]]]:
    log: list = []
    out = L.ring_allreduce(xs, log=log)
    return out, [tuple(int(v) for v in m) for m in log]


def _ring_pattern(L: Learner, g: torch.Generator) -> None:
    for P in (2, 3, _n(g, 4, 7)):
        N = P * _n(g, 1, 4)
        _, log = _logged(L, _inputs(g, P, (N,)))
        exact(sorted({m[0] for m in log}), list(range(2 * (P - 1))), quiet=True, name=f"P={P}: steps 0 .. 2(P-1)-1")
        for step in range(2 * (P - 1)):
            msgs = [m for m in log if m[0] == step]
            exact(sorted((m[1], m[2]) for m in msgs), [(i, (i + 1) % P) for i in range(P)], quiet=True,
                  name=f"P={P}, step {step}: every worker sends exactly one message, to its right neighbour")
        sizes = [len(c) for c in torch.arange(N).tensor_split(P)]
        sent = [sum(sizes[m[3]] for m in log if m[1] == i) for i in range(P)]
        exact(sent, [2 * (P - 1) * N // P] * P, quiet=True, name=f"P={P}, N={N}: elements sent per worker = 2(P-1)/P·N")


def _replay(xs: list[torch.Tensor], log: list[tuple[int, int, int, int]]) -> list[torch.Tensor]:
    P = len(xs)
    bufs = [list(x.reshape(-1).clone().tensor_split(P)) for x in xs]
    for step in sorted({m[0] for m in log}):
        msgs = [m for m in log if m[0] == step]
        payloads = [bufs[src][c].clone() for _, src, _, c in msgs]
        for (_, _, dst, c), payload in zip(msgs, payloads):
            bufs[dst][c] = payload if step >= P - 1 else bufs[dst][c] + payload
    return [torch.cat(b).reshape(xs[0].shape) for b in bufs]


def _ring_replay(L: Learner, g: torch.Generator) -> None:
    for P, shape in [(4, (12,)), (3, (2, 5)), (1, (4,))]:
        xs = _inputs(g, P, shape)
        out, log = _logged(L, [x.clone() for x in xs])
        if P == 1:
            exact(log, [], quiet=True, name="P=1: no messages")
            exact(out[0], xs[0], quiet=True, name="P=1: the result is the input")
            continue
        for i, (o, r) in enumerate(zip(out, _replay(xs, log))):
            exact(o, r, quiet=True, name=f"P={P}, {shape}: worker {i}'s result == replaying your log (reduce-scatter "
                                         "steps add, all-gather steps copy)")


# ---- 22.B ddp_step -------------------------------------------------------------------------------------
def _setup(g: torch.Generator, P: int, with_bias: bool = True):
    d_in, d_h, d_out = _n(g, 2, 7), _n(g, 3, 9), _n(g, 1, 4)
    model = nn.Sequential(nn.Linear(d_in, d_h, bias=with_bias), nn.Tanh(), nn.Linear(d_h, d_out))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    per = _n(g, 1, 4)
    x, y = torch.randn(P * per, d_in, generator=g), torch.randn(P * per, d_out, generator=g)
    shards = list(zip(x.split(per), y.split(per)))
    return model, [copy.deepcopy(model) for _ in range(P)], shards, x, y


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> tuple[nn.Module, list]:
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(ref(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return ref, losses


def _ddp_one_step(L: Learner, g: torch.Generator) -> None:
    for P in (2, _n(g, 3, 4)):
        model, replicas, shards, x, y = _setup(g, P)
        L.ddp_step(replicas, shards, nn.functional.mse_loss, 0.1)
        ref, _ = _reference(model, x, y, 0.1, 1)
        for r, rep in enumerate(replicas):
            for (name, p), q in zip(rep.named_parameters(), ref.parameters()):
                close(p.detach(), q.detach(), atol=1e-6, quiet=True,
                      name=f"P={P}: rank {r}'s {name} after one step == SGD on the whole batch")


def _ddp_grads(L: Learner, g: torch.Generator) -> None:
    P = _n(g, 2, 4)
    model, replicas, shards, x, y = _setup(g, P, with_bias=False)
    L.ddp_step(replicas, shards, nn.functional.mse_loss, 0.05)
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    for r, rep in enumerate(replicas):
        for (name, p), q in zip(rep.named_parameters(), model.parameters()):
            assert p.grad is not None, f"rank {r}'s {name}.grad is None after ddp_step"
            close(p.grad, q.grad, atol=1e-6, quiet=True,
                  name=f"P={P}: rank {r}'s {name}.grad == the full-batch gradient (the average, not the sum)")


def _ddp_steps(L: Learner, g: torch.Generator) -> None:
    P, steps = 3, 4
    model, replicas, shards, x, y = _setup(g, P)
    rank_losses = [L.ddp_step(replicas, shards, nn.functional.mse_loss, 0.2) for _ in range(steps)]
    ref, ref_losses = _reference(model, x, y, 0.2, steps)
    for r in range(1, P):
        for (name, p), q in zip(replicas[r].named_parameters(), replicas[0].parameters()):
            exact(p.detach(), q.detach(), quiet=True, name=f"after {steps} steps rank {r}'s {name} is bit for bit rank 0's")
    for (name, p), q in zip(replicas[0].named_parameters(), ref.parameters()):
        close(p.detach(), q.detach(), atol=1e-5, quiet=True, name=f"after {steps} steps {name} == SGD on the whole batch")
    means = [sum(float(v) for v in ls) / P for ls in rank_losses]
    close(means, ref_losses, atol=1e-5, quiet=True,
          name="the mean of the ranks' returned losses == the full-batch loss, step by step")


_RING = Forbidden(objects=((dist.all_reduce, "torch.distributed.all_reduce"),))
_DDP = Forbidden(objects=((torch.nn.parallel.DistributedDataParallel, "DistributedDataParallel"),
                          (dist.all_reduce, "torch.distributed.all_reduce")))

TASKS = (
    Task("22.A", "ring all-reduce (simulated)", ("ring_allreduce",), (
        Check("P workers, N divisible by P: every worker holds the sum", 1, _ring_divisible),
        Check("N not divisible by P (chunks may be empty), 2-D tensors; identical copies", 1, _ring_uneven),
        Check("the log: one message per worker and step, to the right neighbour, 2(P-1)/P·N elements", 1, _ring_pattern),
        Check("replaying the log rebuilds the results; P = 1", 1, _ring_replay),
    ), _RING),
    Task("22.B", "DDP gradient averaging (simulated ranks)", ("ddp_step",), (
        Check("one step == SGD on the whole batch, every rank", 1, _ddp_one_step),
        Check("every replica's .grad == the full-batch gradient", 1, _ddp_grads),
        Check("several steps: replicas stay identical; losses", 1, _ddp_steps),
    ), _DDP),
)
