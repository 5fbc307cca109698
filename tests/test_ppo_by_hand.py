"""Chapter 15: one PPO iteration written out independently (float64, explicit-sum GAE, the paper's min-form clip) ==
labkit's PPOTrainer.step(), parameter for parameter, on random small LLaMAs with awkward sizes; a changed detail is
caught. And the chapter's lab tasks: the instructor's task cells get full marks from the hidden tests at several seeds,
a mutant of each task loses points, and a task answered by calling labkit scores 0 and names it."""
import dataclasses

import nbformat
import pytest
import torch
import torch.nn as nn

from labkit import align as rlhf
from labkit.core.paths import NOTEBOOKS
from labkit.course.hidden import base, ch15
from labkit.model import Llama, LlamaConfig
from labsupport import module_from_source

NOTEBOOK = NOTEBOOKS / "15_reward_model_and_ppo.ipynb"


# ---- one PPO iteration by hand == PPOTrainer.step ------------------------------------------------------------
def _gae_sum(r, v, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γV_{t+1} − V_t, V_T = 0 (explicit sum, not the recursion)."""
    B, T = r.shape
    nxt = torch.cat([v[:, 1:], torch.zeros(B, 1, dtype=v.dtype)], 1)
    delta = r + gamma * nxt - v
    w = torch.tensor([(gamma * lam) ** k for k in range(T)], dtype=r.dtype)
    adv = torch.stack([(delta[:, t:] * w[:T - t]).sum(-1) for t in range(T)], 1)
    return adv, adv + v


def _lp(logits, ids):
    """log π(ids[t+1] | ids[:t+1]) from logits (B, T, V) → (B, T-1)."""
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def _by_hand(model, head, ref, reward_fn, prompts, cfg, whiten=True, value_clip=True):
    """One PPO iteration with the same random draws as PPOTrainer (one generator: prompts, tokens, minibatches)."""
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    P = prompts.shape[1]
    idx = torch.randint(len(prompts), (cfg.batch_size,), generator=gen)
    seqs = rlhf.sample_responses(model, prompts[idx], cfg.response_len, generator=gen)

    def fwd(ids):
        h = model.hidden_states(ids)
        return model.lm_head(h), head(h).squeeze(-1)

    with torch.no_grad():
        logits, values = fwd(seqs)
        lp_old, lp_ref = _lp(logits, seqs)[:, P - 1:], _lp(ref(seqs), seqs)[:, P - 1:]
        v_old = values[:, P - 1:-1]
        rewards = -cfg.kl_coef * (lp_old - lp_ref)
        rewards[:, -1] = rewards[:, -1] + reward_fn(seqs).double()
        adv, ret = _gae_sum(rewards, v_old, cfg.gamma, cfg.lam)
        if whiten:
            adv = (adv - adv.mean()) / torch.sqrt(adv.var(unbiased=False) + 1e-8)
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(cfg.batch_size, generator=gen)
        for j in range(0, cfg.batch_size, cfg.minibatch_size):
            mb = perm[j:j + cfg.minibatch_size]
            logits, values = fwd(seqs[mb])
            ratio = torch.exp(_lp(logits, seqs[mb])[:, P - 1:] - lp_old[mb])
            a = adv[mb]
            pl = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).mean()
            v = values[:, P - 1:-1]
            err = (v - ret[mb]) ** 2
            if value_clip:
                v_c = v_old[mb] + (v - v_old[mb]).clamp(-cfg.value_clip, cfg.value_clip)
                err = torch.max(err, (v_c - ret[mb]) ** 2)
            loss = pl + cfg.vf_coef * 0.5 * err.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()


def _setup(seed):
    g = torch.Generator().manual_seed(100 + seed)
    n = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))
    heads = 2 * n(1, 2)
    cfg_m = LlamaConfig(vocab_size=n(23, 61), dim=8 * heads, n_layers=n(1, 2), n_heads=heads, n_kv_heads=heads // 2,
                        hidden_dim=n(20, 45), max_seq_len=32)
    torch.manual_seed(seed)
    base_model = Llama(cfg_m).double()
    prompts = torch.randint(0, cfg_m.vocab_size, (n(5, 11), n(2, 5)), generator=g)
    fav = int(torch.randint(0, cfg_m.vocab_size, (1,), generator=g))
    P = prompts.shape[1]

    def reward_fn(seqs):                       # the count of one favourite token in the response
        return (seqs[:, P:] == fav).float().sum(-1) - 0.5

    mb = n(2, 3)
    cfg = rlhf.PPOConfig(batch_size=mb * n(2, 3), minibatch_size=mb, ppo_epochs=n(2, 3), response_len=n(3, 7),
                         lr=3e-3, kl_coef=[0.0, 0.05, 0.3][seed % 3], lam=[0.95, 0.8, 1.0][seed % 3],
                         gamma=[1.0, 0.97, 0.9][seed % 3], value_clip=[0.2, 0.01, 0.003][seed % 3], seed=seed)
    return base_model, prompts, reward_fn, cfg


def _labkit_step(base_model, prompts, reward_fn, cfg):
    policy = rlhf.frozen_copy(base_model, trainable=True)
    trainer = rlhf.PPOTrainer(policy, base_model, reward_fn, prompts, cfg)
    trainer.model.double()                      # the value head is created in float32
    trainer.step()
    return trainer


def _flat(ps):
    return torch.cat([p.detach().flatten() for p in ps])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_iteration_by_hand_equals_ppotrainer_step(seed):
    base_model, prompts, reward_fn, cfg = _setup(seed)
    trainer = _labkit_step(base_model, prompts, reward_fn, cfg)
    model = rlhf.frozen_copy(base_model, trainable=True)
    head = rlhf.ValueHead(base_model.config.dim).double()
    _by_hand(model, head, base_model, reward_fn, prompts, cfg)
    moved = float((_flat(model.parameters()) - _flat(base_model.parameters())).abs().max())
    assert moved > 1e-3, "the iteration should move the weights"
    assert float((_flat(model.parameters()) - _flat(trainer.policy.parameters())).abs().max()) < 1e-9
    assert float((_flat(head.parameters()) - _flat(trainer.model.value_head.parameters())).abs().max()) < 1e-9


@pytest.mark.parametrize("change", ["no whitening", "no value clipping"])
def test_a_changed_detail_is_caught(change):
    base_model, prompts, reward_fn, cfg = _setup(4)
    if change == "no value clipping":            # a clip range the first updates exceed, so that clipping acts
        cfg = dataclasses.replace(cfg, value_clip=1e-3)
    trainer = _labkit_step(base_model, prompts, reward_fn, cfg)
    model = rlhf.frozen_copy(base_model, trainable=True)
    head = rlhf.ValueHead(base_model.config.dim).double()
    _by_hand(model, head, base_model, reward_fn, prompts, cfg, whiten=change != "no whitening",
             value_clip=change != "no value clipping")
    gap = max(float((_flat(model.parameters()) - _flat(trainer.policy.parameters())).abs().max()),
              float((_flat(head.parameters()) - _flat(trainer.model.value_head.parameters())).abs().max()))
    assert gap > 1e-6, f"{change}: the by-hand iteration still matched PPOTrainer (gap {gap:.2e})"


# ---- the lab tasks: hidden tests against the instructor's cells, a mutant and a cheat ----------------------------
def _task_source():
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    return "\n\n".join(c.source for c in cells if "task" in c.metadata.get("tags", []))


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_instructor_cells_get_full_marks(seed, tmp_path):
    ns = vars(module_from_source(tmp_path, f"ch15_solutions_{seed}", _task_source()))
    for task in ch15.TASKS:
        r = base.run_task(task, ns, seed=seed)
        assert r["points"] == task.max_points, (task.key, r["message"])


MUTANTS = {  # function -> how its answer is spoiled
    "gae_advantages": "(out[0] * 1.001, out[1])",
    "ppo_policy_loss": "(out[0] * 1.001, out[1])",
    "ppo_value_loss": "out * 1.001",
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_mutant_loses_points(name, tmp_path):
    src = _task_source() + (f"\n\ndef {name}_mutant(*args, **kwargs):\n    out = {name}(*args, **kwargs)\n"
                            f"    return {MUTANTS[name]}\n")
    ns = vars(module_from_source(tmp_path, f"ch15_mutant_{name}", src))
    task = next(t for t in ch15.TASKS if name in t.functions)
    r = base.run_task(task, {**ns, name: ns[f"{name}_mutant"]}, seed=3)
    assert r["points"] < task.max_points and "uses" not in r["message"], r["message"]


def test_calling_labkit_scores_zero_and_names_it(tmp_path):
    mod = module_from_source(tmp_path, "ch15_cheat", (
        "from labkit import align\n\n"
        "def gae_advantages(rewards, values, gamma=1.0, lam=0.95):\n    return align.gae(rewards, values, gamma, lam)\n\n"
        "def ppo_policy_loss(logp_new, logp_old, advantages, clip=0.2):\n"
        "    return align.ppo_clip_loss(logp_new, logp_old, advantages, clip)\n\n"
        "def ppo_value_loss(values, old_values, returns, clip=0.2):\n"
        "    return align.value_loss(values, old_values, returns, clip)\n"))
    for task in ch15.TASKS:
        r = base.run_task(task, vars(mod), seed=1)
        assert r["points"] == 0 and "labkit" in r["message"] and "reference" in r["message"], r["message"]
