r"""Continuous batching on a virtual clock (chapter 09), with static batching and one-at-a-time as baselines.

One **step** of the virtual clock (虚拟时钟) is one forward pass of the server over its running batch. Each step:

1. requests whose ``arrival ≤ step`` join the waiting queue (FCFS);
2. every running sequence needs one more KV slot for its decode token; when the free blocks do not suffice,
   the **most recently admitted** running sequence is **preempted** (抢占) by *recompute*: its blocks are freed
   and it goes back to the front of the queue, keeping the tokens it has generated (re-admitted later, its
   prompt + generated tokens are prefilled again);
3. admission (接纳): ``policy="continuous"`` admits waiting requests (in order) while the batch has room and
   their tokens fit in the free blocks; ``"static"`` admits only into an *empty* batch, which then runs until
   its last member finishes; ``"serial"`` is static with one request at a time;
4. one forward pass (:func:`labkit.serving.paged_forward`) mixes prefills (whole prompts) and decodes (one
   token); each sequence takes the greedy (argmax) next token; finished ones free their blocks.

When nothing runs and nothing waits, the clock jumps to the next arrival (no forward pass). The schedule
depends only on the trace and the settings, so step counts, token counts and preemptions are exact;
wall time is measured beside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from labkit.core.validate import require_int
from labkit.serving.paged_attention import paged_forward
from labkit.serving.paged_cache import PagedKVCache
from labkit.serving.trace import Request

__all__ = ["POLICIES", "SeqState", "ServeResult", "serve"]

POLICIES = ("continuous", "static", "serial")


@dataclass
class SeqState:
    """A request being served: generated tokens, the step each token came out, preemptions."""
    req: Request
    out: list[int] = field(default_factory=list)
    token_steps: list[int] = field(default_factory=list)
    preemptions: int = 0

    @property
    def tokens(self) -> list[int]:
        """Prompt + generated tokens."""
        return list(self.req.prompt) + self.out

    @property
    def done(self) -> bool:
        return len(self.out) >= self.req.max_new_tokens


@dataclass
class ServeResult:
    """What :func:`serve` returns. ``timeline[s]`` lists ``(rid, n_tokens_fed)`` of forward pass ``s``;
    ``step_clock[s]`` is the virtual step of pass ``s``; ``step_seconds[s]`` its measured wall time."""
    outputs: dict[int, list[int]]
    states: dict[int, SeqState]
    timeline: list[list[tuple[int, int]]]
    step_clock: list[int]
    step_seconds: list[float]
    preemptions: int
    peak_blocks: int

    @property
    def forward_steps(self) -> int:
        """Forward passes run."""
        return len(self.timeline)


def _check_args(requests: list[Request], policy: str, max_batch: int, num_blocks: int, block_size: int) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    require_int(max_batch, "max_batch", 1, "pass the most sequences one forward pass may hold")
    require_int(block_size, "block_size", 1, "pass the tokens per KV block, e.g. 8 or 16")
    require_int(num_blocks, "num_blocks", 1, "pass the KV blocks the server may use")
    if not requests or not all(isinstance(r, Request) for r in requests):
        raise TypeError("requests must be a non-empty list of labkit.serving.Request")
    if len({r.rid for r in requests}) != len(requests):
        raise ValueError("requests must have distinct rid values")
    worst = max(len(r.prompt) + r.max_new_tokens for r in requests)
    if -(-worst // block_size) > num_blocks:
        raise ValueError(f"num_blocks ({num_blocks}) of {block_size} slots cannot hold the longest request "
                         f"({worst} tokens); give at least {-(-worst // block_size)} blocks")


def _make_room(running: list[SeqState], waiting: list[SeqState], cache: PagedKVCache) -> int:
    """Preempt (recompute) the latest-admitted running sequences until every other one can take its decode
    slot; the victims go to the front of the queue. Returns the number preempted."""
    n = 0
    while running and sum(cache.blocks_needed(s.req.rid, 1) for s in running) > cache.allocator.num_free:
        victim = running.pop()
        cache.free(victim.req.rid)
        victim.preemptions += 1
        waiting.insert(0, victim)
        n += 1
    return n


def _admit(running: list[SeqState], waiting: list[SeqState], cache: PagedKVCache, policy: str,
           max_batch: int) -> None:
    """Move waiting sequences (in order) into the batch while they fit (see the module doc for the policies)."""
    if policy != "continuous" and running:
        return
    cap = 1 if policy == "serial" else max_batch
    reserved = sum(cache.blocks_needed(s.req.rid, 1) for s in running)
    while waiting and len(running) < cap:
        s = waiting[0]
        need = -(-len(s.tokens) // cache.block_size)
        if reserved + need > cache.allocator.num_free:
            break
        waiting.pop(0)
        cache.add(s.req.rid)
        reserved += need
        running.append(s)


@torch.no_grad()
def serve(model: Any, requests: list[Request], *, policy: str = "continuous", max_batch: int = 8,
          num_blocks: int = 64, block_size: int = 8) -> ServeResult:
    """Serve ``requests`` greedily on a paged KV cache of ``num_blocks`` × ``block_size`` slots.

    Long because the loop is the algorithm: arrivals → make room (preempt) → admit → one forward pass → emit.
    Returns a :class:`ServeResult`; ``outputs[rid]`` are the generated tokens (prompt excluded).
    """
    _check_args(requests, policy, max_batch, num_blocks, block_size)
    cache = PagedKVCache.for_model(model, num_blocks, block_size)
    pending = sorted(requests, key=lambda r: (r.arrival, r.rid))
    states = {r.rid: SeqState(r) for r in requests}
    waiting: list[SeqState] = []
    running: list[SeqState] = []
    timeline: list[list[tuple[int, int]]] = []
    clock, seconds = [], []
    step, preempted, peak = 0, 0, 0
    while pending or waiting or running:
        while pending and pending[0].arrival <= step:
            waiting.append(states[pending.pop(0).rid])
        if not waiting and not running:
            step = pending[0].arrival                                 # idle: jump to the next arrival
            continue
        preempted += _make_room(running, waiting, cache)
        _admit(running, waiting, cache, policy, max_batch)
        feeds = [s.tokens[cache.length(s.req.rid):] for s in running]
        t0 = time.perf_counter()
        nxt = paged_forward(model, cache, [s.req.rid for s in running], feeds, last_only=True).argmax(-1).tolist()
        seconds.append(time.perf_counter() - t0)
        timeline.append([(s.req.rid, len(f)) for s, f in zip(running, feeds)])
        clock.append(step)
        peak = max(peak, cache.blocks_in_use())
        for s, tok in zip(running, nxt):
            s.out.append(tok)
            s.token_steps.append(step)
        for s in [s for s in running if s.done]:
            cache.free(s.req.rid)
            running.remove(s)
        step += 1
    return ServeResult({rid: s.out for rid, s in states.items()}, states, timeline, clock, seconds, preempted, peak)
