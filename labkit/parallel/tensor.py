"""Tensor parallelism, chapter 24: Megatron-style column- and row-parallel layers (Shoeybi et al. 2019)
on ``torch.distributed``; the demo is ``labkit.parallel.tp_demo``.

For ``Y = X Aᵀ`` (``nn.Linear`` stores A as (out, in)):

* column parallel: split A's *output* rows, ``Y = [X A_1ᵀ, X A_2ᵀ]``: every rank gets a slice of Y;
* row parallel: split A's *input* columns and X's features, ``Y = Σ_r X_r A_rᵀ``: one all-reduce.

The MLP ``Z = GELU(X W_1ᵀ) W_2ᵀ`` is column-parallel then row-parallel: GELU acts on each rank's own
columns, so the block needs one all-reduce in forward (operator *g*) and one in backward (operator
*f*, the all-reduce of the input gradient). Attention is split the same way by heads.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from labkit.parallel.runtime import _check_int

__all__ = ["split_dim", "copy_to_tp", "reduce_from_tp", "gather_from_tp", "ColumnParallelLinear",
           "RowParallelLinear", "ParallelMLP", "ParallelSelfAttention"]


def split_dim(size: int, world: int, name: str) -> int:
    """``size / world``; the tensor-parallel world size must divide the dimension being split."""
    _check_int(size, name, 1, f"{name} is a layer width: a positive int")
    _check_int(world, "world", 1, "the tensor-parallel world size is the number of ranks, >= 1")
    if size % world:
        divisors = [w for w in range(1, size + 1) if size % w == 0 and w <= 16]
        raise ValueError(f"{name} ({size}) must be divisible by the tensor-parallel world size ({world}); "
                         f"use a world size in {divisors} or change {name}")
    return size // world


class _CopyToTP(torch.autograd.Function):
    """f: identity in forward, all-reduce of the gradient in backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, group=ctx.group)
        return g, None


class _ReduceFromTP(torch.autograd.Function):
    """g: all-reduce in forward, identity in backward."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, g):
        return g, None


class _GatherFromTP(torch.autograd.Function):
    """All-gather along the last dim in forward; keep this rank's slice of the gradient in backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, g):
        world, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return g.chunk(world, dim=-1)[rank].contiguous(), None


def copy_to_tp(x, group=None):
    return _CopyToTP.apply(x, group)


def reduce_from_tp(x, group=None):
    return _ReduceFromTP.apply(x, group)


def gather_from_tp(x, group=None):
    return _GatherFromTP.apply(x, group)


class ColumnParallelLinear(nn.Module):
    """This rank's rows of a dense (out, in) weight: out_features / P outputs. Input (..., in), output
    (..., out/P), or (..., out) with ``gather_output``."""

    def __init__(self, dense: nn.Linear, group=None, gather_output: bool = False):
        super().__init__()
        self.group, self.gather_output = group, gather_output
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        n = split_dim(dense.out_features, world, "out_features")
        self.weight = nn.Parameter(dense.weight.detach()[rank * n:(rank + 1) * n].clone())
        self.bias = nn.Parameter(dense.bias.detach()[rank * n:(rank + 1) * n].clone()) if dense.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(copy_to_tp(x, self.group), self.weight, self.bias)
        return gather_from_tp(y, self.group) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """This rank's columns of a dense (out, in) weight. Input (..., in/P) (already split), output
    (..., out) after one all-reduce; the bias is added once, after the sum."""

    def __init__(self, dense: nn.Linear, group=None):
        super().__init__()
        self.group = group
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        n = split_dim(dense.in_features, world, "in_features")
        self.weight = nn.Parameter(dense.weight.detach()[:, rank * n:(rank + 1) * n].clone())
        self.bias = nn.Parameter(dense.bias.detach().clone()) if dense.bias is not None else None

    def forward(self, x_part: torch.Tensor) -> torch.Tensor:
        y = reduce_from_tp(F.linear(x_part, self.weight), self.group)
        return y + self.bias if self.bias is not None else y


class ParallelMLP(nn.Module):
    """``GELU(x W_1ᵀ + b_1) W_2ᵀ + b_2`` with W_1 column-parallel and W_2 row-parallel."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, group=None):
        super().__init__()
        self.fc1 = ColumnParallelLinear(fc1, group)
        self.fc2 = RowParallelLinear(fc2, group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ParallelSelfAttention(nn.Module):
    """Causal multi-head self-attention with this rank's ``n_heads / P`` heads, built from a dense
    ``nn.MultiheadAttention(batch_first=True)``: q, k, v projections column-parallel by heads, the
    output projection row-parallel (one all-reduce)."""

    def __init__(self, mha: nn.MultiheadAttention, group=None):
        super().__init__()
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        d, h = mha.embed_dim, mha.num_heads
        self.h_local = split_dim(h, world, "n_heads")
        self.d_head, self.group = d // h, group
        n = self.h_local * self.d_head
        rows = torch.cat([torch.arange(i * d + rank * n, i * d + (rank + 1) * n) for i in range(3)])  # q, k, v
        self.qkv_w = nn.Parameter(mha.in_proj_weight.detach()[rows].clone())
        self.qkv_b = nn.Parameter(mha.in_proj_bias.detach()[rows].clone())
        out = nn.Linear(d, d)
        out.weight, out.bias = mha.out_proj.weight, mha.out_proj.bias
        self.out = RowParallelLinear(out, group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = F.linear(copy_to_tp(x, self.group), self.qkv_w, self.qkv_b)
        q, k, v = (z.view(b, t, self.h_local, self.d_head).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)           # (b, h_local, t, d_head)
        return self.out(o.transpose(1, 2).reshape(b, t, self.h_local * self.d_head))
