r"""Serving metrics (chapter 09): throughput, time to first token, per-token latency, on two clocks.

For request r arriving at step :math:`a_r` whose tokens come out of forward passes :math:`s_{r,1} < s_{r,2} < …`:

* time to first token (首字延迟, TTFT) = end of pass :math:`s_{r,1}` − :math:`a_r`;
* per-token latency (每词延迟, TPOT) = gaps :math:`s_{r,j+1} − s_{r,j}` between its consecutive tokens;
* throughput (吞吐) = generated tokens / busy time.

On the **virtual clock** a pass lasts one step (exact, deterministic). On the **wall clock** a pass lasts
its measured seconds, and time stands still while the server is idle (the clock jumps to the next arrival),
so a wall time is the compute time spent between the two events.
"""
from __future__ import annotations

import numpy as np

from labkit.serving.scheduler import ServeResult

__all__ = ["serving_metrics"]


def _wall_at(result: ServeResult) -> dict[int, float]:
    """Wall time (s) at the *end* of the last pass run at or before each virtual step, idle steps cost 0."""
    ends = np.cumsum(result.step_seconds)
    return {step: float(end) for step, end in zip(result.step_clock, ends)}


def _start_wall(result: ServeResult, step: int) -> float:
    """Wall time when virtual step ``step`` starts: the end of the last pass before it (0 if none)."""
    idx = int(np.searchsorted(np.asarray(result.step_clock), step, side="left"))
    return float(np.sum(result.step_seconds[:idx]))


def serving_metrics(result: ServeResult) -> dict[str, float]:
    """Throughput and latency percentiles of a :func:`labkit.serving.serve` run, in steps and in seconds.

    Keys: ``tokens``, ``forward_steps``, ``preemptions``, ``tokens_per_step``, ``ttft_steps_p50/p99``,
    ``tpot_steps_p50/p99``, ``tokens_per_s``, ``ttft_s_p50/p99``, ``tpot_s_p50/p99`` (percentiles by numpy's
    linear interpolation over all requests / all token gaps).
    """
    wall = _wall_at(result)
    ttft_steps, ttft_s, gap_steps, gap_s = [], [], [], []
    for st in result.states.values():
        a = st.req.arrival
        ttft_steps.append(st.token_steps[0] + 1 - a)
        ttft_s.append(wall[st.token_steps[0]] - _start_wall(result, a))
        for s0, s1 in zip(st.token_steps, st.token_steps[1:]):
            gap_steps.append(s1 - s0)
            gap_s.append(wall[s1] - wall[s0])
    tokens = sum(len(o) for o in result.outputs.values())
    busy = float(np.sum(result.step_seconds))
    gaps = gap_steps or [0]
    gaps_s = gap_s or [0.0]
    return {"tokens": tokens, "forward_steps": result.forward_steps, "preemptions": result.preemptions,
            "tokens_per_step": tokens / result.forward_steps,
            "ttft_steps_p50": float(np.percentile(ttft_steps, 50)), "ttft_steps_p99": float(np.percentile(ttft_steps, 99)),
            "tpot_steps_p50": float(np.percentile(gaps, 50)), "tpot_steps_p99": float(np.percentile(gaps, 99)),
            "tokens_per_s": tokens / busy if busy > 0 else float("nan"),
            "ttft_s_p50": float(np.percentile(ttft_s, 50)), "ttft_s_p99": float(np.percentile(ttft_s, 99)),
            "tpot_s_p50": float(np.percentile(gaps_s, 50)), "tpot_s_p99": float(np.percentile(gaps_s, 99))}
