"""Chapter 17's text metrics against their references: BLEU == sacrebleu 2.6 (corpus and sentence, every
smoothing method, effective order, 13a tokenisation, several references, awkward segments), ROUGE-1/2/L ==
rouge-score 0.1.2 (with and without the Porter stemmer), SQuAD EM / token F1 on worked cases, pass@k ==
the exact binomial formula and the bias of the naive estimator; every bad input raises a named error."""
from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer

from labkit.evaluation import (bleu_from_statistics, closest_ref_length, corpus_bleu, exact_match, lcs_length,
                               pass_at_k, pass_at_k_binomial, pass_at_k_naive, rouge_l, rouge_n, rouge_scores,
                               sentence_bleu, token_f1, tokenize_13a)
from labkit.experiments.evaluation import load_generations

logging.getLogger("sacrebleu").setLevel(logging.ERROR)      # its "enable effective_order" advice, on purpose
WORDS = ("the cat sat on mat a dog ran . , 3.5 1,000 runs running ran-away &amp; \"q\" (x) don't "
         "Mat THE 10-4 x.y <skipped>").split()


def _sent(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_bleu_equals_sacrebleu_on_random_corpora(seed):
    rng = random.Random(seed)
    for _ in range(25):
        m, n_refs = rng.randint(1, 7), rng.randint(1, 3)
        hyps = [_sent(rng, 0, 13) for _ in range(m)]
        refs = [[_sent(rng, 1, 13) for _ in range(m)] for _ in range(n_refs)]
        for method in ("none", "floor", "add-k", "exp"):
            for eff in (False, True):
                ours = corpus_bleu(hyps, refs, smooth_method=method, effective_order=eff)
                ref = sacrebleu.corpus_bleu(hyps, refs, smooth_method=method, use_effective_order=eff)
                assert ours.score == pytest.approx(ref.score, abs=1e-9), (method, eff, hyps, refs)
                assert ours.bp == pytest.approx(ref.bp, abs=1e-12)
                assert (ours.sys_len, ours.ref_len) == (ref.sys_len, ref.ref_len)


@pytest.mark.parametrize("seed", [3, 4])
def test_sentence_bleu_equals_sacrebleu_with_custom_smoothing_values(seed):
    rng = random.Random(seed)
    for _ in range(60):
        hyp, refs = _sent(rng, 0, 12), [_sent(rng, 1, 12) for _ in range(rng.randint(1, 3))]
        for method, value in (("exp", None), ("floor", 0.3), ("add-k", 2), ("none", None)):
            ours = sentence_bleu(hyp, refs, smooth_method=method, smooth_value=value)
            ref = sacrebleu.sentence_bleu(hyp, refs, smooth_method=method, smooth_value=value)
            assert ours.score == pytest.approx(ref.score, abs=1e-9), (method, hyp, refs)


def test_bleu_on_the_shipped_set_and_edge_cases():
    items = load_generations()
    hyps = [it["output"] for it in items]
    refs = [[it["references"][j] if j < len(it["references"]) else None for it in items] for j in range(2)]
    assert corpus_bleu(hyps, refs).score == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)
    for it in items:
        assert sentence_bleu(it["output"], it["references"]).score == pytest.approx(
            sacrebleu.sentence_bleu(it["output"], it["references"]).score, abs=1e-9), it
    assert sentence_bleu("", ["a b c d"]).score == 0.0                      # empty hypothesis: BLEU 0, BP 0
    assert sentence_bleu("", ["a b c d"]).bp == 0.0
    same = "the cat is on the mat"
    assert corpus_bleu([same], [[same]]).score == pytest.approx(100.0)
    # the notes' worked example: BLEU-1 of "the the the the" vs "the cat is on the mat" = 0.5 · e^(−0.5)
    assert corpus_bleu(["the the the the"], [[same]], max_order=1).score == pytest.approx(100 * 0.5 * np.exp(-0.5))
    assert tokenize_13a('He said "3.5%" (1,000 items), ok.') == 'He said " 3.5 % " ( 1,000 items ) , ok .'
    assert closest_ref_length(5, [3, 7, 9]) == 3 and closest_ref_length(5, [6, 4]) == 4


def test_corpus_bleu_is_not_the_mean_of_sentence_bleus():
    hyps, refs = ["a b c d e f", "x"], [["a b c d e f", "y"]]
    mean = np.mean([sentence_bleu(h, [r]).score for h, r in zip(hyps, refs[0])])
    assert abs(corpus_bleu(hyps, refs).score - mean) > 1.0


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="references"):
        corpus_bleu(["a b"], [])
    with pytest.raises(ValueError, match="segments"):
        corpus_bleu(["a b", "c"], [["a b"]])
    with pytest.raises(TypeError, match="references"):
        corpus_bleu(["a b"], ["a b"])
    with pytest.raises(TypeError, match="hypotheses"):
        corpus_bleu("a b", [["a b"]])
    with pytest.raises(ValueError, match="empty"):
        sentence_bleu("a b", [])
    with pytest.raises(TypeError, match="wrap"):
        sentence_bleu("a b", "a b")
    with pytest.raises(ValueError, match="smooth_method"):
        sentence_bleu("a b", ["a b"], smooth_method="add-one")
    with pytest.raises(ValueError, match="stats"):
        bleu_from_statistics([1, 2, 3])
    with pytest.raises(ValueError, match="no reference"):
        corpus_bleu(["a"], [[None]])


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_equals_rouge_score(use_stemmer, seed):
    rng = random.Random(seed)
    vocab = ("the players were running jumping games teaches taught mathematics novels cat sat on mat "
             "! , é 中文").split()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rouge3", "rougeL"], use_stemmer=use_stemmer)
    stem = porter.PorterStemmer().stem if use_stemmer else None
    for _ in range(80):
        t = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 14)))
        p = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 14)))
        ref, ours = scorer.score(t, p), rouge_scores(t, p, ("rouge1", "rouge2", "rouge3", "rougeL"), stemmer=stem)
        for k in ref:
            assert tuple(ours[k]) == pytest.approx(tuple(ref[k]), abs=1e-12), (k, t, p)


def test_rouge_worked_examples_and_bad_input():
    r = rouge_l("the cat is on the mat", "the cat sat on the mat")          # the notes' example: P = R = 5/6
    assert (r.precision, r.recall) == pytest.approx((5 / 6, 5 / 6))
    assert lcs_length("abcbdab", "bdcaba") == 4                             # CLRS's example
    assert rouge_n("a b", "", 1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        rouge_n("a", "a", 0)
    with pytest.raises(ValueError, match="unknown ROUGE"):
        rouge_scores("a", "a", ("rougeLsum",))
    with pytest.raises(TypeError, match="text"):
        rouge_l(None, "a")


def test_exact_match_and_token_f1_squad_rules():
    assert exact_match("The  Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("an apple", ["a pear", "Apple."]) == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    # prediction "the big red barn" -> [big, red, barn]; gold "red barn" -> 2 common: P = 2/3, R = 1, F1 = 0.8
    assert token_f1("the big red barn", "a red barn") == pytest.approx(0.8)
    assert token_f1("barn barn red", "red barn") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))   # bag, clipped
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("", "x") == 0.0
    assert token_f1("北京大学", "北京") == pytest.approx(2 * 0.5 * 1 / 1.5)                           # CJK chars
    assert token_f1("cat", ["dog", "the cat"]) == 1.0
    with pytest.raises(ValueError, match="gold"):
        exact_match("a", [])
    with pytest.raises(TypeError, match="prediction"):
        token_f1(None, "a")


def test_pass_at_k_equals_the_binomial_formula_and_bad_input():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        c, k = int(rng.integers(0, n + 1)), int(rng.integers(1, n + 1))
        assert pass_at_k(n, c, k) == pytest.approx(pass_at_k_binomial(n, c, k), abs=1e-12)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0 and pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert 0.0 < pass_at_k(2000, 7, 100) < 1.0                                # no overflow for large n
    for args, match in (((5, 2, 6), "k must be"), ((5, 6, 1), "c \\(correct"), ((0, 0, 1), "n \\(samples")):
        with pytest.raises(ValueError, match=match):
            pass_at_k(*args)
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(5, 2, 1.0)


def test_unbiased_pass_at_k_is_unbiased_and_naive_is_biased_low():
    rng = np.random.default_rng(1)
    n, k, p, trials = 10, 5, 0.2, 20000
    c = rng.binomial(n, p, trials)
    truth = 1 - (1 - p) ** k
    unbiased = np.mean([pass_at_k(n, int(ci), k) for ci in c])
    naive = np.mean([pass_at_k_naive(n, int(ci), k) for ci in c])
    se = 0.5 / np.sqrt(trials)
    assert abs(unbiased - truth) < 4 * se
    assert truth - naive > 0.05                                               # measured bias ≈ 0.09 here
