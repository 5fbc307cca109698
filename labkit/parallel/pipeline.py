"""Pipeline parallelism over point-to-point send/recv: GPipe and 1F1B (PipeDream-Flush).

Each rank owns a contiguous slice of the layers (a *stage*). The batch is cut into M micro-batches;
stage s receives a micro-batch's activation from stage s-1, runs its layers, sends the result to
stage s+1; in backward it receives ∂L/∂(its output) from s+1 and sends ∂L/∂(its input) to s-1.
The order of forward (F) and backward (B) ops on each stage is taken from the simulator in
``labkit.parallel.theory`` (``_stage_order``), so the real run and the timeline figure are the same schedule.
The loss is ``Σ_i L_i / M`` (the mean of equal-size micro-batch means = the full-batch mean), so the
gradients equal those of one process on the whole batch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from labkit.parallel.theory import _stage_order

__all__ = ["split_stages", "split_microbatches", "pipeline_step"]


def split_stages(model: nn.Sequential, n_stages: int) -> list[nn.Sequential]:
    """Cut a ``nn.Sequential`` into ``n_stages`` contiguous parts of (nearly) equal length."""
    if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 1:
        raise ValueError(f"`n_stages` must be a positive int, got {n_stages!r}")
    if len(model) < n_stages:
        raise ValueError(f"the model has {len(model)} modules, fewer than n_stages ({n_stages}); use fewer stages")
    bounds = torch.linspace(0, len(model), n_stages + 1).round().long().tolist()
    return [nn.Sequential(*list(model)[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def split_microbatches(x: torch.Tensor, microbatches: int) -> list[torch.Tensor]:
    """``microbatches`` equal slices of the batch dimension."""
    if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"`microbatches` must be an int >= 1, got {microbatches!r}")
    if x.shape[0] % microbatches:
        raise ValueError(f"batch size ({x.shape[0]}) must be divisible by microbatches ({microbatches}); "
                         "equal micro-batches keep the mean loss equal to the full-batch loss")
    return list(x.chunk(microbatches))


def pipeline_step(stage: nn.Module, schedule: str, microbatches: int, act_shape: tuple[int, ...],
                  x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                  loss_fn: Callable = nn.functional.mse_loss) -> tuple[torch.Tensor | None, int]:
    """One forward+backward of the whole pipeline from this rank's point of view (rank = stage index).

    stage: this rank's layers; schedule: "gpipe" or "1f1b"; act_shape: shape of one micro-batch's
    activation between stages; x: the batch (first stage only); y: the targets (last stage only).
    Gradients accumulate in ``stage``'s parameters. Returns (loss on the last stage else None,
    peak number of micro-batches whose activations this stage held at once).
    """
    if schedule not in ("gpipe", "1f1b"):
        raise ValueError(f"`schedule` must be 'gpipe' or '1f1b', got {schedule!r}")
    s, k = dist.get_rank(), dist.get_world_size()
    first, last = s == 0, s == k - 1
    xs = split_microbatches(x, microbatches) if first else None
    ys = split_microbatches(y, microbatches) if last else None
    stored: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    pending, total, peak = [], torch.zeros(()), 0
    device = next(stage.parameters()).device
    for op, i in _stage_order(schedule, k, microbatches, s):
        if op == "F":
            if first:
                inp = xs[i]
            else:
                inp = torch.empty(act_shape, device=device)
                dist.recv(inp, s - 1)
                inp.requires_grad_()
            out = stage(inp)
            if last:
                out = loss_fn(out, ys[i]) / microbatches
                total = total + out.detach().cpu()
            else:
                send = out.detach().contiguous()
                pending.append((dist.isend(send, s + 1), send))
            stored[i] = (inp, out)
            peak = max(peak, len(stored))
        else:
            inp, out = stored.pop(i)
            if last:
                out.backward()
            else:
                grad = torch.empty(act_shape, device=device)
                dist.recv(grad, s + 1)
                out.backward(grad)
            if not first:
                send = inp.grad.contiguous()
                pending.append((dist.isend(send, s - 1), send))
    for work, _ in pending:
        work.wait()
    return (total if last else None), peak
