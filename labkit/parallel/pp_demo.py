"""A real pipeline over send/recv: one stage per rank, GPipe and 1F1B, loss and gradients against
one process on the full batch, and the activations each stage held.

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \
        -m labkit.parallel.pp_demo --microbatches 4
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from labkit.parallel.pipeline import pipeline_step, split_microbatches, split_stages
from labkit.parallel.runtime import (
    agree_close,
    demo_args,
    init,
    rank0_print,
    require_torchrun,
    shutdown,
    tiny_mlp,
    toy_data,
    write_result,
)

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    require_torchrun("pp_demo", 2)
    args = demo_args("GPipe / 1F1B pipeline == single process", argv, microbatches=(int, 4, "micro-batches M"),
                     batch=(int, 16, "batch size"), depth=(int, 4, "linear layers in the model"))
    split_microbatches(torch.empty(args.batch, 1), args.microbatches)  # validate before joining the group
    world = int(os.environ["WORLD_SIZE"])
    model = tiny_mlp(d_in=32, d_hidden=32, d_out=32, depth=args.depth, seed=args.seed)
    stages = split_stages(model, world)
    rank, world, device = init()
    x, y = toy_data(args.batch, d_in=32, d_out=32)
    x, y = x.to(device), y.to(device)
    mb = args.batch // args.microbatches
    rank0_print(f"world_size={world} stages; layers per stage {[len(st) for st in stages]}; "
                f"batch {args.batch} = M {args.microbatches} × {mb}")

    # single-process reference on the full batch (every rank computes it; it is tiny)
    model.to(device)
    ref_loss = nn.functional.mse_loss(model(x), y)
    ref_loss.backward()
    ref_grads = torch.cat([p.grad.reshape(-1) for p in stages[rank].parameters()])

    checks, peaks = {}, {}
    for schedule in ("gpipe", "1f1b"):
        stage = split_stages(tiny_mlp(d_in=32, d_hidden=32, d_out=32, depth=args.depth, seed=args.seed), world)[rank]
        stage.to(device)
        loss, peak = pipeline_step(stage, schedule, args.microbatches, (mb, 32),
                                   x=x if rank == 0 else None, y=y if rank == world - 1 else None)
        loss_t = (loss if loss is not None else torch.zeros(())).to(device).reshape(1)
        dist.broadcast(loss_t, src=world - 1)
        checks[f"{schedule}_loss"] = agree_close(loss_t, ref_loss.detach().reshape(1),
                                                 f"{schedule}: pipeline loss Σ L_i/M == full-batch loss")
        grads = torch.cat([p.grad.reshape(-1) for p in stage.parameters()])
        checks[f"{schedule}_grads"] = agree_close(grads, ref_grads, f"{schedule}: every stage's gradients == single process")
        all_peaks = [None] * world
        dist.all_gather_object(all_peaks, peak)
        peaks[schedule] = all_peaks
        rank0_print(f"{schedule}: peak micro-batch activations held per stage {all_peaks}")
    write_result(args.out, {"world_size": world, "checks": checks, "peaks": peaks,
                            "loss": float(ref_loss.detach())})
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
