"""Speculative decoding (chapter 09): the accept/reject rule keeps the target's distribution (exact cases and
chi-square tests with a stated level), greedy speculative decoding equals the target's greedy decoding (random
models, awkward prompt lengths and draft lengths, and the shipped draft + course model), cache cropping, the
bad-input errors, and the shipped draft model is what ``python -m labkit.experiments.draft`` trains (its first
steps rerun here on one thread and give the logged losses)."""
from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import chisquare

from labkit.experiments.draft import DRAFT_CONFIG, DRAFT_DIR, DRAFT_TRAINING, train_draft
from labkit.model import Llama, LlamaConfig, generate, load_checkpoint, load_pretrained
from labkit.serving import crop_cache, speculative_accept, speculative_generate

ALPHA = 1e-3          # a correct sampler fails a chi-square test at this level once in a thousand seeds


def _pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness-of-fit p-value; cells expecting < 5 counts are pooled into one."""
    exp = probs.double().flatten() * counts.sum()
    obs = counts.double().flatten()
    big = exp >= 5
    o, e = obs[big], exp[big]
    if not big.all():
        o, e = torch.cat([o, obs[~big].sum()[None]]), torch.cat([e, exp[~big].sum()[None]])
    return float(chisquare(o.numpy(), (e * o.sum() / e.sum()).numpy()).pvalue)


def _dists(g: torch.Generator, k: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaked random p (k+1, V) and q (k, V) that differ (so both acceptance and rejection happen)."""
    p = (3 * torch.randn(k + 1, V, generator=g)).softmax(-1)
    q = (3 * torch.randn(k, V, generator=g)).softmax(-1)
    return p, q


# ------------------------------------------------------------------------------------- the accept rule
@pytest.mark.parametrize("seed, V", [(0, 5), (1, 7)])
def test_first_emitted_token_follows_p_and_acceptance_is_the_overlap(seed, V):
    g = torch.Generator().manual_seed(seed)
    p, q = _dists(g, 1, V)
    n, counts, accepted = 6000, torch.zeros(V), 0
    for _ in range(n):
        x = torch.multinomial(q[0], 1, generator=g)
        out = speculative_accept(p, q, x, g)
        counts[out[0]] += 1
        accepted += len(out) == 2
    assert _pvalue(counts, p[0]) > ALPHA                         # the emitted token is distributed as p
    assert _pvalue(counts, q[0]) < 1e-6                          # the test has power: q is told apart
    overlap = float(torch.minimum(p[0], q[0]).sum())            # P(accept) = Σ min(p, q)
    assert abs(accepted / n - overlap) < 4 * (overlap * (1 - overlap) / n) ** 0.5


def test_second_token_of_a_round_follows_p2_after_an_accepted_first_token():
    """k = 2: when x_1 is accepted (≥ 2 tokens emitted), x_1 is distributed as min(p_1, q_1)/Σ and the second
    token, an accepted x_2 or a residual sample, as p_2, independently: the pairs follow their outer product."""
    g = torch.Generator().manual_seed(2)
    V = 4
    p, q = _dists(g, 2, V)
    counts = torch.zeros(V, V)
    for _ in range(6000):
        x = torch.stack([torch.multinomial(q[i], 1, generator=g)[0] for i in range(2)])
        out = speculative_accept(p, q, x, g)
        if len(out) >= 2:
            counts[out[0], out[1]] += 1
    first = torch.minimum(p[0], q[0]) / torch.minimum(p[0], q[0]).sum()
    assert counts.sum() > 500 and _pvalue(counts, torch.outer(first, p[1])) > ALPHA
    assert _pvalue(counts, torch.outer(first, q[1])) < 1e-6


def test_exact_cases_equal_and_disjoint_distributions():
    g = torch.Generator().manual_seed(3)
    p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert speculative_accept(p, p[:2].clone(), torch.tensor([0, 1]), g) == [0, 1, 2]   # p == q: all accepted + bonus
    q = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    for _ in range(20):                                                                  # q(x) > 0 = p(x): rejected
        out = speculative_accept(p, q, torch.tensor([2, 2]), g)
        assert len(out) == 1 and out[0] in (0, 1)                                        # residual = p here


def test_greedy_one_hot_rule_accepts_while_the_argmaxes_agree():
    V, k = 9, 4
    target_arg, draft_arg = [3, 1, 4, 1, 5], [3, 1, 2, 7]
    p = torch.nn.functional.one_hot(torch.tensor(target_arg), V).float()
    q = torch.nn.functional.one_hot(torch.tensor(draft_arg), V).float()
    assert speculative_accept(p, q, torch.tensor(draft_arg)) == [3, 1, 4]                # 2 accepted + correction
    q_all = torch.nn.functional.one_hot(torch.tensor(target_arg[:k]), V).float()
    assert speculative_accept(p, q_all, torch.tensor(target_arg[:k])) == target_arg      # all + bonus


@pytest.mark.parametrize("p_shape, q_shape, x_shape, match", [
    ((3, 5), (3, 5), (3,), "k \\+ 1"), ((1, 5), (0, 5), (0,), "k"), ((3, 5), (2, 4), (2,), "q"),
    ((3, 5), (2, 5), (3,), "draft_tokens"), ((5,), (5,), (1,), "p must be")])
def test_speculative_accept_bad_shapes(p_shape, q_shape, x_shape, match):
    with pytest.raises(ValueError, match=match):
        speculative_accept(torch.ones(p_shape) / 5, torch.ones(q_shape) / 5, torch.zeros(x_shape, dtype=torch.long))


# ------------------------------------------------------------------------------------- end to end
def _tiny(seed: int, vocab: int, dim: int, layers: int, sharpen: float = 1.0) -> Llama:
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=4, n_kv_heads=2, hidden_dim=2 * dim,
                          max_seq_len=64)).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(sharpen)
    return m


@pytest.mark.parametrize("seed, prompt_len, n_new, k", [(0, 1, 13, 1), (1, 7, 19, 3), (2, 11, 9, 5)])
def test_greedy_speculative_equals_target_greedy_on_random_models(seed, prompt_len, n_new, k):
    target, draft = _tiny(seed, 37, 32, 2, 6.0), _tiny(seed + 100, 37, 16, 1, 6.0)
    prompt = torch.randint(0, 37, (prompt_len,), generator=torch.Generator().manual_seed(seed)).tolist()
    ref = generate(target, torch.tensor([prompt]), n_new)[0, prompt_len:].tolist()
    out, st = speculative_generate(target, draft, prompt, n_new, k)
    assert out == ref and len(out) == n_new
    assert st["draft_calls"] == k * st["rounds"] == st["proposed"] and st["target_calls"] == st["rounds"]
    assert 0 <= st["accepted"] <= st["proposed"]


def test_greedy_with_the_draft_as_its_own_target_accepts_everything():
    m = _tiny(4, 37, 32, 2, 6.0)
    out, st = speculative_generate(m, m, [5, 6, 7], 12, 3)
    assert out == generate(m, torch.tensor([[5, 6, 7]]), 12)[0, 3:].tolist()
    assert st["accepted"] == st["proposed"] and st["rounds"] == 3                      # 4 tokens per round


def test_sampled_speculative_output_follows_the_target_joint_distribution():
    """Temperature 0.8, k = 2: the first two generated tokens, over many runs, follow the target's
    p(x1) p(x2 | x1) (chi-square, level 1e-3) and not the draft's."""
    V, T = 5, 0.8
    target, draft = _tiny(7, V, 16, 1, 4.0), _tiny(8, V, 16, 1, 4.0)
    prompt = [1, 3]
    with torch.no_grad():
        p1 = (target(torch.tensor([prompt]))[0, -1] / T).softmax(-1)
        p2 = (target(torch.tensor([prompt + [a] for a in range(V)]))[:, -1] / T).softmax(-1)
        d1 = (draft(torch.tensor([prompt]))[0, -1] / T).softmax(-1)
        d2 = (draft(torch.tensor([prompt + [a] for a in range(V)]))[:, -1] / T).softmax(-1)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(V, V)
    for _ in range(1500):
        out, _ = speculative_generate(target, draft, prompt, 2, 2, temperature=T, generator=g)
        counts[out[0], out[1]] += 1
    assert _pvalue(counts, p1[:, None] * p2) > ALPHA
    assert _pvalue(counts, d1[:, None] * d2) < 1e-6


def test_crop_cache_keeps_the_first_positions():
    m = _tiny(5, 37, 32, 2)
    cache = m.new_cache()
    with torch.no_grad():
        m(torch.tensor([list(range(9))]), kv_cache=cache)
    k0 = cache[0].k.clone()
    crop_cache(cache, 4)
    assert cache.length == 4 and torch.equal(cache[0].k, k0[:, :, :4])
    with pytest.raises(ValueError, match="length"):
        crop_cache(cache, -1)


@pytest.mark.parametrize("kwargs, match", [(dict(k=0), "k"), (dict(max_new_tokens=0), "max_new_tokens"),
                                           (dict(prompt=[]), "prompt"), (dict(temperature=-0.5), "temperature")])
def test_speculative_generate_bad_input(kwargs, match):
    m = _tiny(6, 37, 16, 1)
    args = dict(prompt=[1, 2], max_new_tokens=4, k=2) | kwargs
    with pytest.raises(ValueError, match=match):
        speculative_generate(m, m, **args)


# ------------------------------------------------------------------------------------- the shipped draft
@pytest.fixture(scope="module")
def draft_log():
    return json.loads((DRAFT_DIR / "train_log.json").read_text())


def test_shipped_draft_matches_its_settings_and_log(draft_log):
    draft, _ = load_checkpoint(DRAFT_DIR)
    assert {k: draft.config.to_dict()[k] for k in DRAFT_CONFIG} == DRAFT_CONFIG
    assert draft_log["training"] == DRAFT_TRAINING
    assert draft.num_parameters() == draft_log["n_params"]
    assert len(draft_log["history"]["train_loss"]) == DRAFT_TRAINING["steps"]
    assert 3.7358 < draft_log["val_loss"] < 4.5                  # worse than the target, far below uniform (6.93)


def test_first_steps_of_the_shipped_draft_run_reproduce(draft_log):
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)                                     # the command runs on one thread
    try:
        _, hist = train_draft(stop_after=5)
    finally:
        torch.set_num_threads(n_threads)
    assert hist["lr"] == pytest.approx(draft_log["history"]["lr"][:5], rel=1e-12)
    assert hist["train_loss"] == pytest.approx(draft_log["history"]["train_loss"][:5], abs=1e-4)


def test_shipped_draft_and_course_model_greedy_identity():
    target, _ = load_pretrained()
    draft, _ = load_checkpoint(DRAFT_DIR)
    prompt = [int(t) for t in torch.arange(40, 53)]
    ref = generate(target, torch.tensor([prompt]), 24)[0, len(prompt):].tolist()
    for k in (2, 4):
        out, st = speculative_generate(target, draft, prompt, 24, k)
        assert out == ref
        assert st["target_calls"] < 24                           # the draft's proposals are (partly) accepted
