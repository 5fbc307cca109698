"""Distributed training, chapters 18–20: data parallel, ZeRO/FSDP, tensor and pipeline parallel.

In-process formulas and simulators (``labkit.parallel.theory``, re-exported here)::

    zero_memory_bytes(n_params, stage, n_devices, k=12)   # ZeRO memory model, bytes per device
    zero_comm_elements(n_params, stage, n_devices)        # elements sent per rank per step
    ring_allreduce(tensors) -> RingResult                 # simulated ring, steps, elements sent
    ring_allreduce_time(n_bytes, n_workers, bandwidth)    # α–β time model
    pipeline_bubble_fraction(stages, microbatches)        # (K-1)/(M+K-1)
    pipeline_schedule(kind, stages, microbatches)         # naive / gpipe / 1f1b simulator
    rank_layout_3d(world_size, tp, pp, dp)                # Megatron TP × DP × PP groups

Real multi-process programs, run with torchrun (gloo on CPU, nccl on GPUs, the same code)::

    launch("collectives_demo", 4)   launch("ddp_demo", 2)   launch("zero_demo", 2)
    launch("fsdp_demo", 2)          launch("tp_demo", 2)    launch("pp_demo", 2)

The building blocks those demos use live in ``labkit.parallel.zero`` (ZeRO-1/2/3 from scratch),
``labkit.parallel.tp`` (Megatron column/row-parallel layers) and ``labkit.parallel.pipeline`` (GPipe and
1F1B over send/recv).
"""
from __future__ import annotations

from labkit.parallel.launch import DEMOS, LaunchResult, free_port, launch, torchrun_command
from labkit.parallel.theory import (
    PipelineSchedule,
    RingResult,
    check_rank_layout,
    pipeline_bubble_fraction,
    pipeline_schedule,
    plot_pipeline,
    rank_layout_3d,
    ring_allreduce,
    ring_allreduce_time,
    zero_comm_elements,
    zero_memory_bytes,
)

__all__ = [
    "zero_memory_bytes", "zero_comm_elements", "pipeline_bubble_fraction", "ring_allreduce", "RingResult",
    "ring_allreduce_time", "pipeline_schedule", "PipelineSchedule", "plot_pipeline", "rank_layout_3d",
    "check_rank_layout", "launch", "LaunchResult", "free_port", "torchrun_command", "DEMOS",
]
