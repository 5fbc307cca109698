"""labkit.generate: processors == transformers' logits processors, decoding == HF generate, cache == no cache."""
from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from labkit.core.check import close, exact
from labkit.model import (
    Llama,
    LlamaConfig,
    apply_repetition_penalty,
    apply_temperature,
    ban_repeated_ngrams,
    beam_search,
    generate,
    is_sampling,
    no_repeat_ngram_mask,
    seq_rep_n,
    sequence_logprob,
    to_hf,
    top_k_filter,
    top_p_filter,
)


def _logits(seed: int, B: int = 3, V: int = 37, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, V, generator=g) * 2
    if ties:  # many exact ties: round to a coarse grid
        z = (z * 2).round() / 2
    return z


def _ids(seed: int, B: int = 3, T: int = 13, V: int = 37) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, V, (B, T), generator=g)


@pytest.fixture(scope="module")
def tiny() -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=53, dim=48, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    model = Llama(cfg).eval()
    with torch.no_grad():  # sharpen the random model so decoding choices are not near-ties
        model.lm_head.weight.mul_(20)
    return model


# ------------------------------------------------------------------------------------------ processors
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_processors_match_transformers(seed: int, ties: bool) -> None:
    z, ids = _logits(seed, ties=ties), _ids(seed)
    for T in (0.3, 0.7, 1.0, 2.5):
        exact(apply_temperature(z, T), TemperatureLogitsWarper(T)(ids, z.clone()), quiet=True)
    for k in (1, 2, 5, 36, 37, 100):
        exact(top_k_filter(z, k), TopKLogitsWarper(k)(ids, z.clone()), quiet=True)
    for p in (0.01, 0.3, 0.5, 0.9, 0.95, 1.0):
        exact(top_p_filter(z, p), TopPLogitsWarper(p)(ids, z.clone()), quiet=True)
    for pen in (0.5, 1.0, 1.2, 2.0):
        exact(apply_repetition_penalty(z, ids, pen), RepetitionPenaltyLogitsProcessor(pen)(ids, z.clone()),
              quiet=True)
    for n in (1, 2, 3, 5):
        exact(ban_repeated_ngrams(z, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, z.clone()), quiet=True)


def test_no_repeat_ngram_on_repetitive_input_matches_transformers() -> None:
    ids = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2], [4, 4, 4, 4, 4, 4, 4, 4]])
    z = _logits(5, B=2, V=8)
    for n in (1, 2, 3, 4):
        exact(ban_repeated_ngrams(z, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, z.clone()), quiet=True)
    mask = no_repeat_ngram_mask(ids, 3, 8)
    assert mask[0].nonzero().flatten().tolist() == [3]      # "1 2" was followed by 3 before
    assert mask[1].nonzero().flatten().tolist() == [4]


def test_processors_do_not_modify_input() -> None:
    z, ids = _logits(0), _ids(0)
    z0 = z.clone()
    for f in (lambda: top_k_filter(z, 3), lambda: top_p_filter(z, 0.5), lambda: apply_temperature(z, 0.5),
              lambda: apply_repetition_penalty(z, ids, 1.3), lambda: ban_repeated_ngrams(z, ids, 2)):
        f()
        assert torch.equal(z, z0)


def test_repetition_penalty_is_sign_aware() -> None:
    z = torch.tensor([[2.0, -2.0, 0.5, -0.5]])
    out = apply_repetition_penalty(z, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 0.5, -0.5]]          # both seen tokens go down, unseen unchanged
    literal = z.clone()
    literal[0, :2] /= 2.0                                    # the literal CTRL formula divides every logit
    assert literal[0, 1] > z[0, 1]                           # ... which *raises* a negative logit
    p_before, p_after = z.softmax(-1), out.softmax(-1)
    assert (p_after[0, :2] <= p_before[0, :2]).all()


def test_top_p_keeps_smallest_set_with_mass_at_least_p() -> None:
    z = _logits(3, B=1, V=50)
    probs = z.softmax(-1)[0]
    for p in (0.2, 0.5, 0.8, 0.95):
        kept = torch.isfinite(top_p_filter(z, p))[0]
        mass = probs[kept].sum()
        assert mass >= p - 1e-6
        smallest_kept = probs[kept].min()
        assert mass - smallest_kept < p                      # dropping the last kept token falls below p
    assert int(torch.isfinite(top_k_filter(z, 1)).sum()) == 1
    assert torch.equal(top_k_filter(z, 1).argmax(-1), z.argmax(-1))


def test_temperature_entropy_increases() -> None:
    z = _logits(4, B=1, V=30)
    ent = []
    for T in (0.1, 0.5, 1.0, 2.0, 10.0):
        p = apply_temperature(z, T).softmax(-1)
        ent.append(float(-(p * p.clamp_min(1e-30).log()).sum()))
    assert ent == sorted(ent)
    close(apply_temperature(z, 1.0), z, atol=0.0, quiet=True)


def test_seq_rep_n() -> None:
    assert seq_rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(0.6)
    assert seq_rep_n([1, 2, 3, 4], 2) == 0.0


# ------------------------------------------------------------------------------------------- decoding
def test_greedy_matches_hf_generate_and_cache_matches_no_cache(tiny: Llama) -> None:
    hf = to_hf(tiny).eval()
    prompt = torch.tensor([[5, 9, 1, 7], [3, 3, 8, 2]])
    ours = generate(tiny, prompt, 12)
    ours_nc = generate(tiny, prompt, 12, use_cache=False)
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                      pad_token_id=0)
    exact(ours, ref, quiet=True)
    exact(ours_nc, ours, quiet=True)
    exact(generate(tiny, prompt, 0), prompt, quiet=True)


def test_greedy_with_penalties_matches_hf(tiny: Llama) -> None:
    hf = to_hf(tiny).eval()
    prompt = torch.tensor([[5, 9, 1, 7, 2, 8]])
    ours = generate(tiny, prompt, 15, repetition_penalty=1.3, no_repeat_ngram_size=2)
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=15, do_sample=False,
                      repetition_penalty=1.3, no_repeat_ngram_size=2, pad_token_id=0)
    exact(ours, ref, quiet=True)
    grams = [tuple(ours[0, i:i + 2].tolist()) for i in range(ours.shape[1] - 1)]
    assert len(grams) == len(set(grams))                     # no repeated bigram anywhere


@pytest.mark.parametrize("num_beams", [2, 3])
def test_beam_search_matches_hf(tiny: Llama, num_beams: int) -> None:
    hf = to_hf(tiny).eval()
    prompt = torch.tensor([[5, 9, 1], [2, 4, 6]])
    ours = generate(tiny, prompt, 6, num_beams=num_beams)
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                      num_beams=num_beams, pad_token_id=0, eos_token_id=None, length_penalty=1.0)
    exact(ours, ref, quiet=True)
    exact(beam_search(tiny, prompt, 6, num_beams=num_beams, use_cache=False), ours, quiet=True)


def test_beam_one_is_greedy_and_beam_never_worse(tiny: Llama) -> None:
    prompt = torch.tensor([[11, 2, 30]])
    greedy = generate(tiny, prompt, 5)
    exact(beam_search(tiny, prompt, 5, num_beams=1), greedy, quiet=True)
    lp_greedy = sequence_logprob(tiny, greedy, 3)
    for k in (2, 4, 8):
        lp_beam = sequence_logprob(tiny, generate(tiny, prompt, 5, num_beams=k), 3)
        assert float(lp_beam) >= float(lp_greedy) - 1e-5


def test_beam_search_exhaustive_on_two_steps(tiny: Llama) -> None:
    """With num_beams ≥ V the search is exhaustive: it finds the best 2-token continuation."""
    prompt = torch.tensor([[1, 2]])
    V = tiny.config.vocab_size
    best = beam_search(tiny, prompt, 2, num_beams=V)
    a, b = torch.meshgrid(torch.arange(V), torch.arange(V), indexing="ij")
    cand = torch.cat([prompt.repeat(V * V, 1), a.reshape(-1, 1), b.reshape(-1, 1)], dim=1)
    lp = sequence_logprob(tiny, cand, 2)
    exact(best[0], cand[lp.argmax()], quiet=True)


def test_sequence_logprob_by_hand(tiny: Llama) -> None:
    ids = torch.tensor([[4, 8, 15, 16, 23]])
    logp = torch.log_softmax(tiny(ids), -1)
    by_hand = sum(logp[0, t - 1, ids[0, t]] for t in range(2, 5))
    close(sequence_logprob(tiny, ids, 2), by_hand.reshape(1), atol=1e-5, quiet=True)


def test_sampling_is_seeded_and_stays_in_top_k(tiny: Llama) -> None:
    prompt = torch.tensor([[5, 9]])
    a = generate(tiny, prompt, 10, top_k=3, generator=torch.Generator().manual_seed(1))
    b = generate(tiny, prompt, 10, top_k=3, generator=torch.Generator().manual_seed(1))
    c = generate(tiny, prompt, 10, top_k=3, generator=torch.Generator().manual_seed(1), use_cache=False)
    exact(a, b, quiet=True)
    exact(a, c, quiet=True)
    logits = tiny(a)[0, 1:-1]                                # the distribution each new token came from
    for t, row in zip(a[0, 2:].tolist(), logits):
        assert t in torch.topk(row, 3).indices.tolist()


def test_top_k_one_sampling_equals_greedy(tiny: Llama) -> None:
    prompt = torch.tensor([[7, 7, 3]])
    exact(generate(tiny, prompt, 8, top_k=1, generator=torch.Generator().manual_seed(0)),
          generate(tiny, prompt, 8), quiet=True)


def test_eos_stops_and_pads(tiny: Llama) -> None:
    prompt = torch.tensor([[5, 9, 1]])
    free = generate(tiny, prompt, 8)
    eos = int(free[0, 5])                                    # the 3rd generated token
    out = generate(tiny, prompt, 8, eos_token_id=eos)
    first = out[0, 3:].tolist().index(eos)
    assert first <= 2 and out.shape[1] == 3 + first + 1


def test_sampling_rule() -> None:
    assert not is_sampling()
    assert is_sampling(temperature=0.7) and is_sampling(top_k=5) and is_sampling(top_p=0.9)
    assert is_sampling(do_sample=True) and not is_sampling(top_k=5, do_sample=False)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input(tiny: Llama) -> None:
    z, ids, prompt = _logits(0), _ids(0), torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="greedy"):
        generate(tiny, prompt, 3, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(z, -1.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny, prompt, 3, top_p=1.5)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(z, 0.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(tiny, prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="num_beams"):
        generate(tiny, prompt, 3, num_beams=0)
    with pytest.raises(ValueError, match="beam"):
        generate(tiny, prompt, 3, num_beams=2, top_p=0.9)
    with pytest.raises(ValueError, match="repetition_penalty"):
        apply_repetition_penalty(z, ids, 0.0)
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        top_k_filter(z[0], 2)
    with pytest.raises(ValueError, match="batch"):
        apply_repetition_penalty(z, ids[:2], 1.2)
    with pytest.raises(ValueError, match="prompt_len"):
        sequence_logprob(tiny, prompt, 0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny, prompt, -1)


def test_beam_search_with_eos_finishes_and_pads(tiny: Llama) -> None:
    prompt = torch.tensor([[5, 9, 1], [2, 4, 6]])
    free = beam_search(tiny, prompt, 6, num_beams=3)
    # a token row 1's best beam emits at step 2 (row 0's choice, free[0, 4], is avoided once it is EOS, so
    # with it no row would finish and the padding check below would check nothing)
    eos = int(free[1, 4])
    assert int(free[1, 3]) != eos                             # so EOS first appears at step 2
    out = beam_search(tiny, prompt, 6, num_beams=3, eos_token_id=eos)
    assert out.shape == (2, 3 + 6)                            # row 0 runs to the end, so no column is dropped
    rows = out[:, 3:].tolist()
    finished = [r for r in rows if eos in r]
    assert finished, "no row emitted EOS: the padding check would be vacuous"
    for row in finished:                                      # everything after the first EOS is EOS padding
        first = row.index(eos)
        assert first < len(row) - 1 and set(row[first:]) == {eos}
    assert rows[1] == free[1, 3:5].tolist() + [eos] * 4       # row 1 stops at its EOS and is padded
    lp_free = sequence_logprob(tiny, free[:1], 3)
    assert torch.isfinite(lp_free).all()
