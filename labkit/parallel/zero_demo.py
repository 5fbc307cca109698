"""ZeRO-1/2/3 from scratch on real processes, each against single-process Adam on the full batch,
with the bytes every rank holds and the elements it sends per step.

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \
        -m labkit.parallel.zero_demo --steps 5
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from labkit.parallel.runtime import (
    CountingComm,
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
from labkit.parallel.zero import ZeroAdam, zero3_full_params, zero3_wrap, zero_comm_elements

__all__ = ["reference_adam", "run_stage", "main"]


def reference_adam(model: nn.Module, x, y, steps: int, lr: float) -> list[torch.Tensor]:
    """Plain single-process Adam on the full batch: the answer every stage must reproduce."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def run_stage(stage: int, args, x, y, device) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Train ``args.steps`` steps with ZeRO ``stage`` on this rank's half of (x, y)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    comm = CountingComm()
    model = tiny_mlp(d_hidden=args.d_hidden, seed=args.seed).to(device)
    if stage == 3:
        model = zero3_wrap(model, comm)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = ZeroAdam(model, stage, comm, lr=args.lr)
    b = per_rank_batch(x.shape[0], world)
    xs, ys = x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]
    mem: dict[str, float] = {}
    for step in range(args.steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(xs), ys).backward()
        if step == 0:
            if stage == 3:
                mem["grads"] = tensor_bytes(p.grad for p in model.parameters())
            else:
                mem["grads"] = opt.grad_bytes()
        opt.step()
    mem["sent_per_step"] = comm.sent / args.steps  # before the final gather below (not part of training)
    mem["calls_per_step"] = comm.calls / args.steps
    if stage == 3:
        mem["master"] = 0  # the shards are the parameters
        mem["params"] = tensor_bytes(model.parameters())
        mem["adam"] = tensor_bytes(t for st in opt.state.values() for k, t in st.items() if k != "step")
        params = zero3_full_params(model)
    else:
        mem["master"] = 0 if stage == 0 else tensor_bytes(opt.shards)
        mem["params"] = opt.param_bytes()
        mem["adam"] = opt.optimizer_state_bytes()
        params = [p.detach() for p in model.parameters()]
    del opt, model
    return params, mem


def main(argv: list[str] | None = None) -> int:
    require_torchrun("zero_demo", 2)
    args = demo_args("ZeRO-1/2/3 == Adam", argv, global_batch=(int, 16, "samples per step over all ranks"),
                     d_hidden=(int, 32, "hidden width of the MLP (odd values exercise the padding)"),
                     lr=(float, 1e-2, "Adam learning rate"), stages=(str, "0,1,2,3", "comma-separated stages"))
    rank, world, device = init()
    x, y = toy_data(args.global_batch)
    x, y = x.to(device), y.to(device)
    ref = reference_adam(tiny_mlp(d_hidden=args.d_hidden, seed=args.seed).to(device), x, y, args.steps, args.lr)
    psi = sum(p.numel() for p in ref)
    rank0_print(f"world_size={world}; MLP with Ψ = {psi} parameters; {args.steps} Adam steps, "
                f"global batch {args.global_batch} = {world} × {per_rank_batch(args.global_batch, world)}")
    checks, table = {}, {}
    for stage in [int(s) for s in args.stages.split(",")]:
        params, mem = run_stage(stage, args, x, y, device)
        name = "plain DP" if stage == 0 else f"ZeRO-{stage}"
        checks[f"stage{stage}"] = agree_close(torch.cat([p.reshape(-1) for p in params]),
                                              torch.cat([p.reshape(-1) for p in ref]),
                                              f"{name} parameters == single-process Adam")
        mem["formula_sent"] = zero_comm_elements(psi, stage, world)
        table[stage] = mem
    rank0_print(f"\nper-rank bytes (fp32) and traffic; Adam's m and v of all Ψ = {8 * psi} B")
    rank0_print(f"{'stage':>5} {'params B':>9} {'grads B':>8} {'Adam m,v B':>10} {'master B':>9} {'sent/step':>10} "
                f"{'formula':>8} {'calls':>6}")
    for stage, m in table.items():
        rank0_print(f"{stage:>5} {m['params']:>9.0f} {m['grads']:>8.0f} {m['adam']:>10.0f} {m['master']:>9.0f} "
                    f"{m['sent_per_step']:>10.0f} {m['formula_sent']:>8.0f} {m['calls_per_step']:>6.0f}")
    write_result(args.out, {"world_size": world, "psi": psi, "checks": checks,
                            "memory": {str(k): v for k, v in table.items()}})
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
