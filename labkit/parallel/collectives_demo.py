"""The five collectives on real processes, each checked against its definition, plus a ring
all-reduce written with send/recv that matches ``dist.all_reduce``.

    python -m torch.distributed.run --nproc_per_node 4 --master_addr 127.0.0.1 --master_port 29500 \
        -m labkit.parallel.collectives_demo

Every rank starts from ``x_r = [10 r + 0, 10 r + 1, ..., 10 r + (P-1)]`` (float32), so every rank can
compute what each collective must return.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from labkit.parallel.runtime import (
    CountingComm,
    agree_close,
    demo_args,
    init,
    rank0_print,
    require_torchrun,
    shutdown,
    write_result,
)

__all__ = ["rank_tensor", "ring_allreduce_p2p", "main"]


def rank_tensor(r: int, p: int) -> torch.Tensor:
    """Rank ``r``'s starting vector, length ``p``: ``10 r + [0, 1, ..., p-1]``."""
    return 10.0 * r + torch.arange(p, dtype=torch.float32)


def ring_allreduce_p2p(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-reduce (sum) of a 1-D tensor with explicit ring send/recv; returns (result, steps).

    Reduce-scatter: in step s rank r sends chunk (r - s) mod P to rank r+1 and adds the chunk it
    receives (index (r - s - 1) mod P) into its own. All-gather: the same ring, copying finished chunks.
    """
    r, p = dist.get_rank(), dist.get_world_size()
    chunks = list(x.clone().tensor_split(p))
    right, left = (r + 1) % p, (r - 1) % p
    steps = 0
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(p - 1):
            off = 0 if phase == "reduce-scatter" else 1
            send_i, recv_i = (r - s + off) % p, (r - s - 1 + off) % p
            buf = torch.empty_like(chunks[recv_i])
            req = dist.isend(chunks[send_i].contiguous(), right)
            dist.recv(buf, left)
            req.wait()
            chunks[recv_i] = chunks[recv_i] + buf if phase == "reduce-scatter" else buf
            steps += 1
    return torch.cat(chunks), steps


def main(argv: list[str] | None = None) -> int:
    require_torchrun("collectives_demo", 4)
    args = demo_args("collectives on real processes", argv)
    rank, p, device = init()
    x = rank_tensor(rank, p).to(device)
    everyone = torch.stack([rank_tensor(r, p) for r in range(p)]).to(device)  # (P, P): row r = x_r
    total = everyone.sum(0)
    rank0_print(f"world_size={p} backend={dist.get_backend()}; rank r holds x_r = 10·r + [0..{p - 1}]")
    checks: dict[str, float] = {}

    t = x.clone()
    dist.broadcast(t, src=0)
    checks["broadcast"] = agree_close(t, everyone[0], "broadcast(src=0): every rank gets x_0")

    t = x.clone()
    dist.reduce(t, dst=0, op=dist.ReduceOp.SUM)
    ok = t if rank == 0 else total  # only the destination's result is defined
    checks["reduce"] = agree_close(ok, total, "reduce(dst=0): rank 0 gets Σ_r x_r")

    t = x.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    checks["all_reduce"] = agree_close(t, total, "all_reduce: every rank gets Σ_r x_r")

    gathered = [torch.empty_like(x) for _ in range(p)]
    dist.all_gather(gathered, x)
    checks["all_gather"] = agree_close(torch.stack(gathered), everyone, "all_gather: rank-ordered list [x_0..x_P-1]")

    comm = CountingComm()
    piece = comm.reduce_scatter(x)  # P elements, P ranks: one element each
    checks["reduce_scatter"] = agree_close(piece, total[rank:rank + 1], "reduce_scatter: rank r gets (Σ x)[r-th chunk]")

    rebuilt = comm.all_gather(piece)
    checks["reduce_scatter+all_gather"] = agree_close(rebuilt, total, "all_gather(reduce_scatter(x)) == all_reduce(x)")

    t = x.clone()
    dist.reduce(t, dst=0)
    dist.broadcast(t, src=0)
    checks["reduce+broadcast"] = agree_close(t, total, "broadcast(reduce(x)) == all_reduce(x)")

    ring, steps = ring_allreduce_p2p(x)
    checks["ring_p2p"] = agree_close(ring, total, "ring all-reduce over send/recv == all_reduce")
    rank0_print(f"ring all-reduce took {steps} steps = 2(P-1) = {2 * (p - 1)}")

    write_result(args.out, {"world_size": p, "checks": checks, "ring_steps": steps,
                            "total": total.tolist()})
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
