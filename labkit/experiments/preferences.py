"""The chapter 15–16 experiment: a CPU miniature of the DPO paper's controlled-generation study.

* Policy and reference: the course's tiny LLaMA trained on Shakespeare (no SFT stage: the
  pretrained, in-domain model plays the role of the SFT model and of π_ref).
* Task: continue a prompt that ends with a speaker tag (``"ROMEO:\\n"``) by ``RESPONSE_LEN`` tokens.
* Ground-truth reward (cheap, exact): the *warmth* of the continuation, the number of words from a
  small Shakespearean lexicon of positive words ("love", "sweet", "noble", ...; ``lexicon_score``).
* Preference pairs: for each prompt, ``K`` continuations sampled from the reference model; every two
  of them whose ground-truth rewards differ become a (chosen, rejected) pair.
* PPO (with a learned reward model) and DPO start from the same model and are judged on held-out
  prompts by the same ground-truth reward and the same KL(π‖π_ref) on fresh samples.

Commands (deterministic; CPU):

    python -m labkit.experiments.preferences pairs      # data/preferences/pairs.json
    python -m labkit.experiments.preferences frontier   # data/preferences/frontier.json (longer PPO/DPO runs)
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from labkit import align as rlhf
from labkit.core.io import atomic_write_json
from labkit.core.paths import DATA
from labkit.datasets import load_shakespeare
from labkit.model import load_pretrained

__all__ = ["PROMPT_LEN", "RESPONSE_LEN", "POSITIVE", "lexicon_score", "score_sequences",
           "make_prompts", "make_pairs", "load_pairs", "evaluate_policy", "train_reward_model_on_pairs",
           "standardized_reward", "run_dpo", "run_ppo", "run_frontier", "summarize_frontier", "PAIRS_PATH",
           "FRONTIER_PATH", "RESULTS_PATH", "TARGET_WIN_RATE"]

PROMPT_LEN = 8          # tokens of context, ending with "NAME:\n"
RESPONSE_LEN = 16       # tokens sampled after it
K_SAMPLES = 4           # continuations per prompt when building pairs
PAIRS_PATH = DATA / "preferences" / "pairs.json"
FRONTIER_PATH = DATA / "preferences" / "frontier.json"
RESULTS_PATH = DATA / "preferences" / "results.json"
#: The win rate a method must reach against the reference (the starting model) to count as working.
TARGET_WIN_RATE = 0.8

POSITIVE = frozenset("love good sweet fair noble dear gentle heaven grace peace honour friend friends true best".split())
_WORD = re.compile(r"[a-z']+")


def lexicon_score(text: str) -> int:
    """Ground-truth reward: how many words of ``text`` are in the positive lexicon (case-insensitive)."""
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    return sum(w in POSITIVE for w in _WORD.findall(text.lower()))


def score_sequences(tokenizer: Any, seqs: torch.Tensor, prompt_len: int = PROMPT_LEN) -> torch.Tensor:
    """Lexicon score of the decoded response tokens ``seqs[:, prompt_len:]`` → (B,) float."""
    return torch.tensor([float(lexicon_score(tokenizer.decode(s[prompt_len:].tolist()))) for s in seqs])


# ----------------------------------------------------------------------------------------------
# prompts and pairs
# ----------------------------------------------------------------------------------------------
_TAG = re.compile(r"\n\n([A-Z][A-Z' ]+):\n")


def make_prompts(tokenizer: Any, text: str, n: int, seed: int = 0, prompt_len: int = PROMPT_LEN) -> torch.Tensor:
    """``n`` distinct prompts of exactly ``prompt_len`` tokens, each ending with a speaker tag line.

    The prompt is the last ``prompt_len`` tokens of the text up to and including ``"NAME:\\n"``, so
    the continuation starts a new speech.
    """
    ends = [m.end() for m in _TAG.finditer(text)]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ends), generator=g).tolist()
    out, seen = [], set()
    for i in order:
        ids = tokenizer.encode(text[max(0, ends[i] - 200):ends[i]])[-prompt_len:]
        if len(ids) == prompt_len and tuple(ids) not in seen:
            seen.add(tuple(ids))
            out.append(ids)
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct prompts found; ask for fewer than n={n}")
    return torch.tensor(out)


@torch.no_grad()
def make_pairs(model: nn.Module, tokenizer: Any, prompts: torch.Tensor, k: int = K_SAMPLES,
               seed: int = 0, response_len: int = RESPONSE_LEN) -> dict[str, torch.Tensor]:
    """Sample ``k`` continuations per prompt from ``model``; every two with different scores make a pair.

    Returns ``chosen``/``rejected`` (N, P+R) ids, their ground-truth scores, and ``prompt_index``.
    """
    g = torch.Generator().manual_seed(seed)
    P = prompts.shape[1]
    rep = prompts.repeat_interleave(k, 0)
    seqs = torch.cat([rlhf.sample_responses(model, rep[i:i + 256], response_len, generator=g)
                      for i in range(0, len(rep), 256)])
    scores = score_sequences(tokenizer, seqs, P).view(-1, k)
    seqs = seqs.view(len(prompts), k, -1)
    ci, ri, pi = [], [], []
    for p in range(len(prompts)):            # every pair of samples with different scores
        for i in range(k):
            for j in range(i + 1, k):
                si, sj = float(scores[p, i]), float(scores[p, j])
                if si != sj:
                    ci.append(i if si > sj else j)
                    ri.append(j if si > sj else i)
                    pi.append(p)
    pidx, cidx, ridx = torch.tensor(pi, dtype=torch.long), torch.tensor(ci, dtype=torch.long), torch.tensor(ri, dtype=torch.long)
    return {"chosen": seqs[pidx, cidx], "rejected": seqs[pidx, ridx],
            "chosen_score": scores[pidx, cidx], "rejected_score": scores[pidx, ridx], "prompt_index": pidx}


def _build_pair_file(model: nn.Module, tokenizer: Any, n_train_prompts: int = 1000, n_test_prompts: int = 300,
                     n_eval_prompts: int = 128, seed: int = 0) -> dict[str, Any]:
    prompts = make_prompts(tokenizer, load_shakespeare("train"), n_train_prompts + n_test_prompts + n_eval_prompts,
                           seed=seed)
    splits = {"train": prompts[:n_train_prompts],
              "test": prompts[n_train_prompts:n_train_prompts + n_test_prompts]}
    out: dict[str, Any] = {
        "description": "Preference pairs for chapters 15-16: continuations sampled from the shipped tiny LLaMA, "
                       "labelled by the Shakespearean sentiment lexicon (labkit.experiments.preferences.lexicon_score).",
        "command": "python -m labkit.experiments.preferences pairs",
        "prompt_len": PROMPT_LEN, "response_len": RESPONSE_LEN, "k": K_SAMPLES, "seed": seed,
        "eval_prompts": prompts[-n_eval_prompts:].tolist(),
    }
    for j, (name, ps) in enumerate(splits.items()):
        pairs = make_pairs(model, tokenizer, ps, seed=seed + 1 + j)
        out[name] = [
            {"chosen": c.tolist(), "rejected": r.tolist(), "chosen_score": float(cs), "rejected_score": float(rs),
             "chosen_text": tokenizer.decode(c[PROMPT_LEN:].tolist()),
             "rejected_text": tokenizer.decode(r[PROMPT_LEN:].tolist()),
             "prompt_text": tokenizer.decode(c[:PROMPT_LEN].tolist())}
            for c, r, cs, rs in zip(pairs["chosen"], pairs["rejected"], pairs["chosen_score"], pairs["rejected_score"])
        ]
    return out


def load_pairs(path: Path | str = PAIRS_PATH, tokenizer: Any | None = None) -> dict[str, torch.Tensor]:
    """The shipped pairs as tensors: ``train_chosen``, ``train_rejected``, ``test_chosen``, ``test_rejected``
    (N, P+R), their scores, and ``eval_prompts`` (M, P). With ``tokenizer``, checks that the stored
    token ids still decode to the stored texts (the tokenizer has not changed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with `python -m labkit.experiments.preferences pairs`")
    d = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, torch.Tensor] = {"eval_prompts": torch.tensor(d["eval_prompts"])}
    for split in ("train", "test"):
        rows = d[split]
        if tokenizer is not None:
            for r in rows[:20]:
                if tokenizer.decode(r["chosen"][d["prompt_len"]:]) != r["chosen_text"]:
                    raise ValueError(f"{path}: token ids no longer decode to the stored text; the tokenizer changed. "
                                     "Regenerate with `python -m labkit.experiments.preferences pairs`")
        out[f"{split}_chosen"] = torch.tensor([r["chosen"] for r in rows])
        out[f"{split}_rejected"] = torch.tensor([r["rejected"] for r in rows])
        out[f"{split}_chosen_score"] = torch.tensor([r["chosen_score"] for r in rows])
        out[f"{split}_rejected_score"] = torch.tensor([r["rejected_score"] for r in rows])
    out["prompt_len"] = torch.tensor(d["prompt_len"])
    return out


# ----------------------------------------------------------------------------------------------
# evaluation: ground-truth reward and KL on fresh samples
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_policy(policy: nn.Module, ref: nn.Module, tokenizer: Any, prompts: torch.Tensor,
                    samples_per_prompt: int = 2, seed: int = 1234,
                    response_len: int = RESPONSE_LEN, n_texts: int = 0) -> dict[str, Any]:
    """Mean ground-truth reward, win rate against ``ref`` and mean sequence KL(π‖π_ref) on fresh samples.

    KL is Σ_t KL(π(·|s_t)‖π_ref(·|s_t)) over the response positions of each sample (exact per
    position, from the full distributions), averaged over samples; ``kl_se`` is its standard error.
    ``win_rate``: each policy sample is paired with an independent sample of ``ref`` for the same prompt
    (drawn with seed ``seed + 1``) and judged by the ground-truth score: 1 if it scores higher, ½ on a tie,
    0 if lower; the mean over pairs (0.5 = no better than the reference, ``win_rate_se`` its standard error).
    ``n_texts > 0`` adds ``"samples"``: for the first ``n_texts`` prompts, the prompt, the policy's first sample
    and the paired reference sample as text, each with its ground-truth score (what a reader can look at).
    """
    g = torch.Generator().manual_seed(seed)
    rep = prompts.repeat_interleave(samples_per_prompt, 0)
    P = prompts.shape[1]
    seqs = rlhf.sample_responses(policy, rep, response_len, generator=g)
    score = score_sequences(tokenizer, seqs, P)
    ref_seqs = rlhf.sample_responses(ref, rep, response_len, generator=torch.Generator().manual_seed(seed + 1))
    ref_score = score_sequences(tokenizer, ref_seqs, P)
    wins = (score > ref_score).float() + 0.5 * (score == ref_score).float()
    st = rlhf.response_stats(policy, ref, seqs, P)
    n = len(seqs)
    out: dict[str, Any] = {"reward": float(score.mean()), "reward_se": float(score.std() / n ** 0.5),
                           "win_rate": float(wins.mean()), "win_rate_se": float(wins.std() / n ** 0.5),
                           "kl": float(st["kl_exact"].mean()), "kl_se": float(st["kl_exact"].std() / n ** 0.5),
                           "kl_k1": float(st["kl_k1"].mean())}
    if n_texts > 0:
        rows = [i * samples_per_prompt for i in range(min(n_texts, len(prompts)))]
        out["samples"] = [{"prompt": tokenizer.decode(rep[i, :P].tolist()),
                           "policy": tokenizer.decode(seqs[i, P:].tolist()), "policy_score": int(score[i]),
                           "reference": tokenizer.decode(ref_seqs[i, P:].tolist()),
                           "reference_score": int(ref_score[i])} for i in rows]
    return out


# ----------------------------------------------------------------------------------------------
# the three training procedures
# ----------------------------------------------------------------------------------------------
def train_reward_model_on_pairs(base: nn.Module, pairs: dict[str, torch.Tensor], *, epochs: int = 1,
                                lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                                pool: str = "mean") -> tuple[rlhf.RewardModel, list[float]]:
    """A reward model initialised from ``base`` (copied), trained on the shipped training pairs."""
    torch.manual_seed(seed)
    rm = rlhf.RewardModel(rlhf.frozen_copy(base, trainable=True), pool=pool, prompt_len=PROMPT_LEN)
    losses = rlhf.train_reward_model(rm, pairs["train_chosen"], pairs["train_rejected"], epochs=epochs,
                                     batch_size=batch_size, lr=lr, seed=seed)
    return rm, losses


def standardized_reward(rm: nn.Module, reference_seqs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``seqs -> (rm(seqs) − μ) / σ`` with μ, σ measured on samples of the reference model (fixed)."""
    with torch.no_grad():
        r = torch.cat([rm(reference_seqs[i:i + 128]) for i in range(0, len(reference_seqs), 128)])
    mu, sd = float(r.mean()), float(r.std()) + 1e-6

    @torch.no_grad()
    def fn(seqs: torch.Tensor) -> torch.Tensor:
        return (rm(seqs) - mu) / sd

    return fn


def run_dpo(base: nn.Module, pairs: dict[str, torch.Tensor], beta: float, *, epochs: int = 2, lr: float = 3e-4,
            batch_size: int = 16, seed: int = 0, average: bool = False) -> tuple[nn.Module, rlhf.DPOTrainer]:
    """DPO from a copy of ``base`` (also the frozen reference) on the training pairs."""
    torch.manual_seed(seed)
    policy = rlhf.frozen_copy(base, trainable=True)
    ref = rlhf.frozen_copy(base)
    trainer = rlhf.DPOTrainer(policy, ref, pairs["train_chosen"], pairs["train_rejected"], PROMPT_LEN,
                              rlhf.DPOConfig(beta=beta, lr=lr, batch_size=batch_size, epochs=epochs, seed=seed,
                                             average_logprobs=average))
    trainer.train()
    return policy, trainer


def run_ppo(base: nn.Module, reward_fn: Callable[[torch.Tensor], torch.Tensor], prompts: torch.Tensor,
            kl_coef: float, *, iterations: int = 20, seed: int = 0, **cfg: Any) -> tuple[nn.Module, rlhf.PPOTrainer]:
    """PPO from a copy of ``base`` (also the frozen reference) with ``reward_fn`` as the score."""
    torch.manual_seed(seed)
    policy = rlhf.frozen_copy(base, trainable=True)
    policy.train()
    ref = rlhf.frozen_copy(base)
    config = rlhf.PPOConfig(kl_coef=kl_coef, response_len=RESPONSE_LEN, seed=seed, **cfg)
    trainer = rlhf.PPOTrainer(policy, ref, reward_fn, prompts, config)
    trainer.train(iterations)
    policy.eval()
    return policy, trainer


def run_frontier(betas: Sequence[float] = (0.05, 0.1, 0.3, 1.0), kl_coefs: Sequence[float] = (0.02, 0.05, 0.2, 0.5),
                 dpo_epochs: int = 2, ppo_iterations: int = 30, ppo_eval_every: int = 10, seed: int = 0,
                 log: Callable[[str], None] = print, ppo_kwargs: dict[str, Any] | None = None,
                 dpo_kwargs: dict[str, Any] | None = None, model_loader: Callable[[], Any] | None = None,
                 pairs_path: Path | str = PAIRS_PATH, n_texts: int = 6) -> dict[str, Any]:
    """Train DPO at several β and PPO at several KL coefficients from the shipped model; evaluate
    checkpoints (DPO: after each epoch; PPO: every ``ppo_eval_every`` iterations) on the held-out prompts.

    Returns a JSON-able dict: the reference's point and one list of points per method; each point keeps
    ``n_texts`` sample texts beside the reference's (:func:`evaluate_policy`), the "before and after".
    """
    base, tok = (model_loader or load_pretrained)()
    pairs = load_pairs(pairs_path, tokenizer=tok)
    ev = pairs["eval_prompts"]
    train_prompts = pairs["train_chosen"][:, :PROMPT_LEN]
    dpo_kwargs = {"lr": 2e-4, **(dpo_kwargs or {})}
    ppo_kwargs = {"lr": 3e-4, **(ppo_kwargs or {})}
    results: dict[str, Any] = {"command": "python -m labkit.experiments.preferences frontier", "seed": seed,
                               "dpo_settings": dpo_kwargs, "ppo_settings": ppo_kwargs,
                               "reference": evaluate_policy(base, base, tok, ev, n_texts=n_texts), "dpo": [], "ppo": []}
    log(f"reference: {results['reference']}")
    for beta in betas:
        t0 = time.process_time()
        torch.manual_seed(seed)
        policy, ref = rlhf.frozen_copy(base, trainable=True), rlhf.frozen_copy(base)
        trainer = rlhf.DPOTrainer(policy, ref, pairs["train_chosen"], pairs["train_rejected"], PROMPT_LEN,
                                  rlhf.DPOConfig(beta=beta, seed=seed, **dpo_kwargs))
        for epoch in range(1, dpo_epochs + 1):
            trainer.train(1)
            held = trainer.evaluate(pairs["test_chosen"], pairs["test_rejected"])
            r = {"beta": beta, "epoch": epoch, **evaluate_policy(policy, base, tok, ev, n_texts=n_texts),
                 "heldout_accuracy": held["accuracy"], "cpu_s": round(time.process_time() - t0, 1)}
            results["dpo"].append(r)
            log(f"dpo {r}")
    rm, _ = train_reward_model_on_pairs(base, pairs)
    with torch.no_grad():
        results["reward_model_heldout_accuracy"] = rlhf.pairwise_accuracy(rm(pairs["test_chosen"]),
                                                                          rm(pairs["test_rejected"]))
    ref_samples = rlhf.sample_responses(base, train_prompts[:256], RESPONSE_LEN,
                                        generator=torch.Generator().manual_seed(seed))
    reward_fn = standardized_reward(rm, ref_samples)
    for kl in kl_coefs:
        t0 = time.process_time()
        torch.manual_seed(seed)
        policy, ref = rlhf.frozen_copy(base, trainable=True), rlhf.frozen_copy(base)
        policy.train()
        trainer = rlhf.PPOTrainer(policy, ref, reward_fn, train_prompts,
                                  rlhf.PPOConfig(kl_coef=kl, response_len=RESPONSE_LEN, seed=seed, **ppo_kwargs))
        for it in range(ppo_eval_every, ppo_iterations + 1, ppo_eval_every):
            trainer.train(ppo_eval_every)
            policy.eval()
            r = {"kl_coef": kl, "iteration": it, **evaluate_policy(policy, base, tok, ev, n_texts=n_texts),
                 "cpu_s": round(time.process_time() - t0, 1)}
            policy.train()
            results["ppo"].append(r)
            log(f"ppo {r}")
    return results


def summarize_frontier(frontier: dict[str, Any], target: float = TARGET_WIN_RATE) -> dict[str, Any]:
    """One operating point per method from the frontier's evaluated checkpoints: the one with the smallest KL
    among those whose held-out win rate against the reference reaches ``target`` (if none does, the one with the
    highest win rate, flagged ``"reached_target": False``). Returns ``{"reference", "target_win_rate", "dpo",
    "ppo"}``; each method entry holds ``win_rate``, ``kl``, ``reward`` (with standard errors) and its setting
    (β and epoch, or the KL coefficient and iteration), and the reward model's held-out pairwise accuracy."""
    out: dict[str, Any] = {"reference": frontier["reference"], "target_win_rate": target,
                           "reward_model_heldout_accuracy": frontier.get("reward_model_heldout_accuracy"),
                           "source": "data/preferences/frontier.json (python -m labkit.experiments.preferences frontier)"}
    for method in ("dpo", "ppo"):
        points = frontier[method]
        good = [p for p in points if p["win_rate"] >= target]
        best = min(good, key=lambda p: p["kl"]) if good else max(points, key=lambda p: p["win_rate"])
        out[method] = {**best, "reached_target": bool(good)}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.preferences {pairs|frontier}``: regenerate one shipped data file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    if argv[:1] == ["pairs"]:
        model, tok = load_pretrained()
        d = _build_pair_file(model, tok)
        atomic_write_json(PAIRS_PATH, d, ensure_ascii=False)
        print(f"wrote {PAIRS_PATH}: {len(d['train'])} train pairs, {len(d['test'])} test pairs, "
              f"{len(d['eval_prompts'])} evaluation prompts")
        return 0
    if argv[:1] == ["frontier"]:
        res = run_frontier()
        atomic_write_json(FRONTIER_PATH, res, ensure_ascii=False)
        atomic_write_json(RESULTS_PATH, summarize_frontier(res), ensure_ascii=False)
        print(f"wrote {FRONTIER_PATH} and {RESULTS_PATH}")
        return 0
    print("usage: python -m labkit.experiments.preferences {pairs|frontier}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
