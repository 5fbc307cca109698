"""Pipeline parallelism, chapter 24: the bubble formula, a schedule simulator, and the real GPipe / 1F1B
step over point-to-point send/recv.

Formula and simulator (no process group): a synchronous pipeline of K stages and M micro-batches idles
``(K-1)/(M+K-1)`` of the time (``pipeline_bubble_fraction``); ``pipeline_schedule`` simulates the naive,
GPipe and 1F1B (PipeDream-Flush) schedules as a discrete-event run, ``plot_pipeline`` draws them.

The real step (``pipeline_step``, run by ``labkit.parallel.pp_demo``): each rank owns a contiguous slice
of the layers (a *stage*). The batch is cut into M micro-batches;
stage s receives a micro-batch's activation from stage s-1, runs its layers, sends the result to
stage s+1; in backward it receives ∂L/∂(its output) from s+1 and sends ∂L/∂(its input) to s-1.
The order of forward (F) and backward (B) ops on each stage is taken from the simulator
(``_stage_order``), so the real run and the timeline figure are the same schedule.
The loss is ``Σ_i L_i / M`` (the mean of equal-size micro-batch means = the full-batch mean), so the
gradients equal those of one process on the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from labkit.parallel.runtime import _check_int

__all__ = ["pipeline_bubble_fraction", "PipelineSchedule", "pipeline_schedule", "plot_pipeline", "split_stages",
           "split_microbatches", "pipeline_step"]


def pipeline_bubble_fraction(stages: int, microbatches: int) -> float:
    """Idle share of a synchronous pipeline (GPipe or 1F1B-flush): ``(K-1)/(M+K-1)``.

    K = ``stages``, M = ``microbatches``. K=4, M=16 → 3/19 = 15.8 %; M=1 (naive) → (K-1)/K.
    """
    _check_int(stages, "stages", 1, "a pipeline needs at least one stage")
    _check_int(microbatches, "microbatches", 1, "split the batch into M >= 1 micro-batches")
    return (stages - 1) / (microbatches + stages - 1)


@dataclass
class PipelineSchedule:
    """A simulated pipeline run.

    ops[s]: the ops of stage ``s`` as ``(kind, microbatch, start, end)``, kind "F" or "B".
    makespan: time until the last op ends; bubble: idle share of ``stages × makespan``;
    peak_activations[s]: most micro-batches whose activations stage ``s`` held at once.
    """
    kind: str
    stages: int
    microbatches: int
    ops: list[list[tuple[str, int, float, float]]]
    makespan: float
    bubble: float
    peak_activations: list[int] = field(default_factory=list)


def _stage_order(kind: str, k: int, m: int, s: int) -> list[tuple[str, int]]:
    if kind in ("naive", "gpipe"):
        return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]
    warm = min(k - s - 1, m)  # 1F1B (PipeDream-Flush): warm-up forwards, steady 1F1B, cool-down
    order = [("F", i) for i in range(warm)]
    f, b = warm, 0
    while b < m:
        if f < m:
            order.append(("F", f))
            f += 1
        order.append(("B", b))
        b += 1
    return order


def pipeline_schedule(kind: str, stages: int, microbatches: int, t_f: float = 1.0,
                      t_b: float = 2.0) -> PipelineSchedule:
    """Simulate ``kind`` ∈ {"naive", "gpipe", "1f1b"} on ``stages`` (K) and ``microbatches`` (M).

    Every op starts as soon as its stage is free and its input is ready: ``F(s,i)`` after
    ``F(s-1,i)``; ``B(s,i)`` after ``B(s+1,i)`` (and after ``F(s,i)``). "naive" runs the whole batch
    as one micro-batch of M× the work (no micro-batching). Backward costs ``t_b`` (usually 2 t_f).
    """
    if kind not in ("naive", "gpipe", "1f1b"):
        raise ValueError(f"`kind` must be 'naive', 'gpipe' or '1f1b', got {kind!r}")
    _check_int(stages, "stages", 1, "a pipeline needs at least one stage")
    _check_int(microbatches, "microbatches", 1, "split the batch into M >= 1 micro-batches")
    if t_f <= 0 or t_b <= 0:
        raise ValueError(f"`t_f` and `t_b` must be > 0, got {t_f}, {t_b}")
    k, m = stages, microbatches
    if kind == "naive":
        k_m, tf, tb = 1, t_f * m, t_b * m
    else:
        k_m, tf, tb = m, t_f, t_b
    orders = [_stage_order(kind, k, k_m, s) for s in range(k)]
    done: dict[tuple[str, int, int], float] = {}
    pos, free = [0] * k, [0.0] * k
    ops: list[list[tuple[str, int, float, float]]] = [[] for _ in range(k)]
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for s in range(k):
            if pos[s] == len(orders[s]):
                continue
            op, i = orders[s][pos[s]]
            deps = [("F", s - 1, i)] if op == "F" and s > 0 else []
            if op == "B":
                deps = [("F", s, i)] + ([("B", s + 1, i)] if s < k - 1 else [])
            if all(d in done for d in deps):
                start = max([free[s]] + [done[d] for d in deps])
                end = start + (tf if op == "F" else tb)
                done[(op, s, i)] = end
                ops[s].append((op, i, start, end))
                free[s], pos[s], remaining, progressed = end, pos[s] + 1, remaining - 1, True
        if not progressed:  # pragma: no cover - the orders above never deadlock
            raise RuntimeError("pipeline schedule deadlocked")
    makespan = max(free)
    busy = sum(e - st for stage_ops in ops for _, _, st, e in stage_ops)
    peaks = []
    for stage_ops in ops:
        live = peak = 0
        for op, _, _, _ in sorted(stage_ops, key=lambda o: o[2]):
            live += 1 if op == "F" else -1
            peak = max(peak, live)
        peaks.append(peak * (m if kind == "naive" else 1))  # naive holds the whole batch: M micro-batches' worth
    return PipelineSchedule(kind, k, m, ops, makespan, 1 - busy / (k * makespan), peaks)


def plot_pipeline(schedules: Sequence[PipelineSchedule], *, axes=None):
    """Timeline (stage × time) of each schedule: forward blue, backward orange, idle white."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(len(schedules), 1, figsize=(8, 1.2 + 1.0 * len(schedules) * 1.3),
                               sharex=True, squeeze=False)
        axes = axes[:, 0]
    for ax, sch in zip(axes, schedules):
        for s, stage_ops in enumerate(sch.ops):
            for op, i, st, e in stage_ops:
                ax.barh(s, e - st, left=st, color="#4c72b0" if op == "F" else "#dd8452", edgecolor="white")
                if sch.kind != "naive":
                    ax.text((st + e) / 2, s, str(i), ha="center", va="center", fontsize=6, color="white")
        ax.set_yticks(range(sch.stages), [f"stage {s}" for s in range(sch.stages)])
        ax.invert_yaxis()
        ax.set_title(f"{sch.kind}: K={sch.stages}, M={sch.microbatches}, bubble {sch.bubble:.1%}, "
                     f"peak activations {max(sch.peak_activations)}", fontsize=9)
    axes[-1].set_xlabel("time (units of one micro-batch forward)")
    return axes


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
