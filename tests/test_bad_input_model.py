"""labkit.model log-probs and logits processors on bad input (issue 16, "no silent failures"):
float64 stays float64, ids outside the vocabulary and impossible settings raise errors that name the argument."""
from __future__ import annotations

import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from labkit.model import (
    apply_repetition_penalty,
    apply_temperature,
    ban_repeated_ngrams,
    no_repeat_ngram_mask,
    sequence_logprobs,
    token_logprobs,
    top_k_filter,
)


def _ref_token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Independent float64 reference: log p = z - log Σ exp z, read at the next token, one by one."""
    B, T, _ = logits.shape
    out = torch.empty(B, T - 1, dtype=torch.float64)
    for b in range(B):
        for t in range(T - 1):
            z = logits[b, t].double()
            y = max(int(labels[b, t + 1]), 0)
            out[b, t] = z[y] - torch.logsumexp(z, 0)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logprobs_keep_float64(seed: int) -> None:
    """float64 logits give float64 log-probs (they used to be computed in float32: 4e-7 off)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 9, 31, generator=g, dtype=torch.float64) * 6
    labels = torch.randint(0, 31, (3, 9), generator=g)
    labels[1, 6:] = -100
    lp = token_logprobs(logits, labels)
    assert lp.dtype == torch.float64
    ref = _ref_token_logprobs(logits, labels)
    torch.testing.assert_close(lp, ref, atol=1e-12, rtol=0)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[:, 3:] = True
    keep = (mask & (labels != -100))[:, 1:]
    seq = sequence_logprobs(logits, labels, mask)
    assert seq.dtype == torch.float64
    torch.testing.assert_close(seq, (ref * keep).sum(-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(sequence_logprobs(logits, labels, mask, average=True),
                               (ref * keep).sum(-1) / keep.sum(-1), atol=1e-12, rtol=0)
    # half precision is still computed in float32
    assert token_logprobs(logits.to(torch.bfloat16), labels).dtype == torch.float32


def test_logprobs_refuse_ids_outside_the_vocabulary() -> None:
    logits = torch.randn(2, 5, 7)
    for bad in (7, 100, -1, -5):
        labels = torch.zeros(2, 5, dtype=torch.long)
        labels[1, 3] = bad
        with pytest.raises(ValueError, match=rf"`labels` holds id {bad} outside \[0, V=7\) \(or -100 = ignore\)"):
            token_logprobs(logits, labels)
    with pytest.raises(TypeError, match="`labels` must be an integer"):
        token_logprobs(logits, torch.zeros(2, 5))
    with pytest.raises(TypeError, match="`logits` must be a floating-point tensor"):
        token_logprobs(logits.long(), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="`mask` must be bool or hold only 0 and 1"):
        sequence_logprobs(logits, torch.zeros(2, 5, dtype=torch.long), torch.full((2, 5), 0.5))
    labels = torch.full((2, 5), -100)
    labels[:, 2] = 3
    assert token_logprobs(logits, labels).shape == (2, 4)        # -100 itself stays allowed


def test_repetition_penalty_refuses_padding_and_out_of_vocab_ids() -> None:
    z = torch.randn(2, 6)
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ref = RepetitionPenaltyLogitsProcessor(1.3)(ids, z.clone())
    assert torch.equal(apply_repetition_penalty(z, ids, 1.3), ref)
    with pytest.raises(ValueError, match=r"`input_ids` holds id -100 outside \[0, V=6\)"):
        apply_repetition_penalty(z, torch.tensor([[0, 1, -100], [3, 4, 5]]), 1.3)   # used: torch's gather error
    with pytest.raises(ValueError, match=r"`input_ids` holds id 6 outside \[0, V=6\)"):
        apply_repetition_penalty(z, torch.tensor([[0, 1, 6], [3, 4, 5]]), 1.3)
    for pen in (float("inf"), float("nan"), 0.0, True):
        with pytest.raises(ValueError, match="repetition_penalty"):
            apply_repetition_penalty(z, ids, pen)


def test_no_repeat_ngram_refuses_negative_ids() -> None:
    ids = torch.tensor([[1, 2, 1, 2, 1]])
    z = torch.randn(1, 4)
    assert torch.equal(ban_repeated_ngrams(z, ids, 2), NoRepeatNGramLogitsProcessor(2)(ids, z.clone()))
    with pytest.raises(ValueError, match=r"holds id -1 outside \[0, V=4\)"):
        no_repeat_ngram_mask(torch.tensor([[1, -1, 1, -1, 1]]), 2, 4)   # used to ban token 3 (= index -1) silently
    with pytest.raises(ValueError, match="vocab_size"):
        no_repeat_ngram_mask(ids, 2, 0)


def test_sampling_settings_must_be_finite_and_logits_float() -> None:
    z = torch.randn(2, 5)
    with pytest.raises(ValueError, match="temperature must be finite"):
        apply_temperature(z, float("inf"))                   # used to return all zeros
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        top_k_filter(torch.ones(2, 5, dtype=torch.long), 2)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_seq_rep_n_rejects_impossible_n(n):
    from labkit.model import seq_rep_n

    with pytest.raises(ValueError, match="n must be a positive int"):
        seq_rep_n([1, 2, 1, 2], n)
    assert seq_rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)   # the docstring's example still holds


@pytest.mark.parametrize("base", [0.0, 1.0, -10000.0])
def test_rope_cos_sin_rejects_base_at_most_one(base):
    from labkit.blocks.rope import rope_cos_sin

    with pytest.raises(ValueError, match="base must be > 1"):
        rope_cos_sin(torch.arange(4), 8, base=base)
    cos, sin = rope_cos_sin(torch.arange(4), 8, base=1.5)   # a legal (if unusual) base still works
    assert torch.isfinite(cos).all() and torch.isfinite(sin).all()


def test_padding_stats_rejects_empty_lengths():
    from labkit.finetune.sft.packing import padding_stats

    with pytest.raises(ValueError, match="lengths is empty"):
        padding_stats([], 8, "ffd")
    assert padding_stats([3, 5], 8, "ffd")["waste"] == 0.0
