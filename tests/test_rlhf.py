"""Chapter 15–16: reward model, GAE, PPO, KL estimators and DPO, each against an independent reference."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit import align as rlhf
from labkit.model import sequence_logprobs


# ----------------------------------------------------------------------------------------------
# a tiny real transformer (transformers' LLaMA from a config) with the course's model interface
# ----------------------------------------------------------------------------------------------
class HFLM(nn.Module):
    """``forward(ids) -> logits`` and ``hidden_states(ids) -> (B, T, D)`` around LlamaForCausalLM."""

    def __init__(self, vocab: int = 37, dim: int = 32, layers: int = 2, seed: int = 0):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=2 * dim + 6,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=None)
        self.hf = LlamaForCausalLM(cfg)

    def forward(self, input_ids):
        return self.hf(input_ids=input_ids).logits

    def hidden_states(self, input_ids):
        return self.hf.model(input_ids=input_ids).last_hidden_state

    def lm_head(self, h):
        return self.hf.lm_head(h)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is faster, and avoids OpenMP spinning on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lm():
    return HFLM()


# ----------------------------------------------------------------------------------------------
# sequence log-probs
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_logprobs_match_cross_entropy(seed):
    g = torch.Generator().manual_seed(seed)
    B, T, V = 3, 11, 13
    logits = torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 1:] = True
    mask[2, 9:] = True
    labels[1, 5] = -100  # an ignored label inside the response
    # reference: F.cross_entropy on explicitly shifted tensors, one sequence at a time
    ref_sum, ref_mean = [], []
    for b in range(B):
        keep = mask[b, 1:] & (labels[b, 1:] != -100)
        ce = F.cross_entropy(logits[b, :-1][keep], labels[b, 1:][keep], reduction="none")
        ref_sum.append(-ce.sum())
        ref_mean.append(-ce.mean())
    ours = sequence_logprobs(logits, labels, mask)
    torch.testing.assert_close(ours, torch.stack(ref_sum), atol=1e-5, rtol=0)
    ours_mean = sequence_logprobs(logits, labels, mask, average=True)
    torch.testing.assert_close(ours_mean, torch.stack(ref_mean), atol=1e-5, rtol=0)


def test_sequence_logprobs_match_transformers_loss(lm):
    """HF's causal-LM loss is the mean NLL over labels != -100, after its own shift."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(37, (1, 17), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100                     # a prompt of 6 tokens
    with torch.no_grad():
        hf_loss = lm.hf(input_ids=ids, labels=labels).loss
        ours = sequence_logprobs(lm(ids), labels, None, average=True)
    torch.testing.assert_close(-ours[0], hf_loss, atol=1e-5, rtol=0)


def test_sequence_logprobs_shift_matters():
    """An unshifted gather (the notes' bug) reads the wrong positions: the value differs."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 9, 11, generator=g)
    labels = torch.randint(11, (2, 9), generator=g)
    right = sequence_logprobs(logits, labels)
    wrong = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)[:, 1:].sum(-1)
    assert (right - wrong).abs().min() > 1e-3


def test_sequence_logprobs_bad_input():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(7, (2, 5))
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 2:] = True
    with pytest.raises(ValueError, match="mask"):
        sequence_logprobs(logits, labels, mask)       # row 1 is empty
    only_first = torch.zeros(2, 5, dtype=torch.bool)
    only_first[:, 0] = True
    with pytest.raises(ValueError, match="mask"):
        sequence_logprobs(logits, labels, only_first)  # position 0 is never predicted
    with pytest.raises(ValueError, match="labels"):
        sequence_logprobs(logits, labels[:, :4])
    with pytest.raises(TypeError, match="logits"):
        sequence_logprobs(logits.tolist(), labels)


# ----------------------------------------------------------------------------------------------
# Bradley–Terry
# ----------------------------------------------------------------------------------------------
def test_bradley_terry_loss():
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(7, generator=g) * 4, torch.randn(7, generator=g) * 4
    ref = -torch.log(torch.sigmoid(rc - rr)).mean()
    torch.testing.assert_close(rlhf.bradley_terry_loss(rc, rr), ref, atol=1e-6, rtol=0)
    # invariant to adding one constant to every reward
    torch.testing.assert_close(rlhf.bradley_terry_loss(rc + 5.0, rr + 5.0), ref, atol=1e-6, rtol=0)
    # hand-computed: r_c − r_r = 0 → log 2; = 1 → log(1 + e^-1)
    torch.testing.assert_close(rlhf.bradley_terry_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])),
                               torch.tensor((math.log(2) + math.log1p(math.exp(-1))) / 2))
    # stable where −log σ overflows
    big = rlhf.bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([0.0]))
    assert torch.isfinite(big) and abs(float(big) - 1000.0) < 1e-3
    assert torch.isinf(-torch.log(torch.sigmoid(torch.tensor(-1000.0))))
    with pytest.raises(ValueError, match="r_rejected"):
        rlhf.bradley_terry_loss(rc, rr[:3])


# ----------------------------------------------------------------------------------------------
# GAE
# ----------------------------------------------------------------------------------------------
def test_gae_worked_example():
    adv, ret = rlhf.gae(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.6, 0.7]), gamma=0.99, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([0.446829, 0.37515, 0.3]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, adv + torch.tensor([0.5, 0.6, 0.7]))


def _gae_closed_form(r, v, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l}, with δ from explicitly shifted values (V_T = 0), in float64."""
    r, v = r.double(), v.double()
    v_next = torch.cat([v[..., 1:], torch.zeros_like(v[..., :1])], -1)
    delta = r + gamma * v_next - v
    T = r.shape[-1]
    k = torch.arange(T, dtype=torch.float64)
    W = torch.where(k[None] >= k[:, None], (gamma * lam) ** (k[None] - k[:, None]), torch.zeros(()).double())
    return delta @ W.T, delta


@pytest.mark.parametrize("seed,shape,gamma,lam", [(0, (7,), 0.99, 0.95), (1, (3, 5), 1.0, 0.95),
                                                   (2, (4, 13), 0.9, 0.5), (3, (2, 1), 0.97, 0.9)])
def test_gae_against_closed_form(seed, shape, gamma, lam):
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    adv, ret = rlhf.gae(r, v, gamma, lam)
    ref, delta = _gae_closed_form(r, v, gamma, lam)
    torch.testing.assert_close(adv.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ret, adv + v)
    # λ = 0 → δ_t; λ = 1 → discounted return − V
    torch.testing.assert_close(rlhf.gae(r, v, gamma, 0.0)[0].double(), delta, atol=1e-6, rtol=0)
    g_ret = rlhf.discounted_returns(r, gamma)
    torch.testing.assert_close(rlhf.gae(r, v, gamma, 1.0)[0], g_ret - v, atol=1e-5, rtol=0)


def test_discounted_returns_hand():
    torch.testing.assert_close(rlhf.discounted_returns(torch.tensor([1.0, 0.0, 2.0]), 0.5),
                               torch.tensor([1.5, 1.0, 2.0]))


def test_gae_bad_input():
    with pytest.raises(ValueError, match="values"):
        rlhf.gae(torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="lam"):
        rlhf.gae(torch.zeros(4), torch.zeros(4), lam=1.5)
    with pytest.raises(TypeError, match="rewards"):
        rlhf.gae([0.0, 1.0], torch.zeros(2))


def test_whiten():
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(0)) * 3 + 2
    w = rlhf.whiten(x)
    assert abs(float(w.mean())) < 1e-6 and abs(float(w.std(unbiased=False)) - 1) < 1e-4


# ----------------------------------------------------------------------------------------------
# PPO clipped objective
# ----------------------------------------------------------------------------------------------
def test_ppo_ratio_one_equals_policy_gradient():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 6, generator=g).requires_grad_()
    adv = torch.randn(4, 6, generator=g)
    loss, cf = rlhf.ppo_clip_loss(logp, logp.detach(), adv, clip=0.2)
    assert float(cf) == 0.0
    torch.testing.assert_close(loss, -adv.mean())
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, -adv / adv.numel())  # ∇ of −A·exp(logp − logp_old) at ratio 1


def test_ppo_clipped_samples_get_zero_gradient():
    # ratios: inside, A>0 above 1+ε (clipped), A<0 below 1−ε (clipped), A>0 below 1−ε (not clipped),
    # A<0 above 1+ε (not clipped: the pessimistic bound keeps the gradient)
    ratio = torch.tensor([1.05, 1.5, 0.5, 0.5, 1.5])
    adv = torch.tensor([1.0, 2.0, -1.0, 1.0, -3.0])
    logp_old = torch.log(torch.tensor([0.3, 0.2, 0.4, 0.1, 0.25]))
    logp_new = (logp_old + torch.log(ratio)).requires_grad_()
    loss, cf = rlhf.ppo_clip_loss(logp_new, logp_old, adv, clip=0.2)
    (grad,) = torch.autograd.grad(loss, logp_new)
    expected = -adv * ratio / 5          # d/dlogp of −A·ρ, averaged over 5 samples
    expected[1] = expected[2] = 0.0
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(cf, torch.tensor(2 / 5))
    # loss by hand
    hand = torch.stack([-adv[0] * ratio[0], -adv[1] * 1.2, -adv[2] * 0.8, -adv[3] * ratio[3], -adv[4] * ratio[4]])
    torch.testing.assert_close(loss, hand.mean())


def test_ppo_clip_mask_and_bad_input():
    logp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, True, False], [False, False, True]])
    loss, _ = rlhf.ppo_clip_loss(logp, logp, adv, mask=mask)
    torch.testing.assert_close(loss, -torch.tensor((1 + 2 + 6) / 3))
    with pytest.raises(ValueError, match="clip"):
        rlhf.ppo_clip_loss(logp, logp, adv, clip=0.0)
    with pytest.raises(ValueError, match="clip"):
        rlhf.ppo_clip_loss(logp, logp, adv, clip=-0.1)
    with pytest.raises(ValueError, match="advantages"):
        rlhf.ppo_clip_loss(logp, logp, adv[:, :2])
    with pytest.raises(ValueError, match="mask"):
        rlhf.ppo_clip_loss(logp, logp, adv, mask=torch.zeros(2, 3, dtype=torch.bool))


def test_value_loss_clipping():
    v_old = torch.tensor([0.0, 0.0])
    v = torch.tensor([1.0, 0.1], requires_grad=True)
    ret = torch.tensor([1.0, 1.0])
    # sample 0: unclipped error 0, clipped V=0.2 → error 0.64 → max picks the clipped one (no gradient)
    loss = rlhf.value_loss(v, v_old, ret, clip=0.2)
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.64 + 0.81) / 2))
    (gr,) = torch.autograd.grad(loss, v)
    torch.testing.assert_close(gr, torch.tensor([0.0, 0.5 * 2 * (0.1 - 1.0) / 2]))
    torch.testing.assert_close(rlhf.value_loss(v, v_old, ret, clip=None), torch.tensor(0.5 * 0.81 / 2))


# ----------------------------------------------------------------------------------------------
# KL
# ----------------------------------------------------------------------------------------------
def test_exact_kl_against_torch():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(3, 5, 17, generator=g), torch.randn(3, 5, 17, generator=g)
    ref = F.kl_div(torch.log_softmax(q, -1), torch.log_softmax(p, -1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(rlhf.exact_kl(p, q), ref, atol=1e-6, rtol=0)
    assert float(rlhf.exact_kl(p, p).abs().max()) < 1e-6 and bool((rlhf.exact_kl(p, q) > 0).all())


def test_kl_estimators_unbiased():
    g = torch.Generator().manual_seed(1)
    p_logits, q_logits = torch.randn(20, generator=g), torch.randn(20, generator=g)
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    exact = float(rlhf.exact_kl(p_logits, q_logits))
    a = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=g)
    for name, est in (("k1", rlhf.kl_k1(logp[a], logq[a])), ("k3", rlhf.kl_k3(logp[a], logq[a]))):
        se = float(est.std()) / math.sqrt(len(est))
        assert abs(float(est.mean()) - exact) < 4 * se, name
    k1, k3 = rlhf.kl_k1(logp[a], logq[a]), rlhf.kl_k3(logp[a], logq[a])
    assert bool((k1 < 0).any()) and bool((k3 >= 0).all())
    # k2 is biased here (distributions far apart)
    assert abs(float(rlhf.kl_k2(logp[a], logq[a]).mean()) - exact) > 0.05


# ----------------------------------------------------------------------------------------------
# DPO
# ----------------------------------------------------------------------------------------------
def test_dpo_loss_formula_and_hand_pair():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 5 - 20 for _ in range(4))
    for beta in (0.1, 0.5, 2.0):
        loss, cr, rjr = rlhf.dpo_loss(pc, pr, rc, rr, beta=beta)
        # independent: −log σ(z) = log(1 + e^{−z}) in float64
        z = beta * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
        torch.testing.assert_close(loss.double(), torch.log1p(torch.exp(-z)).mean(), atol=1e-6, rtol=0)
        torch.testing.assert_close(cr, beta * (pc - rc))
        torch.testing.assert_close(rjr, beta * (pr - rr))
    # a pair by hand: β=0.1, policy (−10, −12), reference (−11, −11) → z = 0.1·(1 − (−1)) = 0.2
    loss, cr, rjr = rlhf.dpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]),
                                  torch.tensor([-11.0]), torch.tensor([-11.0]), beta=0.1)
    assert abs(float(loss) - 0.598139) < 1e-6   # log(1 + e^−0.2) = 0.5981388…
    assert abs(float(cr) - 0.1) < 1e-6 and abs(float(rjr) + 0.1) < 1e-6


def test_dpo_loss_log2_at_init_and_gradients():
    lp = torch.tensor([-30.0, -7.5, -12.25], requires_grad=True)
    lr_ = torch.tensor([-29.0, -8.0, -3.0], requires_grad=True)
    loss, cr, rjr = rlhf.dpo_loss(lp, lr_, lp.detach(), lr_.detach(), beta=0.1)
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-7)
    assert not cr.requires_grad and not rjr.requires_grad
    gc, grj = torch.autograd.grad(loss, (lp, lr_))
    # at init: dL/dlogπ_c = −β σ(0) / B = −0.05/3, and +0.05/3 for the rejected
    torch.testing.assert_close(gc, torch.full((3,), -0.05 / 3))
    torch.testing.assert_close(grj, torch.full((3,), 0.05 / 3))


def test_dpo_bad_input():
    x = torch.zeros(3)
    for beta in (0.0, -0.1):
        with pytest.raises(ValueError, match="beta"):
            rlhf.dpo_loss(x, x, x, x, beta=beta)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        rlhf.dpo_loss(x, x, x, torch.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        rlhf.DPOConfig(beta=0)
    with pytest.raises(ValueError, match="clip"):
        rlhf.PPOConfig(clip=0)


# ----------------------------------------------------------------------------------------------
# models and trainers on a tiny real transformer
# ----------------------------------------------------------------------------------------------
def test_policy_with_value_one_pass_equals_two(lm):
    pv = rlhf.PolicyWithValue(lm)
    assert pv._head is not None
    ids = torch.randint(37, (2, 9), generator=torch.Generator().manual_seed(0))
    logits, values = pv(ids)
    torch.testing.assert_close(logits, lm(ids))
    assert values.shape == (2, 9) and float(values.detach().abs().max()) == 0.0   # zero-initialised head


def tiny_llama(vocab: int, seed: int, dim: int = 32):
    """The course's own Llama (with a KV cache, so sampling is cheap), randomly initialised."""
    from labkit.model import Llama, LlamaConfig

    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=vocab, dim=dim, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32))


def test_reward_model_learns_pairs():
    """An RM on a tiny transformer separates 'contains token 5' from 'does not' on held-out pairs."""
    g = torch.Generator().manual_seed(0)
    n, T = 96, 8
    rej = torch.randint(6, 37, (n, T), generator=g)
    cho = rej.clone()
    cho[torch.arange(n), torch.randint(1, T, (n,), generator=g)] = 5
    for pool in ("last", "mean"):
        rm = rlhf.RewardModel(tiny_llama(37, seed=1), pool=pool, prompt_len=0)
        with torch.no_grad():
            before = rlhf.pairwise_accuracy(rm(cho[64:]), rm(rej[64:]))
        losses = rlhf.train_reward_model(rm, cho[:64], rej[:64], epochs=6, batch_size=16, lr=3e-3)
        with torch.no_grad():
            acc = rlhf.pairwise_accuracy(rm(cho[64:]), rm(rej[64:]))
        assert before < 0.9 and acc > 0.9 and losses[-1] < losses[0], (pool, before, acc)
    with pytest.raises(ValueError, match="prompt_len"):
        rlhf.RewardModel(tiny_llama(37, seed=1), pool="mean")
    with pytest.raises(TypeError, match="hidden_states"):
        rlhf.RewardModel(nn.Linear(3, 3))


def _count_token_reward(token: int, prompt_len: int):
    return lambda seqs: (seqs[:, prompt_len:] == token).float().sum(-1)


def test_ppo_trainer_ratio_one_and_reward_up():
    policy = tiny_llama(11, seed=2)
    ref = rlhf.frozen_copy(policy)
    ref_state = {k: v.clone() for k, v in ref.state_dict().items()}
    prompts = torch.randint(11, (16, 3), generator=torch.Generator().manual_seed(0))
    cfg = rlhf.PPOConfig(batch_size=32, minibatch_size=16, response_len=6, lr=1e-2, kl_coef=0.01, seed=0)
    trainer = rlhf.PPOTrainer(policy, ref, _count_token_reward(4, 3), prompts, cfg)
    hist = trainer.train(8)
    assert all(h["first_ratio_max_dev"] < 1e-5 for h in hist)   # ratio exactly 1 on the first minibatch
    assert max(h["clip_fraction"] for h in hist) > 0
    first = sum(h["score"] for h in hist[:2]) / 2
    last = sum(h["score"] for h in hist[-2:]) / 2
    assert last > first + 0.5, (first, last)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    with pytest.raises(ValueError, match="minibatch_size"):
        rlhf.PPOConfig(batch_size=10, minibatch_size=4)
    with pytest.raises(ValueError, match="prompts"):
        rlhf.PPOTrainer(policy, ref, _count_token_reward(4, 3), prompts[0], cfg)


def test_dpo_trainer_margin_up_reference_frozen():
    policy = tiny_llama(13, seed=3)
    ref = rlhf.frozen_copy(policy)
    ref_state = {k: v.clone() for k, v in ref.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    n, P, R = 48, 4, 5
    prompts = torch.randint(13, (n, P), generator=g)
    rej = torch.cat([prompts, torch.randint(6, 13, (n, R), generator=g)], 1)
    cho = rej.clone()
    cho[:, P + 2] = 3
    trainer = rlhf.DPOTrainer(policy, ref, cho[:32], rej[:32], prompt_len=P,
                              config=rlhf.DPOConfig(beta=0.1, lr=3e-3, batch_size=8, epochs=4))
    first = trainer.step(torch.arange(8))
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6) and first["margin"] == 0.0
    trainer.train()
    ev = trainer.evaluate(cho[32:], rej[32:])
    assert ev["accuracy"] > 0.9 and ev["margin"] > 0.5 and ev["loss"] < 0.5
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    with pytest.raises(ValueError, match="prompt_len"):
        rlhf.DPOTrainer(policy, ref, cho, rej, prompt_len=cho.shape[1])


def test_sample_responses_and_response_stats():
    m = tiny_llama(11, seed=4)
    prompts = torch.randint(11, (5, 3), generator=torch.Generator().manual_seed(0))
    a = rlhf.sample_responses(m, prompts, 4, generator=torch.Generator().manual_seed(7))
    b = rlhf.sample_responses(m, prompts, 4, generator=torch.Generator().manual_seed(7))
    assert a.shape == (5, 7) and torch.equal(a, b) and torch.equal(a[:, :3], prompts)
    st = rlhf.response_stats(m, m, a, prompt_len=3)
    assert float(st["kl_exact"].abs().max()) < 1e-6 and float(st["kl_k1"].abs().max()) < 1e-6
    with torch.no_grad():
        lp = sequence_logprobs(m(a), a, torch.arange(7).expand(5, 7) >= 3)
    torch.testing.assert_close(st["logp"], lp)
    with pytest.raises(ValueError, match="n_new"):
        rlhf.sample_responses(m, prompts, 0)


def test_dpo_under_no_grad_cannot_train(lm):
    """The notes' bug: computing the policy log-probs under no_grad leaves nothing to train."""
    ids = torch.randint(37, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = sequence_logprobs(lm(ids), ids)
    loss, _, _ = rlhf.dpo_loss(lp[:1], lp[1:], lp[:1], lp[1:])
    assert not loss.requires_grad


# ----------------------------------------------------------------------------------------------
# the chapter 15–16 experiment: ground-truth reward and the shipped pairs
# ----------------------------------------------------------------------------------------------
def test_lexicon_score():
    from labkit.experiments import preferences as rx

    assert rx.lexicon_score("O sweet love, my gentle friend!") == 4
    assert rx.lexicon_score("GOOD night, good-night") == 2        # case-insensitive; hyphens split words
    assert rx.lexicon_score("goodness and lovely dearest") == 0   # whole words only
    assert rx.lexicon_score("") == 0
    with pytest.raises(TypeError, match="text"):
        rx.lexicon_score(["love"])


def test_shipped_pairs_are_consistent():
    from labkit.experiments import preferences as rx
    from labkit.tokenizer import load_shakespeare_tokenizer

    tok = load_shakespeare_tokenizer()
    pairs = rx.load_pairs(tokenizer=tok)
    P, R = rx.PROMPT_LEN, rx.RESPONSE_LEN
    for split in ("train", "test"):
        c, r = pairs[f"{split}_chosen"], pairs[f"{split}_rejected"]
        assert c.shape == r.shape and c.shape[1] == P + R and len(c) > 100
        assert torch.equal(c[:, :P], r[:, :P])                                   # same prompt
        assert bool((pairs[f"{split}_chosen_score"] > pairs[f"{split}_rejected_score"]).all())
        # the stored scores are the lexicon scores of the decoded responses
        torch.testing.assert_close(rx.score_sequences(tok, c[:50]), pairs[f"{split}_chosen_score"][:50])
        torch.testing.assert_close(rx.score_sequences(tok, r[:50]), pairs[f"{split}_rejected_score"][:50])
    train_prompts = {tuple(x) for x in pairs["train_chosen"][:, :P].tolist()}
    test_prompts = {tuple(x) for x in pairs["test_chosen"][:, :P].tolist()}
    eval_prompts = {tuple(x) for x in pairs["eval_prompts"].tolist()}
    assert not (train_prompts & test_prompts) and not (eval_prompts & (train_prompts | test_prompts))
    assert all(tok.decode(list(p)).endswith(":\n") for p in list(eval_prompts)[:20])


def test_make_prompts_deterministic_and_bad_input():
    from labkit.experiments import preferences as rx
    from labkit.tokenizer import load_shakespeare_tokenizer

    tok = load_shakespeare_tokenizer()
    text = "But soft, what light through yonder window breaks?\n\nROMEO:\nO she doth teach the torches to burn bright.\n\nJULIET:\nAy me!\n\nNURSE:\nAnon, anon!\n"
    a, b = rx.make_prompts(tok, text, 3, seed=1), rx.make_prompts(tok, text, 3, seed=1)
    assert torch.equal(a, b) and a.shape == (3, rx.PROMPT_LEN)
    with pytest.raises(ValueError, match="distinct prompts"):
        rx.make_prompts(tok, text, 4)


def test_shipped_frontier_points_reproduce():
    """data/preferences/frontier.json is a real result: rerunning its cheapest DPO and PPO settings here
    (β = 1.0 for one epoch, KL coefficient 0.5 for 10 iterations) gives the shipped points.

    DPO reproduces to 1e-4 on every CPU tried. The reward model and PPO do not reproduce bit for bit across
    CPU vendors even with the pinned code paths (on an earlier pair file an Intel AVX-512 machine scored 127 of
    130 held-out pairs where an AMD machine scored 128, and PPO's sampled rollouts then diverge), so those are
    checked to within 0.77 % held-out accuracy and four standard errors of the two measurements: a fabricated or
    broken point fails, a CPU's rounding does not."""
    import json
    import math

    from labkit.experiments import preferences as rx

    shipped = json.loads(rx.FRONTIER_PATH.read_text())
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the frontier command runs on one thread
    try:
        res = rx.run_frontier(betas=(1.0,), kl_coefs=(0.5,), dpo_epochs=1, ppo_iterations=10, log=lambda s: None)
    finally:
        torch.set_num_threads(n_threads)
    assert res["reference"] == shipped["reference"]
    assert res["reward_model_heldout_accuracy"] == pytest.approx(shipped["reward_model_heldout_accuracy"],
                                                                 abs=1 / 130 + 1e-6)
    want = next(p for p in shipped["dpo"] if p["beta"] == 1.0 and p["epoch"] == 1)
    for k in ("reward", "kl", "reward_se", "kl_se", "win_rate"):
        assert res["dpo"][0][k] == pytest.approx(want[k], abs=1e-4), ("dpo", k, res["dpo"][0][k], want[k])
    want, got = next(p for p in shipped["ppo"] if p["kl_coef"] == 0.5 and p["iteration"] == 10), res["ppo"][0]
    for k in ("reward", "kl"):
        se = math.hypot(got[f"{k}_se"], want[f"{k}_se"])
        assert abs(got[k] - want[k]) <= 4 * se, ("ppo", k, got[k], want[k], se)


def test_preference_results_summarize_the_frontier():
    """data/preferences/results.json is summarize_frontier(frontier.json), and both methods reach the target
    win rate against the reference at the KL it states."""
    import json

    from labkit.experiments import preferences as rx

    frontier = json.loads(rx.FRONTIER_PATH.read_text())
    results = json.loads(rx.RESULTS_PATH.read_text())
    assert results == json.loads(json.dumps(rx.summarize_frontier(frontier)))
    assert abs(results["reference"]["win_rate"] - 0.5) < 3 * results["reference"]["win_rate_se"] + 0.02
    for method in ("dpo", "ppo"):
        point = results[method]
        assert point["reached_target"] and point["win_rate"] >= rx.TARGET_WIN_RATE
        assert point in frontier[method] or {k: v for k, v in point.items() if k != "reached_target"} in frontier[method]
        # the smallest KL among the points that reach the target
        assert point["kl"] == min(p["kl"] for p in frontier[method] if p["win_rate"] >= rx.TARGET_WIN_RATE)


def test_summarize_frontier_falls_back_to_the_best_point():
    from labkit.experiments import preferences as rx

    f = {"reference": {"win_rate": 0.5}, "dpo": [{"win_rate": 0.6, "kl": 1.0}, {"win_rate": 0.7, "kl": 3.0}],
         "ppo": [{"win_rate": 0.9, "kl": 5.0}, {"win_rate": 0.85, "kl": 2.0}, {"win_rate": 0.5, "kl": 0.1}]}
    out = rx.summarize_frontier(f)
    assert out["dpo"] == {"win_rate": 0.7, "kl": 3.0, "reached_target": False}
    assert out["ppo"] == {"win_rate": 0.85, "kl": 2.0, "reached_target": True}
