"""labkit.align on bad input (issue 16, "no silent failures"): float64 advantages stay float64, empty
batches and impossible hyper-parameters raise errors that name the argument instead of returning NaN."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import labkit.align as A


def _ref_gae(r: torch.Tensor, v: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} − V_t (V_T = 0), as explicit float64 sums."""
    T = r.shape[-1]
    v_next = torch.cat([v[..., 1:], torch.zeros_like(v[..., :1])], -1)
    delta = r + gamma * v_next - v
    adv = torch.stack([sum((gamma * lam) ** (s - t) * delta[..., s] for s in range(t, T)) for t in range(T)], -1)
    return adv, adv + v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_and_returns_keep_float64(seed: int) -> None:
    """float64 rewards give float64 advantages (they used to be computed in float32: 7e-8 off)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(3, 13, generator=g, dtype=torch.float64) * 10
    v = torch.randn(3, 13, generator=g, dtype=torch.float64) * 10
    for gamma, lam in ((1.0, 0.95), (0.97, 0.5), (0.9, 1.0)):
        adv, ret = A.gae(r, v, gamma, lam)
        ref_adv, ref_ret = _ref_gae(r, v, gamma, lam)
        assert adv.dtype == ret.dtype == torch.float64
        torch.testing.assert_close(adv, ref_adv, atol=1e-11, rtol=0)
        torch.testing.assert_close(ret, ref_ret, atol=1e-11, rtol=0)
        G = A.discounted_returns(r, gamma)
        assert G.dtype == torch.float64
        ref_G = torch.stack([sum(gamma ** (s - t) * r[:, s] for s in range(t, 13)) for t in range(13)], -1)
        torch.testing.assert_close(G, ref_G, atol=1e-11, rtol=0)
    a32, _ = A.gae(r.float(), v.float())
    assert a32.dtype == torch.float32                       # float32 (and lower) still computes in float32


def test_advantages_refuse_impossible_settings() -> None:
    r = torch.zeros(4)
    with pytest.raises(ValueError, match=r"`gamma` must be in \[0, 1\], got 2"):
        A.discounted_returns(r, gamma=2.0)                  # used to be accepted
    with pytest.raises(ValueError, match="`gamma`"):
        A.gae(r, r, gamma=float("nan"))
    with pytest.raises(TypeError, match="`gamma` must be a number"):
        A.gae(r, r, gamma="0.9")
    with pytest.raises(ValueError, match="`rewards` must be 1-D"):
        A.discounted_returns(torch.tensor(1.0))
    with pytest.raises(TypeError, match="`rewards` must be a torch.Tensor"):
        A.discounted_returns([1.0, 2.0])
    with pytest.raises(ValueError, match="`x` is empty"):
        A.masked_mean(torch.zeros(0))                       # used to return NaN
    with pytest.raises(TypeError, match="`mask` must be a torch.Tensor"):
        A.masked_mean(torch.zeros(3), [True, False, True])


def test_preference_losses_refuse_empty_batches() -> None:
    e = torch.zeros(0)
    with pytest.raises(ValueError, match="non-empty"):
        A.dpo_loss(e, e, e, e)                              # used to return NaN
    with pytest.raises(ValueError, match="empty batch"):
        A.pairwise_accuracy(e, e)                           # used to return NaN
    with pytest.raises(TypeError, match="floating-point"):
        A.dpo_loss(*(torch.zeros(2, dtype=torch.long),) * 4)
    with pytest.raises(ValueError, match="`beta`"):
        A.dpo_loss(*(torch.zeros(2),) * 4, beta=float("nan"))
    with pytest.raises(ValueError, match="`x` is empty"):
        A.ppo_clip_loss(e, e, e)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "`batch_size` must be >= 1"),              # used to be accepted
    (dict(minibatch_size=0), "`minibatch_size` must be >= 1"),      # used to raise ZeroDivisionError
    (dict(ppo_epochs=0), "`ppo_epochs`"),
    (dict(response_len=-1), "`response_len`"),
    (dict(lr=0.0), "`lr` must be > 0"),
    (dict(gamma=2.0), "`gamma` must be in"),
    (dict(lam=-0.1), "`lam` must be in"),
    (dict(vf_coef=-1.0), "`vf_coef` must be >= 0"),
    (dict(value_clip=0.0), "`value_clip`"),
])
def test_ppo_config_refuses_impossible_values(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        A.PPOConfig(**kwargs)


def test_dpo_config_and_heads_refuse_impossible_values() -> None:
    for kwargs, match in ((dict(batch_size=0), "batch_size"), (dict(epochs=0), "epochs"), (dict(lr=-1.0), "lr")):
        with pytest.raises(ValueError, match=match):
            A.DPOConfig(**kwargs)
    with pytest.raises(ValueError, match="`dim` must be >= 1"):
        A.ValueHead(0)
    with pytest.raises(TypeError, match="`model` must be an nn.Module"):
        A.frozen_copy(3)
    with pytest.raises(ValueError, match="`old_values`"):
        A.value_loss(torch.zeros(2, 3), torch.zeros(3), torch.zeros(2, 3))


def test_exact_kl_keeps_float64() -> None:
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(4, 11, generator=g, dtype=torch.float64), torch.randn(4, 11, generator=g, dtype=torch.float64)
    kl = A.exact_kl(p, q)
    lp, lq = p.log_softmax(-1), q.log_softmax(-1)
    assert kl.dtype == torch.float64
    torch.testing.assert_close(kl, (lp.exp() * (lp - lq)).sum(-1), atol=1e-14, rtol=0)
    with pytest.raises(TypeError, match="`logits` must be a floating-point"):
        A.exact_kl(p.long(), q.long())


class _TinyLM(nn.Module):
    """Embedding → linear: enough of a language model for PPOTrainer (logits and hidden states)."""

    def __init__(self, vocab: int = 7, dim: int = 8) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(vocab, dim), nn.Linear(dim, vocab)

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids))


def test_ppo_trainer_refuses_a_reward_of_the_wrong_shape() -> None:
    torch.manual_seed(0)
    lm = _TinyLM()
    prompts = torch.randint(7, (4, 3))
    cfg = A.PPOConfig(batch_size=4, minibatch_size=2, response_len=2, ppo_epochs=1)
    scalar_reward = A.PPOTrainer(lm, A.frozen_copy(lm), lambda s: torch.tensor(1.0), prompts, cfg)
    with pytest.raises(ValueError, match=r"`reward_fn` must return one score per sequence, shape \(4,\), got \(\)"):
        scalar_reward.step()                                # used to broadcast one number onto every sequence
    with pytest.raises(TypeError, match="input_ids must be an integer"):
        A.PPOTrainer(lm, A.frozen_copy(lm), lambda s: s.sum(-1).float(), prompts.float(), cfg)
