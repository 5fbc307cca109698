"""Hidden tests of chapter 08's lab tasks: the top-p (nucleus) filter and the KV-cache greedy decode loop.

References: transformers' ``TopPLogitsWarper`` on random logits of random sizes (a token whose mass-before
lies within 1e-5 of p may go either way: float rounding); transformers' ``LlamaForCausalLM.generate
(do_sample=False)`` on random small LLaMA models (labkit's ``Llama`` with the same weights, ``to_hf``), and
the definition of greedy: every new token is an argmax of the full, uncached forward pass of the sequence so
far (near-ties within 1e-4 may go either way). A recording wrapper checks that the loop feeds the prompt once
and then exactly one token per call, into the same cache.
"""
from __future__ import annotations

import torch
from transformers.generation.logits_process import TopPLogitsWarper

from labkit.core.check import exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.model import Llama, LlamaConfig, to_hf

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ---- 08.A nucleus_filter -------------------------------------------------------------------------------
def _mass_before(logits: torch.Tensor) -> torch.Tensor:
    """For every token, the probability mass of the tokens more probable than it (float64), shape of logits."""
    probs = logits.double().softmax(-1)
    sp, order = torch.sort(probs, dim=-1, descending=True)
    return torch.zeros_like(probs).scatter(-1, order, sp.cumsum(-1) - sp)


def _compare_with_hf(out: torch.Tensor, logits: torch.Tensor, p: float, what: str) -> None:
    assert tuple(out.shape) == tuple(logits.shape), f"{what}: output shape {tuple(out.shape)}, expected {tuple(logits.shape)}"
    ref = TopPLogitsWarper(p)(torch.zeros(logits.shape[0], 1, dtype=torch.long), logits.clone())
    kept, kept_ref = torch.isfinite(out), torch.isfinite(ref)
    differ = kept != kept_ref
    near = (_mass_before(logits) - p).abs() < 1e-5                      # float rounding decides these
    bad = differ & ~near
    if bool(bad.any()):
        r, c = bad.nonzero()[0].tolist()
        raise AssertionError(f"{what}: token {c} of row {r} is {'kept' if bool(kept[r, c]) else 'dropped'} by yours, "
                             f"{'kept' if bool(kept_ref[r, c]) else 'dropped'} by TopPLogitsWarper (mass before it "
                             f"{float(_mass_before(logits)[r, c]):.6f}, p = {p}); {int(bad.sum())} tokens differ")
    exact(out[kept], logits[kept], quiet=True, name=f"{what}: kept entries are the input logits, unchanged")
    assert bool(torch.isneginf(out[~kept]).all()), f"{what}: dropped entries must be -inf"


def _nucleus_hf(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        B, V = _n(g, 1, 5), _n(g, 7, 400)
        logits = torch.randn(B, V, generator=g) * (0.5 + 4 * float(torch.rand(1, generator=g)))
        for p in (0.1 + 0.8 * float(torch.rand(1, generator=g)), 0.5, 0.95):
            _compare_with_hf(L.nucleus_filter(logits, p), logits, p, f"logits ({B}, {V}), p = {p:.3f}")


def _nucleus_top_token(L: Learner, g: torch.Generator) -> None:
    logits = torch.randn(4, 50, generator=g)
    logits[torch.arange(4), torch.randint(0, 50, (4,), generator=g)] += 6.0    # one token holds most of the mass
    out = L.nucleus_filter(logits, 0.05)
    exact(torch.isfinite(out).sum(-1), torch.ones(4, dtype=torch.long), quiet=True,
          name="p below the largest probability: exactly the top token is kept in every row")
    exact(torch.isfinite(out).int().argmax(-1), logits.argmax(-1), quiet=True, name="the kept token is the most probable one")


def _nucleus_shift_and_rows(L: Learner, g: torch.Generator) -> None:
    logits = torch.randn(3, 64, generator=g) * 2
    exact(torch.isfinite(L.nucleus_filter(logits + 100.0, 0.7)), torch.isfinite(L.nucleus_filter(logits, 0.7)),
          quiet=True, name="adding a constant to the logits (same probabilities) keeps the same tokens")
    sharp = logits.clone()
    sharp[1] *= 8                                                         # row 1 sure, rows 0 and 2 unsure
    out = L.nucleus_filter(sharp, 0.9)
    for r in range(3):
        _compare_with_hf(out[r:r + 1], sharp[r:r + 1], 0.9, f"row {r} of a batch with rows of different sharpness")


# ---- 08.B greedy_with_cache ----------------------------------------------------------------------------
class _Recorder:
    """Wraps a labkit ``Llama``: records (number of tokens fed, cache object) of every call."""

    def __init__(self, model: Llama) -> None:
        self.model, self.calls, self.caches = model, [], []

    def new_cache(self):  # noqa: ANN201 - a labkit ModelCache
        cache = self.model.new_cache()
        self.caches.append(cache)
        return cache

    def __call__(self, input_ids: torch.Tensor, kv_cache=None, **kwargs):  # noqa: ANN001, ANN201
        self.calls.append((int(input_ids.shape[1]), kv_cache))
        return self.model(input_ids, kv_cache, **kwargs)

    forward = __call__


def _random_model(g: torch.Generator) -> Llama:
    cfg = LlamaConfig(vocab_size=_n(g, 40, 130), dim=32, n_layers=2, n_heads=4, n_kv_heads=_n(g, 1, 2) * 2,
                      hidden_dim=48, max_seq_len=64)
    model = Llama(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return model


def _is_greedy(model: Llama, seq: torch.Tensor, T0: int, what: str) -> None:
    with torch.no_grad():
        logits = model(seq[:, :-1])[:, T0 - 1:]                          # full forward, no cache: (B, n, V)
    chosen = logits.gather(-1, seq[:, T0:, None]).squeeze(-1)
    gap = logits.amax(-1) - chosen
    if bool((gap > 1e-4).any()):
        b, t = (gap > 1e-4).nonzero()[0].tolist()
        raise AssertionError(f"{what}: new token {t} of row {b} is not the argmax of the uncached forward pass "
                             f"(its logit is {float(gap[b, t]):.4f} below the largest)")


def _greedy_hf(L: Learner, g: torch.Generator) -> None:
    for _ in range(2):
        model = _random_model(g)
        B, T0, n = _n(g, 1, 2), _n(g, 1, 9), _n(g, 3, 14)
        prompt = torch.randint(0, model.config.vocab_size, (B, T0), generator=g)
        out = L.greedy_with_cache(model, prompt, n)
        what = f"random model (V = {model.config.vocab_size}, n_kv = {model.config.n_kv_heads}), prompt {tuple(prompt.shape)}, n = {n}"
        assert tuple(out.shape) == (B, T0 + n), f"{what}: output shape {tuple(out.shape)}, expected {(B, T0 + n)}"
        exact(out[:, :T0], prompt, quiet=True, name=f"{what}: the output starts with the prompt")
        _is_greedy(model, out, T0, what)
        hf = to_hf(model).eval()
        with torch.no_grad():
            ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
                              pad_token_id=0)
        if not torch.equal(out, ref):                                     # only a near-tie may differ
            _is_greedy(model, ref, T0, f"{what} (transformers' output)")


def _greedy_one_token_per_step(L: Learner, g: torch.Generator) -> None:
    model = _random_model(g)
    T0, n = _n(g, 2, 8), _n(g, 4, 10)
    rec = _Recorder(model)
    prompt = torch.randint(0, model.config.vocab_size, (1, T0), generator=g)
    out = L.greedy_with_cache(rec, prompt, n)
    assert len(rec.caches) == 1, f"model.new_cache() was called {len(rec.caches)} times; make one cache per call"
    assert rec.calls, "the model was never called"
    sizes = [s for s, _ in rec.calls]
    assert sizes[0] == T0, f"the first call should feed the whole prompt ({T0} tokens) once, it fed {sizes[0]}"
    assert all(s == 1 for s in sizes[1:]), (f"after the prompt every call must feed only the newest token, "
                                            f"the calls fed {sizes} tokens")
    assert all(c is rec.caches[0] for _, c in rec.calls), "every call must pass the cache made by new_cache()"
    assert len(sizes) in (n, n + 1), f"{n} new tokens need {n} (or {n + 1}) calls, got {len(sizes)}"
    _is_greedy(model, out, T0, f"prompt of {T0}, {n} new tokens")


def _greedy_zero(L: Learner, g: torch.Generator) -> None:
    model = _random_model(g)
    prompt = torch.randint(0, model.config.vocab_size, (2, 5), generator=g)
    exact(L.greedy_with_cache(model, prompt, 0), prompt, quiet=True, name="n = 0 returns the prompt")


_NUCLEUS_FORBIDDEN = Forbidden(objects=((TopPLogitsWarper, "transformers' TopPLogitsWarper"),),
                               packages=("labkit", "transformers"))
_GREEDY_FORBIDDEN = Forbidden(packages=("labkit", "transformers"), methods=frozenset({"generate"}))

TASKS = (
    Task("08.A", "top-p (nucleus) filtering", ("nucleus_filter",), (
        Check("random logits, sizes and p == transformers TopPLogitsWarper", 2, _nucleus_hf),
        Check("the most probable token is always kept", 1, _nucleus_top_token),
        Check("shift invariance; rows of a batch are filtered independently", 1, _nucleus_shift_and_rows),
    ), _NUCLEUS_FORBIDDEN),
    Task("08.B", "the KV-cache greedy decode loop", ("greedy_with_cache",), (
        Check("random models and prompts == transformers generate(do_sample=False), each token an argmax", 2,
              _greedy_hf),
        Check("the prompt once, then one token per call into one cache", 2, _greedy_one_token_per_step),
        Check("n = 0 returns the prompt", 1, _greedy_zero),
    ), _GREEDY_FORBIDDEN),
)
