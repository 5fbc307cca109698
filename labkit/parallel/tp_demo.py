"""Tensor parallelism on real processes: column- and row-parallel linears, the Megatron MLP and the
head-split attention block, each against the dense layer (forward and gradients), and the wrong split.

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \
        -m labkit.parallel.tp_demo
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from labkit.parallel.runtime import agree_close, demo_args, init, rank0_print, require_torchrun, shutdown, write_result
from labkit.parallel.tensor import (
    ColumnParallelLinear,
    ParallelMLP,
    ParallelSelfAttention,
    RowParallelLinear,
    split_dim,
)

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    require_torchrun("tp_demo", 2)
    args = demo_args("Megatron tensor parallel == dense", argv, d_model=(int, 24, "model width"),
                     d_ff=(int, 40, "MLP hidden width (split over ranks)"), n_heads=(int, 4, "attention heads"),
                     seq=(int, 7, "sequence length"))
    import os

    world = int(os.environ["WORLD_SIZE"])
    split_dim(args.d_ff, world, "d_ff")  # fail before joining the group, the same message on every rank
    split_dim(args.n_heads, world, "n_heads")
    split_dim(args.d_model, world, "d_model")
    rank, world, device = init()
    torch.manual_seed(args.seed)          # same dense weights and inputs on every rank
    d, dff = args.d_model, args.d_ff
    fc1, fc2 = nn.Linear(d, dff).to(device), nn.Linear(dff, d).to(device)
    x = torch.randn(3, args.seq, d, device=device)
    rank0_print(f"world_size={world}; X {tuple(x.shape)}, W1 {tuple(fc1.weight.shape)}, W2 {tuple(fc2.weight.shape)}; "
                f"each rank holds d_ff/P = {dff // world} hidden units")
    checks: dict[str, float] = {}

    col = ColumnParallelLinear(fc1, gather_output=True).to(device)
    checks["column"] = agree_close(col(x), fc1(x), "column-parallel W1 (all-gather of X·A_rᵀ) == dense")
    row = RowParallelLinear(fc2).to(device)
    h = torch.randn(3, args.seq, dff, device=device)
    n = dff // world
    checks["row"] = agree_close(row(h[..., rank * n:(rank + 1) * n]), fc2(h), "row-parallel W2 (Σ_r X_r·A_rᵀ) == dense")

    # Megatron MLP: forward and every gradient against the dense block.
    mlp = ParallelMLP(fc1, fc2).to(device)
    xt, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_tp, y_dense = mlp(xt), fc2(F.gelu(fc1(xd)))
    checks["mlp_forward"] = agree_close(y_tp, y_dense, "Megatron MLP (columns → GELU → rows, 1 all-reduce) == dense MLP")
    y_tp.square().mean().backward()
    y_dense.square().mean().backward()
    sl = slice(rank * n, (rank + 1) * n)
    checks["mlp_grad_x"] = agree_close(xt.grad, xd.grad, "  ∂L/∂X (all-reduced in backward) == dense")
    checks["mlp_grad_w1"] = agree_close(mlp.fc1.weight.grad, fc1.weight.grad[sl], "  ∂L/∂W1 (this rank's rows) == dense")
    checks["mlp_grad_w2"] = agree_close(mlp.fc2.weight.grad, fc2.weight.grad[:, sl], "  ∂L/∂W2 (this rank's columns) == dense")

    # The wrong split: W1 by its *input* features, GELU before the sum. GELU(a + b) != GELU(a) + GELU(b).
    with torch.no_grad():
        k = split_dim(d, world, "d_model")
        part = F.linear(x[..., rank * k:(rank + 1) * k], fc1.weight[:, rank * k:(rank + 1) * k])
        act = F.gelu(part + fc1.bias / world)
        wrong = F.linear(act, fc2.weight)
        dist.all_reduce(wrong)
        wrong = wrong + fc2.bias
        bad = float((wrong - y_dense).abs().max())
    rank0_print(f"✗ wrong split (W1 by rows, GELU of partial sums): max |Δ| = {bad:.2f}, not equal to the dense MLP")

    # Attention split by heads.
    mha = nn.MultiheadAttention(d, args.n_heads, batch_first=True).to(device)
    mask = torch.triu(torch.ones(args.seq, args.seq, dtype=torch.bool, device=device), 1)
    ref, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    att = ParallelSelfAttention(mha).to(device)
    checks["attention"] = agree_close(att(x), ref, f"attention, {args.n_heads // world} of {args.n_heads} heads "
                                      "per rank, == nn.MultiheadAttention (causal)")
    write_result(args.out, {"world_size": world, "checks": checks, "wrong_split_max_abs": bad})
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
