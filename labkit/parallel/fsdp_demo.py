"""PyTorch's own FSDP (``torch.distributed.fsdp.fully_shard``, "FSDP2") on the ZeRO demo's model,
against single-process Adam, with the bytes each rank holds.

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \
        -m labkit.parallel.fsdp_demo --steps 5

``fully_shard`` turns every parameter into a ``DTensor`` sharded on dim 0 across the mesh; each
wrapped module all-gathers its parameters before forward and backward and reduce-scatters its
gradients: ZeRO-3. It runs on CPU with gloo here (a CPU device mesh).
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from labkit.parallel.runtime import (
    agree_close,
    demo_args,
    init,
    per_rank_batch,
    rank0_print,
    require_torchrun,
    shutdown,
    tensor_bytes,
    tiny_mlp,
    toy_data,
    write_result,
)
from labkit.parallel.zero_demo import reference_adam

__all__ = ["local", "main"]


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of a (possibly DTensor) tensor stored on this rank."""
    return t.to_local() if hasattr(t, "to_local") else t


def main(argv: list[str] | None = None) -> int:
    require_torchrun("fsdp_demo", 2)
    args = demo_args("torch FSDP (fully_shard) == Adam", argv,
                     global_batch=(int, 16, "samples per step over all ranks"),
                     d_hidden=(int, 32, "hidden width of the MLP"), lr=(float, 1e-2, "Adam learning rate"))
    rank, world, device = init()
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    x, y = toy_data(args.global_batch)
    x, y = x.to(device), y.to(device)
    ref = reference_adam(tiny_mlp(d_hidden=args.d_hidden, seed=args.seed).to(device), x, y, args.steps, args.lr)
    mesh = init_device_mesh(device.type, (world,))
    model = tiny_mlp(d_hidden=args.d_hidden, seed=args.seed).to(device)
    full_bytes = tensor_bytes(model.parameters())
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)   # one all-gather / reduce-scatter unit per layer
    fully_shard(model, mesh=mesh)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    b = per_rank_batch(args.global_batch, world)
    xs, ys = x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]
    grad_bytes = 0
    for step in range(args.steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(xs), ys).backward()
        if step == 0:
            grad_bytes = tensor_bytes(local(p.grad) for p in model.parameters())
        opt.step()
    kinds = sorted({type(p).__name__ for p in model.parameters()})
    rank0_print(f"world_size={world}; after fully_shard the parameters are {kinds}, "
                f"layer 0 weight: global {tuple(model[0].weight.shape)}, local {tuple(local(model[0].weight).shape)}")
    full = [p.full_tensor().detach() for p in model.parameters()]   # all-gather for the comparison
    check = agree_close(torch.cat([p.reshape(-1) for p in full]), torch.cat([p.reshape(-1) for p in ref]),
                        "torch FSDP (fully_shard) parameters == single-process Adam")
    mem = {"params": tensor_bytes(local(p) for p in model.parameters()), "grads": grad_bytes,
           "adam": tensor_bytes(local(t) for st in opt.state.values() for k, t in st.items() if k != "step"),
           "full_params": full_bytes}
    rank0_print(f"per-rank bytes: params {mem['params']} of {full_bytes}, grads {mem['grads']}, "
                f"Adam m,v {mem['adam']} of {2 * full_bytes}")
    write_result(args.out, {"world_size": world, "checks": {"fsdp": check}, "memory": mem, "param_types": kinds})
    del opt, model
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
