"""Data parallel on real processes: gradient all-reduce by hand, ``DistributedDataParallel`` against
one process on the full batch, ``DistributedSampler`` shards, and what gradient bucketing saves.

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \
        -m labkit.parallel.ddp_demo --steps 6

Each rank sees ``global_batch / world_size`` samples per step. Because the loss is a mean and the
shards have equal size, averaging the ranks' gradients gives exactly the full-batch gradient
``g = (1/P) Σ_r ∇L(θ; D_r)``, so every rank takes the same step as a single process would.
"""
from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

from labkit.parallel.runtime import (
    agree_close,
    demo_args,
    init,
    per_rank_batch,
    rank0_print,
    require_torchrun,
    shutdown,
    tiny_mlp,
    toy_data,
    write_result,
)

__all__ = ["flat_params", "sampler_indices", "shard_report", "bucket_benchmark", "check_manual_allreduce",
           "train_ddp_vs_single", "sampler_reports", "bucketing_report", "main"]


def flat_params(model: nn.Module) -> torch.Tensor:
    """Every parameter of ``model`` flattened into one 1-D tensor (a detached copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def sampler_indices(n: int, world: int, epoch: int, seed: int, drop_last: bool = False) -> list[list[int]]:
    """The indices each of ``world`` ranks would draw from ``DistributedSampler`` in ``epoch``."""
    out = []
    for r in range(world):
        s = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True, seed=seed, drop_last=drop_last)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def shard_report(shards: list[list[int]], n: int) -> dict[str, int | bool]:
    """Are the ranks' index lists disjoint and covering ``range(n)``; how many duplicates and dropped."""
    flat = [i for s in shards for i in s]
    return {"disjoint": len(flat) == len(set(flat)), "covering": set(flat) == set(range(n)),
            "duplicates": len(flat) - len(set(flat)), "dropped": n - len(set(flat))}


def bucket_benchmark(rank: int, device: torch.device, bucket_cap_mb: float, steps: int = 8) -> tuple[int, float]:
    """All-reduce calls per step and seconds per step of DDP on a 32-layer MLP (64 parameter tensors)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(32)]).to(device)
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb)
    state = {"calls": 0}

    def counting_hook(st, bucket):
        st["calls"] += 1
        return default_hooks.allreduce_hook(None, bucket)

    ddp.register_comm_hook(state, counting_hook)
    x = torch.randn(8, 64, device=device)
    for _ in range(2):  # warm-up; DDP rebuilds its buckets after the first step
        ddp(x).square().mean().backward()
    state["calls"] = 0
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        ddp(x).square().mean().backward()
    dist.barrier()
    dt = (time.perf_counter() - t0) / steps
    calls = state["calls"] // steps
    del ddp, model
    return calls, dt


def check_manual_allreduce(args, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, rank: int, world: int,
                           local_b: int, device: torch.device) -> float:
    """1. Manual data parallel: mean-loss gradients on half batches, all-reduce, divide by P."""
    model = tiny_mlp(seed=args.seed).to(device)
    idx = torch.arange(args.global_batch, device=device)
    mine = idx[rank * local_b:(rank + 1) * local_b]
    loss_fn(model(x[mine]), y[mine]).backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    dist.all_reduce(grads)
    grads /= world
    model.zero_grad()
    loss_fn(model(x[idx]), y[idx]).backward()
    full = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    result = agree_close(grads, full, "all_reduce(grad)/P == full-batch gradient")
    del model
    return result


def train_ddp_vs_single(args, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, rank: int, world: int,
                        local_b: int, device: torch.device,
                        checks: dict[str, float]) -> tuple[list[float], list[float], float]:
    """2. DDP with DistributedSampler, several steps, against one process on the union of the shards.

    Adds the checks "ddp_ranks_identical" and "ddp_vs_single"; returns (DDP losses averaged over ranks,
    single-process losses, max |Δ| of the final parameters).
    """
    ddp = DDP(tiny_mlp(seed=args.seed).to(device))
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    ref = tiny_mlp(seed=args.seed).to(device)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=args.lr)
    sampler = DistributedSampler(range(args.n_samples), num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    per_epoch = len(sampler) // local_b
    losses, ref_losses = [], []
    for step in range(args.steps):
        epoch, j = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        mine = list(sampler)[j * local_b:(j + 1) * local_b]
        loss = loss_fn(ddp(x[mine]), y[mine])
        opt.zero_grad()
        loss.backward()          # DDP all-reduces (averages) the gradients here, bucket by bucket
        opt.step()
        everyone = [i for shard in sampler_indices(args.n_samples, world, epoch, args.seed, drop_last=True)
                    for i in shard[j * local_b:(j + 1) * local_b]]
        ref_loss = loss_fn(ref(x[everyone]), y[everyone])
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        avg = loss.detach().clone()
        dist.all_reduce(avg)
        losses.append(round(float(avg) / world, 6))
        ref_losses.append(round(float(ref_loss.detach()), 6))
    ours, theirs = flat_params(ddp.module), flat_params(ref)
    per_rank = [torch.empty_like(ours) for _ in range(world)]
    dist.all_gather(per_rank, ours)
    checks["ddp_ranks_identical"] = agree_close(torch.stack(per_rank), ours.expand(world, -1), 
                                                "DDP parameters identical on every rank", atol=0.0)
    checks["ddp_vs_single"] = agree_close(ours, theirs,
                                          f"DDP ({world}×{local_b}) == one process on {args.global_batch} "
                                          f"after {args.steps} Adam steps")
    rank0_print("mean loss per step (DDP):  ", [f"{v:.4f}" for v in losses])
    rank0_print("loss per step (1 process): ", [f"{v:.4f}" for v in ref_losses])
    del ddp, opt, ref, ref_opt, loss, ref_loss, avg  # no DDP model or autograd graph alive at teardown
    max_abs = float((ours - theirs).abs().max())
    return losses, ref_losses, max_abs


def sampler_reports(args, rank: int, world: int) -> tuple[dict, dict, dict]:
    """3. DistributedSampler: what each rank actually drew, gathered; then padding vs drop_last on an odd n.

    Returns the shard reports (epoch 0, n_samples), (odd n, drop_last=False), (odd n, drop_last=True).
    """
    s = DistributedSampler(range(args.n_samples), num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    s.set_epoch(0)
    shards: list = [None] * world
    dist.all_gather_object(shards, list(s))
    rep = shard_report(shards, args.n_samples)
    rank0_print(f"DistributedSampler n={args.n_samples}: shard sizes {[len(t) for t in shards]}, "
                f"disjoint {rep['disjoint']}, covering {rep['covering']}")
    odd = args.n_samples - 1 if (args.n_samples - 1) % world else args.n_samples + 1
    pad = shard_report(sampler_indices(odd, world, 0, args.seed), odd)
    drop = shard_report(sampler_indices(odd, world, 0, args.seed, drop_last=True), odd)
    rank0_print(f"n={odd} (not divisible by {world}): drop_last=False pads with {pad['duplicates']} duplicate(s) "
                f"(disjoint {pad['disjoint']}); drop_last=True drops {drop['dropped']} (covering {drop['covering']})")
    return rep, pad, drop


def bucketing_report(rank: int, device: torch.device) -> dict[str, dict[str, float]]:
    """4. Gradient bucketing: one all-reduce per parameter vs a few large buckets."""
    bench = {}
    for cap in (25.0, 0.001):
        calls, dt = bucket_benchmark(rank, device, cap)
        bench[str(cap)] = {"calls_per_step": calls, "seconds_per_step": dt}
        rank0_print(f"bucket_cap_mb={cap:g}: {calls} all-reduce call(s) per backward for 64 gradient tensors")
    return bench


def main(argv: list[str] | None = None) -> int:
    require_torchrun("ddp_demo", 2)
    args = demo_args("DDP == single process on the full batch", argv,
                     global_batch=(int, 16, "samples per step over all ranks"),
                     n_samples=(int, 64, "data set size"),
                     lr=(float, 1e-2, "Adam learning rate"),
                     bench=(int, 1, "1: run the bucketing measurement"))
    per_rank_batch(args.global_batch, int(os.environ["WORLD_SIZE"]))   # fail fast, before any rendezvous
    rank, world, device = init()
    local_b = per_rank_batch(args.global_batch, world)
    rank0_print(f"world_size={world} backend={dist.get_backend()}; global batch {args.global_batch} "
                f"= {world} ranks × {local_b}")
    x, y = toy_data(args.n_samples)
    x, y = x.to(device), y.to(device)
    loss_fn = nn.MSELoss()
    checks: dict[str, float] = {}
    checks["manual_allreduce_grad"] = check_manual_allreduce(args, x, y, loss_fn, rank, world, local_b, device)
    losses, ref_losses, max_abs = train_ddp_vs_single(args, x, y, loss_fn, rank, world, local_b, device, checks)
    rep, pad, drop = sampler_reports(args, rank, world)
    bench = bucketing_report(rank, device) if args.bench else {}
    write_result(args.out, {"world_size": world, "checks": checks, "max_abs_ddp_vs_single": max_abs,
                            "losses": losses, "ref_losses": ref_losses, "sampler": rep,
                            "sampler_pad": pad, "sampler_drop": drop, "bucketing": bench})
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
