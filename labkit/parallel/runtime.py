"""What every demo process needs: the torchrun check, process-group setup and safe teardown, rank-0
printing, checks that agree on every rank, a collective wrapper that counts traffic, the JSON result;
and the argument check (``_check_int``) that the formula modules (collectives, zero, pipeline, layout) share.

The teardown follows the pattern that avoids gloo's exit-time abort (see the course's
dependencies notes): drop DDP models and optimizers, ``gc.collect()``, ``barrier()``, then
``destroy_process_group()``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from labkit.core.check import close
from labkit.core.io import atomic_write_json

__all__ = ["require_torchrun", "init", "shutdown", "demo_args", "rank0_print", "agree_close",
           "write_result", "CountingComm", "per_rank_batch", "tiny_mlp", "toy_data", "tensor_bytes", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 60
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _check_int(value, name: str, minimum: int, fix: str) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``; else TypeError / ValueError ending in ``fix``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}; {fix}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}; {fix}")
    return value


def require_torchrun(demo: str, nproc: int) -> None:
    """Exit with status 2 and a how-to-launch message unless torchrun set the rendezvous variables."""
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        print(f"labkit.parallel.{demo} is a distributed program: launch it with torchrun, e.g.\n"
              f"  python -m torch.distributed.run --nproc_per_node {nproc} --master_addr 127.0.0.1 "
              f"--master_port 29500 -m labkit.parallel.{demo}\n"
              f"or from Python/Jupyter: labkit.parallel.launch({demo!r}, nproc={nproc})\n"
              f"(missing environment variables: {', '.join(missing)})", file=sys.stderr)
        raise SystemExit(2)


def init(timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int, torch.device]:
    """Join the process group (nccl if every rank has a GPU, else gloo) with a timeout.

    Returns ``(rank, world_size, device)``; one GPU per process when nccl is used.
    """
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() > local_rank
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=_dt.timedelta(seconds=timeout_s))
    return dist.get_rank(), world, device


def shutdown() -> None:
    """Safe teardown. Delete DDP/FSDP models and optimizers *before* calling this."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def demo_args(description: str, argv: list[str] | None = None, **extra: tuple[type, Any, str]) -> argparse.Namespace:
    """Common flags (``--out`` JSON path, ``--seed``, ``--steps``) plus ``extra`` = {name: (type, default, help)}."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=str, default=None, help="write the JSON result here (rank 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=5)
    for name, (typ, default, help_) in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, default=default, help=help_)
    return p.parse_args(argv)


def rank0_print(*args: Any) -> None:
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*args, flush=True)


def agree_close(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = 1e-6) -> float:
    """``labkit.core.check.close`` over all ranks: the max |Δ| is all-reduced (MAX) first, so every rank
    passes or raises together (no rank is left waiting in a collective) and rank 0 prints one line."""
    if actual.shape != expected.shape:
        raise ValueError(f"{name}: shape mismatch {tuple(actual.shape)} vs {tuple(expected.shape)}")
    d = (actual.detach().double() - expected.detach().double()).abs().max() if actual.numel() else torch.zeros(())
    d = d.reshape(1).clone()
    dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return close(d, torch.zeros(1, dtype=d.dtype), atol=atol, name=f"{name}, all ranks",
                 quiet=dist.get_rank() != 0)


def write_result(path: str | None, payload: dict[str, Any]) -> None:
    """Rank 0 writes ``payload`` as JSON, atomically (temporary name, then ``os.replace``)."""
    if path is None or (dist.is_initialized() and dist.get_rank() != 0):
        return
    atomic_write_json(path, payload, sort_keys=True)


class CountingComm:
    """The collectives a sharded optimizer needs, each counting what this rank *sends* under the
    bandwidth-optimal ring algorithms: all-reduce ``2(P-1)/P·n``, reduce-scatter ``(P-1)/P·n``
    (n = input numel), all-gather ``(P-1)/P·n`` (n = output numel)."""

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        self.world = dist.get_world_size(group)
        self.sent = 0.0
        self.calls = 0
        self._rs = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        self._ag = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, group=self.group)
        self._count(2 * t.numel())
        return t

    def reduce_scatter(self, flat: torch.Tensor) -> torch.Tensor:
        """Sum ``flat`` (1-D, length divisible by P) over ranks; return this rank's 1/P slice."""
        out = torch.empty(flat.numel() // self.world, dtype=flat.dtype, device=flat.device)
        self._rs(out, flat.contiguous(), group=self.group)
        self._count(flat.numel())
        return out

    def all_gather(self, shard: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D ``shard`` in rank order."""
        out = torch.empty(shard.numel() * self.world, dtype=shard.dtype, device=shard.device)
        self._ag(out, shard.contiguous(), group=self.group)
        self._count(out.numel())
        return out

    def _count(self, n: int) -> None:
        self.sent += (self.world - 1) / self.world * n
        self.calls += 1


def tiny_mlp(d_in: int = 16, d_hidden: int = 32, d_out: int = 8, depth: int = 3, seed: int = 0) -> nn.Sequential:
    """Linear → GELU → … → Linear with ``depth`` linear layers, initialised from ``seed`` (same on every rank)."""
    g = torch.Generator().manual_seed(seed)
    dims = [d_in] + [d_hidden] * (depth - 1) + [d_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g) / a ** 0.5)
            lin.bias.copy_(0.1 * torch.randn(b, generator=g))
        layers += [lin] + ([nn.GELU()] if i < depth - 1 else [])
    return nn.Sequential(*layers)


def toy_data(n: int, d_in: int = 16, d_out: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed regression set (x, y) with y a noisy nonlinear function of x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    w = torch.randn(d_in, d_out, generator=g) / d_in ** 0.5
    return x, torch.tanh(x @ w) + 0.05 * torch.randn(n, d_out, generator=g)


def tensor_bytes(tensors) -> int:
    """Sum of ``numel × element_size`` over tensors (None skipped)."""
    return int(sum(t.numel() * t.element_size() for t in tensors if t is not None))


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Samples each rank processes per step; the world size must divide the global batch.

    With unequal shards the average of per-rank mean losses is no longer the full-batch mean, and
    data parallel would silently stop matching single-process training.
    """
    for name, v in (("global_batch", global_batch), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}")
    if global_batch % world_size:
        ok = [b for b in range(world_size, 4 * world_size + 1, world_size)]
        raise ValueError(f"global_batch ({global_batch}) must be divisible by world_size ({world_size}); "
                         f"use e.g. one of {ok} or change --nproc_per_node")
    return global_batch // world_size
