"""Formulas and simulators for distributed training: no process group needed, pure tensor code.

* ZeRO memory model (Rajbhandari et al. 2020): mixed-precision Adam keeps ``2Ψ`` bytes of fp16
  parameters, ``2Ψ`` of fp16 gradients and ``KΨ`` of optimizer state (fp32 master weights, m, v:
  ``K = 12``). Stage 1 shards the optimizer state, stage 2 also the gradients, stage 3 also the
  parameters over ``N_d`` data-parallel ranks.
* Ring all-reduce: ``2(P-1)`` steps; every worker sends ``2(P-1)/P · N`` elements.
* Pipeline schedules (naive, GPipe, 1F1B) as a discrete-event simulation; bubble ``(K-1)/(M+K-1)``.
* The 3D (TP × DP × PP) rank layout that Megatron-LM uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = [
    "zero_memory_bytes", "zero_comm_elements", "pipeline_bubble_fraction",
    "RingResult", "ring_allreduce", "ring_allreduce_time",
    "PipelineSchedule", "pipeline_schedule", "plot_pipeline",
    "rank_layout_3d", "check_rank_layout",
]


def _check_int(value, name: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}; {fix}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}; {fix}")
    return value


# --------------------------------------------------------------------------------------------- ZeRO
def zero_memory_bytes(n_params: int | float, stage: int, n_devices: int, k: float = 12) -> float:
    """Bytes of *model state* per device under ZeRO ``stage`` (0 = plain data parallel).

    With Ψ = ``n_params``, N = ``n_devices`` and mixed-precision Adam (2 B fp16 params, 2 B fp16 grads,
    K B of optimizer state per parameter)::

        stage 0:  (2 + 2 + K) Ψ
        stage 1:  (2 + 2) Ψ + K Ψ / N          (optimizer state sharded)
        stage 2:  2 Ψ + (2 + K) Ψ / N          (+ gradients sharded)
        stage 3:  (2 + 2 + K) Ψ / N            (+ parameters sharded)

    Ψ = 7.5e9, N = 64 gives 120 / 31.4 / 16.6 / 1.9 GB (GB = 1e9 bytes). Activations are not included.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, float)) or n_params <= 0:
        raise ValueError(f"`n_params` must be a positive number of parameters, got {n_params!r}")
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise ValueError(f"`stage` must be 0, 1, 2 or 3 (0 = plain data parallel), got {stage!r}")
    _check_int(n_devices, "n_devices", 1, "use the data-parallel world size, e.g. 64")
    if k < 0:
        raise ValueError(f"`k` (optimizer bytes per parameter) must be >= 0, got {k}; Adam in mixed precision is 12")
    psi, n = float(n_params), n_devices
    return {0: (4 + k) * psi, 1: 4 * psi + k * psi / n, 2: 2 * psi + (2 + k) * psi / n,
            3: (4 + k) * psi / n}[stage]


def zero_comm_elements(n_params: int, stage: int, n_devices: int) -> float:
    """Elements each rank sends per training step with bandwidth-optimal (ring) collectives.

    Plain DP all-reduces the gradients: ``2(N-1)/N · Ψ``. ZeRO-1 and ZeRO-2 reduce-scatter the
    gradients and all-gather the updated parameters: the same ``2(N-1)/N · Ψ``. ZeRO-3 all-gathers
    the parameters twice (forward and backward) and reduce-scatters the gradients: ``3(N-1)/N · Ψ``
    (1.5× plain DP).
    """
    zero_memory_bytes(n_params, stage, n_devices)  # validates the arguments
    calls = 3 if stage == 3 else 2
    return calls * (n_devices - 1) / n_devices * n_params


# ------------------------------------------------------------------------------------- ring all-reduce
@dataclass
class RingResult:
    """What a simulated ring all-reduce did.

    results: the reduced vector on every worker (each equals the elementwise sum);
    steps: communication rounds (``2(P-1)``: ``P-1`` reduce-scatter + ``P-1`` all-gather);
    sent: elements sent by each worker over the whole run (``2(P-1)/P · N`` when P divides N).
    """
    results: list[torch.Tensor]
    steps: int
    sent: list[int]


def ring_allreduce(tensors: Sequence[torch.Tensor]) -> RingResult:
    """Simulate the ring all-reduce of ``P`` workers' equal-shaped tensors (any shape, any length).

    Each vector is cut into P chunks (``torch.tensor_split``: lengths may differ by one). In
    reduce-scatter step ``s`` worker ``i`` sends chunk ``(i - s) mod P`` to worker ``i+1``, which adds
    it to its own copy; after ``P-1`` steps worker ``i`` owns the full sum of chunk ``(i+1) mod P``.
    The all-gather phase passes those finished chunks around the ring (copy instead of add) for
    another ``P-1`` steps. All sends of a step happen "at once" (read before write).
    """
    if not isinstance(tensors, (list, tuple)) or len(tensors) < 1:
        raise TypeError("`tensors` must be a non-empty list of tensors, one per worker")
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("`tensors` must hold torch.Tensor objects, one per worker")
    shape = tensors[0].shape
    if any(t.shape != shape for t in tensors):
        raise ValueError(f"every worker's tensor must have the same shape; got {[tuple(t.shape) for t in tensors]}")
    p = len(tensors)
    bufs = [list(t.detach().reshape(-1).clone().tensor_split(p)) for t in tensors]
    sent = [0] * p
    steps = 0
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(p - 1):
            offset = 0 if phase == "reduce-scatter" else 1
            msgs = [(i, (i - s + offset) % p, bufs[i][(i - s + offset) % p].clone()) for i in range(p)]
            for i, c, payload in msgs:
                dst = (i + 1) % p
                if phase == "reduce-scatter":
                    bufs[dst][c] += payload
                else:
                    bufs[dst][c] = payload
                sent[i] += payload.numel()
            steps += 1
    results = [torch.cat(b).reshape(shape) for b in bufs]
    return RingResult(results=results, steps=steps, sent=sent)


def ring_allreduce_time(n_bytes: float, n_workers: int, bandwidth: float, latency: float = 0.0) -> float:
    """α–β time model of a ring all-reduce: ``2(P-1)·α + 2(P-1)/P · n_bytes / β`` seconds.

    ``bandwidth`` β in bytes/s per link and direction, ``latency`` α in seconds per step. Example:
    14 GB of fp16 gradients on 8 GPUs: 0.77 s at 32 GB/s (PCIe 4.0), 0.082 s at 300 GB/s (NVLink).
    """
    _check_int(n_workers, "n_workers", 1, "pass the number of ranks in the ring")
    if bandwidth <= 0:
        raise ValueError(f"`bandwidth` must be > 0 bytes/s, got {bandwidth}")
    if n_bytes < 0 or latency < 0:
        raise ValueError("`n_bytes` and `latency` must be >= 0")
    p = n_workers
    return 2 * (p - 1) * latency + 2 * (p - 1) / p * n_bytes / bandwidth


# ------------------------------------------------------------------------------------------ pipelines
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


# --------------------------------------------------------------------------------------- 3D layout
def rank_layout_3d(world_size: int, tp: int, pp: int, dp: int) -> dict[str, list[list[int]]]:
    """Megatron-LM's rank layout: TP fastest-varying, then DP, then PP.

    ``rank = pp_idx · (dp · tp) + dp_idx · tp + tp_idx``. TP groups are ``tp`` consecutive ranks (inside
    one node, on NVLink); each DP group holds the ranks with the same (pp, tp) index; each PP group
    (one pipeline) the ranks with the same (dp, tp) index, stride ``dp · tp``.
    Returns ``{"tp": [...], "dp": [...], "pp": [...]}``, each a list of rank lists.
    """
    for name, v in (("world_size", world_size), ("tp", tp), ("pp", pp), ("dp", dp)):
        _check_int(v, name, 1, "sizes are positive ints")
    if tp * pp * dp != world_size:
        raise ValueError(f"tp × pp × dp must equal world_size: {tp} × {pp} × {dp} = {tp * pp * dp} != {world_size}; "
                         "choose sizes whose product is the number of ranks")

    def rank(p: int, d: int, t: int) -> int:
        return p * dp * tp + d * tp + t

    return {
        "tp": [[rank(p, d, t) for t in range(tp)] for p in range(pp) for d in range(dp)],
        "dp": [[rank(p, d, t) for d in range(dp)] for p in range(pp) for t in range(tp)],
        "pp": [[rank(p, d, t) for p in range(pp)] for d in range(dp) for t in range(tp)],
    }


def check_rank_layout(layout: dict[str, list[list[int]]], world_size: int, gpus_per_node: int = 8) -> dict[str, bool]:
    """Invariants of a 3D layout: every kind of group partitions ``range(world_size)``; each TP group
    lies inside one node; a rank's TP, DP and PP groups meet only in that rank."""
    ranks = set(range(world_size))
    out = {}
    for kind, groups in layout.items():
        flat = [r for g in groups for r in g]
        out[f"{kind} groups partition the ranks"] = sorted(flat) == sorted(ranks) and len(flat) == world_size
    out["each tp group inside one node"] = all(len({r // gpus_per_node for r in g}) == 1 for g in layout["tp"])
    member = {kind: {r: set(g) for g in groups for r in g} for kind, groups in layout.items()}
    out["tp ∩ dp ∩ pp groups of a rank = {rank}"] = all(
        all(r in member[kind] for kind in member)
        and member["tp"][r] & member["dp"][r] == {r} and member["tp"][r] & member["pp"][r] == {r}
        and member["dp"][r] & member["pp"][r] == {r} for r in ranks)
    return out

