"""Chapter 17's model-side evaluation: the Bradley–Terry fit == scikit-learn's logistic regression without
intercept (with and without an L2 prior) and recovers known strengths, Elo's invariants and order dependence,
bootstrap intervals; the log-prob judge == a per-row float64 loop and swap-and-average is antisymmetric;
perplexity / bits per byte and the n-gram model == explicit counting; contamination flags exactly the copied
items; and the shipped lm_scores.json reproduces at its cheapest point."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from labkit.evaluation import (NGramIndex, NGramLM, bits_per_byte, bootstrap_ratings, bradley_terry_fit,
                               causal_lm_nll, contamination_report, elo_expected, elo_ratings, first_slot_win_rate,
                               pairwise_logprob_margin, perplexity, position_consistency, simulate_battles,
                               swap_average, to_elo_points, word_ngrams)
from labkit.experiments import evaluation as ev
from labkit.model import Llama, LlamaConfig


def _design(a, b, m):
    X = np.zeros((a.size, m))
    X[np.arange(a.size), a] = 1.0
    X[np.arange(a.size), b] = -1.0
    return X


@pytest.mark.parametrize("seed,m", [(0, 5), (1, 9), (2, 3)])
def test_bradley_terry_equals_sklearn_logistic_regression(seed, m):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1, m)
    a, b, s = simulate_battles(theta, 1500, seed=seed)
    X = _design(a, b, m)
    ours = bradley_terry_fit(a, b, s, m)
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=5000).fit(X, s)
    w = lr.coef_[0]
    np.testing.assert_allclose(ours, w - w.mean(), atol=1e-6)
    assert abs(ours.sum()) < 1e-9
    np.testing.assert_allclose(ours, theta - theta.mean(), atol=0.25)        # recovers the known strengths
    C = 0.7
    lr2 = LogisticRegression(fit_intercept=False, C=C, tol=1e-12, max_iter=5000).fit(X, s)
    np.testing.assert_allclose(bradley_terry_fit(a, b, s, m, l2=1 / C), lr2.coef_[0], atol=1e-6)


def test_bradley_terry_with_ties_maximises_the_likelihood():
    theta = np.array([0.5, -0.2, 0.0, -0.3])
    a, b, s = simulate_battles(theta, 800, seed=3, tie_margin=0.2)
    assert (s == 0.5).any()
    th = bradley_terry_fit(a, b, s, 4)

    def ll(t):
        p = 1 / (1 + np.exp(-(t[a] - t[b])))
        return np.sum(s * np.log(p) + (1 - s) * np.log(1 - p))
    rng = np.random.default_rng(0)
    assert all(ll(th) >= ll(th + 0.01 * rng.normal(size=4)) for _ in range(20))


def test_elo_invariants_worked_example_and_order_dependence():
    assert elo_expected(1500, 1600) == pytest.approx(0.35993500019711494)   # the notes' 0.360
    r = elo_ratings(np.array([0]), np.array([1]), np.array([1.0]), 2, k=32, initial=1500)
    # R_A = 1500, R_B = 1600 in the notes; here both start at 1500: E = 0.5, a win moves by K/2 = 16
    assert r.tolist() == [1516.0, 1484.0]
    r0 = np.array([1500.0, 1600.0])
    assert r0[0] + 32 * (1 - elo_expected(1500, 1600)) == pytest.approx(1520.48, abs=0.01)
    theta = np.array([-1.0, 0.0, 0.3, 1.0])
    a, b, s = simulate_battles(theta, 600, seed=5)
    e1 = elo_ratings(a, b, s, 4, k=32)
    assert e1.sum() == pytest.approx(4000.0)                                 # zero-sum updates
    p = np.random.default_rng(1).permutation(a.size)
    e2 = elo_ratings(a[p], b[p], s[p], 4, k=32)
    assert np.abs(e1 - e2).max() > 5                                         # same games, other order
    np.testing.assert_allclose(bradley_terry_fit(a[p], b[p], s[p], 4), bradley_terry_fit(a, b, s, 4), atol=1e-9)
    np.testing.assert_allclose(to_elo_points(np.array([0.0, math.log(10)])), [1000 - 200, 1000 + 200])


def test_bootstrap_intervals_cover_the_truth_and_shrink_with_data():
    theta = np.array([-0.8, -0.2, 0.1, 0.9])
    widths = []
    for n in (400, 3200):
        a, b, s = simulate_battles(theta, n, seed=7)
        bs = bootstrap_ratings(a, b, s, 4, n_boot=60, seed=1)
        lo, hi = np.percentile(bs, [2.5, 97.5], axis=0)
        widths.append(np.mean(hi - lo))
    assert np.all((lo <= theta) & (theta <= hi))
    assert widths[1] < 0.6 * widths[0]                                       # ≈ 1/√8 of the width


def test_pairwise_bad_input():
    a, b, s = np.array([0, 1]), np.array([1, 2]), np.array([1.0, 0.0])
    with pytest.raises(ValueError, match="same length"):
        elo_ratings(a, b[:1], s, 3)
    with pytest.raises(ValueError, match="n_players"):
        bradley_terry_fit(a, b, s, 2)
    with pytest.raises(ValueError, match="itself"):
        elo_ratings(np.array([1]), np.array([1]), np.array([1.0]), 3)
    with pytest.raises(ValueError, match="0.5"):
        elo_ratings(a, b, np.array([2.0, 0.0]), 3)
    with pytest.raises(ValueError, match="does not exist"):
        bradley_terry_fit(np.array([0, 0]), np.array([1, 1]), np.array([1.0, 1.0]), 2)
    with pytest.raises(ValueError, match="k \\(the Elo"):
        elo_ratings(a, b, s, 3, k=0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ratings(a, b, s, 3, n_boot=0)


def _tiny_model(seed: int) -> Llama:
    torch.manual_seed(seed)
    cfg = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=64, hidden_dim=64)
    return Llama(cfg).eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_logprob_judge_equals_a_float64_loop_and_swap_average_is_antisymmetric(seed):
    model = _tiny_model(seed)
    g = torch.Generator().manual_seed(seed)
    B, P, R1, R2, sep = 5, 3, 4, 6, [7, 8]
    pr, x1, x2 = (torch.randint(0, 50, (B, n), generator=g) for n in (P, R1, R2))
    d = pairwise_logprob_margin(model, pr, x1, x2, sep)
    for i in range(B):
        row = torch.cat([pr[i], x1[i], torch.tensor(sep), pr[i], x2[i]])
        with torch.no_grad():
            lp = torch.log_softmax(model(row[None, :-1])[0].double(), -1)
        tok_lp = [float(lp[t - 1, row[t]]) for t in range(1, row.numel())]
        first = np.mean(tok_lp[P - 1:P - 1 + R1])
        second = np.mean(tok_lp[len(tok_lp) - R2:])
        assert float(d[i]) == pytest.approx(first - second, abs=1e-6)
    d_ab = pairwise_logprob_margin(model, pr, x1, x2[:, :R1], sep).numpy()
    d_ba = pairwise_logprob_margin(model, pr, x2[:, :R1], x1, sep).numpy()
    np.testing.assert_allclose(swap_average(d_ab, d_ba), -swap_average(d_ba, d_ab))
    assert position_consistency(np.array([1.0, 1.0]), np.array([-1.0, 1.0])) == 0.5
    assert first_slot_win_rate(np.array([1.0, 1.0]), np.array([1.0, -1.0])) == 0.75
    with pytest.raises(ValueError, match="batch size"):
        pairwise_logprob_margin(model, pr, x1[:2], x2, sep)
    with pytest.raises(TypeError, match="long tensor"):
        pairwise_logprob_margin(model, pr.float(), x1, x2, sep)
    with pytest.raises(ValueError, match="same shape"):
        swap_average(d_ab, d_ab[:2])


@pytest.mark.parametrize("seed,window", [(0, 7), (1, 16)])
def test_causal_lm_nll_equals_a_full_context_sum_and_conversions(seed, window):
    model = _tiny_model(seed)
    ids = torch.randint(0, 50, (45,), generator=torch.Generator().manual_seed(seed)).tolist()
    nll, n = causal_lm_nll(model, ids, window, batch_size=2)
    want = 0.0
    for s in range(0, len(ids) - 1, window):                                 # each window on its own, unbatched
        chunk = torch.tensor(ids[s:s + window + 1])
        with torch.no_grad():
            lp = torch.log_softmax(model(chunk[None, :-1])[0].double(), -1)
        want -= float(lp.gather(-1, chunk[1:, None]).sum())
    assert n == 44 and nll == pytest.approx(want, rel=1e-5)
    assert perplexity(nll, n) == pytest.approx(math.exp(want / 44), rel=1e-5)
    assert bits_per_byte(math.log(2) * 80, 10) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="window"):
        causal_lm_nll(model, ids, 0)
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(1.0, 0)


@pytest.mark.parametrize("n,V,k", [(1, 5, 1.0), (2, 7, 0.5), (3, 4, 0.1)])
def test_ngram_lm_equals_explicit_counting(n, V, k):
    rng = np.random.default_rng(n)
    train, test = rng.integers(0, V, 300), rng.integers(0, V, 40)
    lm = NGramLM(n, V, k).fit(train)
    pad = [V] * (n - 1)
    tr, te = pad + train.tolist(), pad + test.tolist()
    full = Counter(tuple(tr[i:i + n]) for i in range(len(train)))
    ctx = Counter(tuple(tr[i:i + n - 1]) for i in range(len(train)))
    want = -sum(math.log((full[tuple(te[i:i + n])] + k) / (ctx[tuple(te[i:i + n - 1])] + k * V))
                for i in range(3, len(test)))
    assert lm.nll(test, 3) == pytest.approx(want, rel=1e-12)
    probs = [math.exp(-NGramLM(n, V, k).fit(train).nll(np.array(test[:5].tolist() + [x]), 5)) for x in range(V)]
    assert sum(probs) == pytest.approx(1.0)                                  # a distribution over the next symbol
    with pytest.raises(ValueError, match="vocab_size"):
        lm.nll([V])
    with pytest.raises(ValueError, match="k \\(add-k"):
        NGramLM(2, V, 0.0)


def test_contamination_flags_exactly_the_copied_items():
    train = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    idx = NGramIndex(train, 5)
    items = ["zero one two three four five", "alpha beta gamma delta epsilon", "one two three four",
             "Five, SIX seven eight nine!"]
    assert [idx.overlap(t) for t in items] == [0.5, 0.0, 0.0, 1.0]
    assert contamination_report(idx, items) == {"flagged": 0.5, "mean_overlap": 0.375}
    assert len(word_ngrams("a b c", 2)) == 2 and len(idx) == 11
    with pytest.raises(ValueError, match="n must be"):
        word_ngrams("a", 0)
    with pytest.raises(ValueError, match="non-empty"):
        contamination_report(idx, [])


def test_shipped_lm_scores_reproduce_at_the_cheapest_point():
    shipped = ev.load_lm_scores()
    val = ev.load_shakespeare("val")[:shipped["slice_chars"]]
    names = ("tiny_llama", "byte_unigram", "byte_4gram")
    again = ev.score_models(val, names)
    for name in names:
        for key in ("nll", "n_units", "n_bytes", "bits_per_byte"):
            assert again[name][key] == pytest.approx(shipped["slice"][name][key], rel=1e-5, abs=1e-6), (name, key)
    full = shipped["full"]
    assert full["tiny_llama"]["perplexity"] == pytest.approx(41.9, abs=0.05)                  # chapter 07's 41.9
    assert full["byte_4gram"]["perplexity"] < full["tiny_llama"]["perplexity"]                 # per unit: "better"
    assert full["byte_4gram"]["bits_per_byte"] > full["tiny_llama"]["bits_per_byte"]           # per byte: worse
    with pytest.raises(ValueError, match="unknown model"):
        ev.score_models(val, ("gpt5",))


def test_more_bad_input():
    with pytest.raises(ValueError, match="n_units"):
        perplexity(1.0, 0)
    with pytest.raises(ValueError, match="call fit"):
        NGramLM(2, 5).nll([1, 2])
    with pytest.raises(ValueError, match="overflows"):
        NGramLM(8, 1024)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        causal_lm_nll(_tiny_model(0), [3], 8)
    with pytest.raises(ValueError, match="theta"):
        simulate_battles([1.0], 10)
    with pytest.raises(TypeError, match="integer player"):
        elo_ratings(np.array([0.0]), np.array([1.0]), np.array([1.0]), 2)
    with pytest.raises(ValueError, match="non-empty"):
        position_consistency(np.array([]), np.array([]))
