"""Layer 10, parallel (chapters 22–24): data parallel, ZeRO/FSDP, tensor and pipeline parallel.

One module per kind of parallelism, each holding its formula or simulator (pure tensor code, no process
group), its implementation on ``torch.distributed``, and a torchrun demo beside it::

    collectives.py   ring_allreduce(tensors) -> RingResult            simulated ring, steps, elements sent
                     ring_allreduce_time(n_bytes, n_workers, bandwidth)  α–β time model
                     demo: collectives_demo (the five collectives, a send/recv ring), ddp_demo (DDP)
    zero.py          zero_memory_bytes(n_params, stage, n_devices, k=12) ZeRO memory model, bytes per device
                     zero_comm_elements(n_params, stage, n_devices)      elements sent per rank per step
                     ZeroAdam (ZeRO-1/2), Zero3Linear / zero3_wrap (ZeRO-3) from scratch
                     demo: zero_demo, fsdp_demo (PyTorch's FSDP2 on the same model)
    tensor.py        Megatron column/row-parallel layers, ParallelMLP, ParallelSelfAttention
                     demo: tp_demo
    pipeline.py      pipeline_bubble_fraction(stages, microbatches)      (K-1)/(M+K-1)
                     pipeline_schedule(kind, stages, microbatches)       naive / gpipe / 1f1b simulator
                     plot_pipeline(schedules); pipeline_step: real GPipe and 1F1B over send/recv
                     demo: pp_demo
    layout.py        rank_layout_3d(world_size, tp, pp, dp)             Megatron TP × DP × PP groups
                     check_rank_layout(layout, world_size)
    runtime.py       what every demo process needs (process group, checks on all ranks, JSON result)
    launch.py        launch(demo, nproc): run a demo with torchrun in a subprocess; on a timeout or a failure
                     run_process_group / root_cause stop every worker and surface the workers' own error
    process_tree.py  descendants(pid), stop_process_tree(proc): torchrun puts each worker in its own session

The demos are real multi-process programs, run with torchrun (gloo on CPU, nccl on GPUs, the same code)::

    launch("collectives_demo", 4)   launch("ddp_demo", 2)   launch("zero_demo", 2)
    launch("fsdp_demo", 2)          launch("tp_demo", 2)    launch("pp_demo", 2)
"""
from __future__ import annotations

from labkit.parallel.collectives import RingResult, ring_allreduce, ring_allreduce_time  # noqa: F401
from labkit.parallel.launch import (  # noqa: F401
    DEMOS,
    LaunchResult,
    free_port,
    launch,
    root_cause,
    run_process_group,
    torchrun_command,
)
from labkit.parallel.layout import check_rank_layout, rank_layout_3d  # noqa: F401
from labkit.parallel.pipeline import (  # noqa: F401
    PipelineSchedule,
    pipeline_bubble_fraction,
    pipeline_schedule,
    plot_pipeline,
)
from labkit.parallel.process_tree import descendants, is_alive, stop_process_tree  # noqa: F401
from labkit.parallel.zero import zero_comm_elements, zero_memory_bytes  # noqa: F401

__all__ = [
    "zero_memory_bytes", "zero_comm_elements", "pipeline_bubble_fraction", "ring_allreduce", "RingResult",
    "ring_allreduce_time", "pipeline_schedule", "PipelineSchedule", "plot_pipeline", "rank_layout_3d",
    "check_rank_layout", "launch", "LaunchResult", "free_port", "torchrun_command", "DEMOS",
    "run_process_group", "root_cause", "descendants", "is_alive", "stop_process_tree",
]
