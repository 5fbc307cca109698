"""Continuous batching (chapter 09): every request's greedy output equals running it alone, under all three
policies and under preemption; the schedule obeys each policy; metrics on a hand-made schedule; the shipped
trace is what its seeded generator makes; bad input."""
from __future__ import annotations

import json

import pytest
import torch

from labkit.experiments.serving import build_trace
from labkit.model import Llama, LlamaConfig, generate
from labkit.serving import Request, ServeResult, SeqState, TRACE_FILE, load_trace, serve, serving_metrics


def _model(seed: int) -> Llama:
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48,
                              max_seq_len=64)).eval()
    with torch.no_grad():                                      # sharper logits: no near-ties in the argmax
        model.lm_head.weight.mul_(8)
    return model


def _trace(seed: int, n: int = 9) -> list[Request]:
    g = torch.Generator().manual_seed(seed)
    reqs, t = [], 0
    for rid in range(n):
        t += int(torch.randint(0, 4, (1,), generator=g))
        L, m = int(torch.randint(1, 14, (1,), generator=g)), int(torch.randint(1, 15, (1,), generator=g))
        reqs.append(Request(rid, t, tuple(torch.randint(0, 61, (L,), generator=g).tolist()), m))
    return reqs


def _alone(model, reqs):
    return {r.rid: generate(model, torch.tensor([r.prompt]), r.max_new_tokens)[0, len(r.prompt):].tolist()
            for r in reqs}


@pytest.mark.parametrize("seed", [0, 1])
def test_every_policy_gives_each_request_its_solo_output(seed):
    model, reqs = _model(seed), _trace(seed)
    alone = _alone(model, reqs)
    total = sum(r.max_new_tokens for r in reqs)
    res = {p: serve(model, reqs, policy=p, max_batch=4, num_blocks=40, block_size=3)
           for p in ("continuous", "static", "serial")}
    for p, r in res.items():
        assert r.outputs == alone, p
    assert res["serial"].forward_steps == total                 # one token per pass
    assert all(len(batch) == 1 for batch in res["serial"].timeline)
    assert res["continuous"].forward_steps < res["static"].forward_steps < total


def test_preemption_by_recompute_keeps_outputs():
    model, reqs = _model(2), _trace(2, n=10)
    tight = serve(model, reqs, policy="continuous", max_batch=8, num_blocks=12, block_size=3)
    assert tight.preemptions > 0 and tight.peak_blocks <= 12
    assert tight.outputs == _alone(model, reqs)
    assert sum(s.preemptions for s in tight.states.values()) == tight.preemptions


def test_static_admits_only_into_an_empty_batch_and_continuous_fills_holes():
    model, reqs = _model(3), _trace(3)
    static = serve(model, reqs, policy="static", max_batch=3, num_blocks=40, block_size=4)
    members = [{rid for rid, _ in b} for b in static.timeline]
    for prev, cur in zip(members, members[1:]):
        assert cur <= prev or not (cur & prev), "a static batch only shrinks until it is empty"
    cont = serve(model, reqs, policy="continuous", max_batch=3, num_blocks=40, block_size=4)
    joined = [(rid, n) for b in cont.timeline[1:] for rid, n in b if n > 1]
    assert joined and all(len(b) <= 3 for b in cont.timeline)   # prefills join a running batch


def test_metrics_on_a_hand_made_schedule():
    r0, r1 = Request(0, 0, (1, 2), 3), Request(1, 1, (3,), 2)
    s0, s1 = SeqState(r0, [5, 6, 7], [0, 1, 3]), SeqState(r1, [8, 9], [1, 3])
    res = ServeResult({0: s0.out, 1: s1.out}, {0: s0, 1: s1}, [[(0, 2)], [(0, 1), (1, 1)], [(0, 1), (1, 1)]],
                      [0, 1, 3], [0.5, 1.0, 2.0], 0, 2)
    m = serving_metrics(res)
    assert m["tokens"] == 5 and m["forward_steps"] == 3 and m["tokens_per_step"] == pytest.approx(5 / 3)
    assert m["ttft_steps_p50"] == m["ttft_steps_p99"] == 1        # r0: 0 + 1 - 0, r1: 1 + 1 - 1
    assert m["tpot_steps_p50"] == 2                               # gaps 1, 2 (r0) and 2 (r1)
    assert m["tokens_per_s"] == pytest.approx(5 / 3.5)
    assert m["ttft_s_p50"] == pytest.approx(((0.5) + (1.5 - 0.5)) / 2)  # r1 arrives after pass 0 (0.5 s)
    assert m["tpot_s_p99"] == pytest.approx(2.0, abs=0.05)


def test_shipped_trace_is_the_seeded_generator_output():
    shipped = load_trace()
    assert shipped == build_trace()
    obj = json.loads(TRACE_FILE.read_text())
    assert obj["settings"]["seed"] == 0 and len(shipped) == 24
    assert all(len(r.prompt) + r.max_new_tokens <= 120 for r in shipped)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(policy="fifo"), ValueError, "policy"),
    (dict(max_batch=0), ValueError, "max_batch"),
    (dict(block_size=0), ValueError, "block_size"),
    (dict(num_blocks=1), ValueError, "cannot hold the longest request"),
])
def test_serve_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        serve(_model(0), _trace(0, n=3), **kwargs)


def test_request_bad_input():
    with pytest.raises(ValueError, match="max_new_tokens"):
        Request(0, 0, (1,), 0)
    with pytest.raises(ValueError, match="prompt"):
        Request(0, 0, (), 3)
    with pytest.raises(TypeError, match="requests"):
        serve(_model(0), [], policy="continuous")
    with pytest.raises(ValueError, match="distinct rid"):
        serve(_model(0), [Request(0, 0, (1,), 1), Request(0, 1, (2,), 1)])
