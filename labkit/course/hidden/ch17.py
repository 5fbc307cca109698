"""Hidden tests of chapter 17's lab tasks: corpus BLEU, LCS and ROUGE-L, the Bradley–Terry fit of an arena.

References (none of them labkit's): ``sacrebleu.corpus_bleu`` 2.6 (13a tokens, all four smoothing methods, one to
three reference streams, ``None`` references); ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])`` with and
without the Porter stemmer and its own LCS table; scikit-learn's ``LogisticRegression`` without intercept and
without penalty (ties as two half-weighted rows), and the known strengths of a large simulated arena.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from nltk.stem import porter
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from sklearn.linear_model import LogisticRegression

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.evaluation import tokenize_13a

__all__ = ["TASKS"]

_WORDS = ("the a cat dog sat on mat ran to it is . , ! ? ( ) 3.5 1,000 10-4 don't Mat THE &amp; \"q\" x-y "
          "café").split()


def _rng(g: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


def _sent(r: random.Random, lo: int, hi: int) -> str:
    return " ".join(r.choice(_WORDS) for _ in range(r.randint(lo, hi)))


# ---- 17.A corpus_bleu_score -------------------------------------------------------------------------------
def _bleu(L: Learner, hyps, refs, method: str, what: str, max_order: int = 4) -> None:
    got = L.corpus_bleu_score(list(hyps), [list(s) for s in refs], smooth_method=method, max_order=max_order)
    want = BLEU(smooth_method=method, max_ngram_order=max_order).corpus_score(hyps, refs).score
    close(float(got), want, atol=1e-8, quiet=True, name=f"{what} (smooth_method={method!r}, max_order={max_order}) "
          f"== sacrebleu.corpus_bleu; hypotheses={hyps!r}, references={refs!r}")


def _bleu_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(12):
        m, n_refs = r.randint(1, 6), r.randint(1, 3)
        hyps = [_sent(r, 1, 14) for _ in range(m)]
        refs = [[_sent(r, 1, 14) for _ in range(m)] for _ in range(n_refs)]
        for method in ("exp", "floor", "add-k", "none"):
            _bleu(L, hyps, refs, method, f"random corpus of {m} segments, {n_refs} reference stream(s)")


def _bleu_edges(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    same = [_sent(r, 5, 10) for _ in range(3)]
    close(float(L.corpus_bleu_score(same, [same])), 100.0, atol=1e-8, quiet=True, name="identical corpus: BLEU 100")
    hyps = ["", _sent(r, 3, 8), "x"]
    refs = [[_sent(r, 3, 8), _sent(r, 3, 8), "y z w"]]
    for method in ("exp", "none"):
        _bleu(L, hyps, refs, method, "an empty and a one-word hypothesis (brevity penalty)")
    _bleu(L, ["a b c d", "e f"], [["a b x d", "e g"]], "exp", "no 4-gram (and no bigram in segment 2) match")
    _bleu(L, ["a b c d", "e f"], [["a b x d", "e g"]], "none", "no 4-gram match without smoothing: 0")
    exact(float(L.corpus_bleu_score([""], [["a b"]])), 0.0, quiet=True, name="all hypotheses empty: BLEU 0")
    hyps = [_sent(r, 2, 9) for _ in range(4)]
    refs = [[_sent(r, 2, 9) for _ in range(4)], [_sent(r, 2, 9), None, _sent(r, 2, 9), None]]
    _bleu(L, hyps, refs, "exp", "a second stream with None (segments with one reference)")
    _bleu(L, hyps, refs, "floor", "max_order 2", max_order=2)
    _bleu(L, ["a a a a"], [["a b c d e f"]], "exp", "clipping: 'a a a a' against one 'a'", max_order=1)


def _bleu_tied_lengths(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(6):
        words = [r.choice(("a", "b", "c", "d", "e")) for _ in range(r.randint(4, 9))]
        longer, shorter = " ".join(words + ["w", "w"]), " ".join(words[:-2])     # n + 2 and n − 2 tokens
        for method in ("exp", "add-k"):
            _bleu(L, [" ".join(words)], [[longer], [shorter]], method,
                  "two references equally far from the output length (the shorter one counts)")
            _bleu(L, [" ".join(words)], [[shorter], [longer]], method, "the same with the streams swapped")


# ---- 17.B lcs_length, rouge_l ------------------------------------------------------------------------------
_ROUGE_WORDS = ("the players were running jumping games teaches taught cat cats sat on mat running ran "
                "! , 3 x9 é 中文 THE Mat").split()


def _lcs_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(25):
        k = r.randint(2, 6)
        a = [f"t{r.randrange(k)}" for _ in range(r.randint(0, 15))]
        b = [f"t{r.randrange(k)}" for _ in range(r.randint(0, 15))]
        want = rouge_scorer._lcs_table(a, b)[-1][-1] if a and b else 0
        exact(int(L.lcs_length(list(a), list(b))), int(want), quiet=True, name=f"LCS of {a} and {b}")
    exact(int(L.lcs_length(list("abcbdab"), list("bdcaba"))), 4, quiet=True, name="LCS('abcbdab', 'bdcaba') = 4")


def _rouge_check(L: Learner, t: str, p: str, use_stemmer: bool) -> None:
    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer).score(t, p)["rougeL"]
    stem = porter.PorterStemmer().stem if use_stemmer else None
    got = tuple(float(v) for v in L.rouge_l(t, p, stem))
    close(np.array(got), np.array(tuple(ref)), atol=1e-12, quiet=True,
          name=f"rouge_l(target={t!r}, prediction={p!r}, stemmer={'porter' if use_stemmer else None}) == rouge-score")


def _rouge_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(30):
        t = " ".join(r.choice(_ROUGE_WORDS) for _ in range(r.randint(1, 14)))
        p = " ".join(r.choice(_ROUGE_WORDS) for _ in range(r.randint(1, 14)))
        _rouge_check(L, t, p, False)


def _rouge_stemmer(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(20):
        t = " ".join(r.choice(_ROUGE_WORDS) for _ in range(r.randint(1, 12)))
        p = " ".join(r.choice(_ROUGE_WORDS) for _ in range(r.randint(1, 12)))
        _rouge_check(L, t, p, True)


def _rouge_edges(L: Learner, g: torch.Generator) -> None:
    for t, p in (("the cat is on the mat", "the cat sat on the mat"), ("", "a b"), ("a b", ""), ("中文 é", "中文"),
                 ("Hello, WORLD!!", "hello world"), ("a-b c_d", "a b c d")):
        _rouge_check(L, t, p, False)


# ---- 17.C bradley_terry_fit --------------------------------------------------------------------------------
def _arena(r: np.random.Generator, m: int, n: int, ties: bool = False):
    theta = r.normal(0, 0.8, m)
    a = r.integers(0, m, n)
    b = (a + r.integers(1, m, n)) % m
    p = 1 / (1 + np.exp(-(theta[a] - theta[b])))
    u = r.random(n)
    s = (u < p).astype(np.float64)
    if ties:
        s[np.abs(u - p) < 0.08] = 0.5
    return theta, a, b, s


def _sklearn_bt(a, b, s, m) -> np.ndarray:
    X = np.zeros((a.size, m))
    X[np.arange(a.size), a], X[np.arange(a.size), b] = 1.0, -1.0
    X2, y, w = np.vstack([X, X]), np.r_[np.ones(a.size), np.zeros(a.size)], np.r_[s, 1 - s]
    keep = w > 0
    coef = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=10000).fit(
        X2[keep], y[keep], sample_weight=w[keep]).coef_[0]
    return coef - coef.mean()


def _np_rng(g: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


def _bt_random(L: Learner, g: torch.Generator) -> None:
    r = _np_rng(g)
    for m, n in ((int(r.integers(3, 10)), int(r.integers(400, 2500))), (2, 300), (int(r.integers(5, 12)), 1200)):
        _, a, b, s = _arena(r, m, n)
        got = np.asarray(L.bradley_terry_fit(a.copy(), b.copy(), s.copy(), m), dtype=np.float64)
        exact(tuple(got.shape), (m,), quiet=True, name=f"one strength per player ({m} players)")
        close(float(got.mean()), 0.0, atol=1e-8, quiet=True, name="strengths shifted to mean 0")
        close(got, _sklearn_bt(a, b, s, m), atol=1e-5, quiet=True,
              name=f"θ == sklearn LogisticRegression without intercept ({m} players, {n} battles)")


def _bt_ties(L: Learner, g: torch.Generator) -> None:
    r = _np_rng(g)
    m = int(r.integers(3, 8))
    _, a, b, s = _arena(r, m, 1500, ties=True)
    assert (s == 0.5).any()
    got = np.asarray(L.bradley_terry_fit(a, b, s, m), dtype=np.float64)
    close(got, _sklearn_bt(a, b, s, m), atol=1e-5, quiet=True,
          name="with ties (s = 0.5) == logistic regression with each tie as half a win and half a loss")


def _bt_recovers(L: Learner, g: torch.Generator) -> None:
    r = _np_rng(g)
    m = int(r.integers(4, 9))
    theta, a, b, s = _arena(r, m, 30000)
    got = np.asarray(L.bradley_terry_fit(a, b, s, m), dtype=np.float64)
    close(got, theta - theta.mean(), atol=0.1, quiet=True,
          name=f"30,000 simulated battles: the fit recovers the known strengths of {m} players within 0.1")


_FORBID_BLEU = Forbidden(packages=("labkit", "sacrebleu", "nltk"), allowed=(tokenize_13a,))
_FORBID_ROUGE = Forbidden(packages=("labkit", "rouge_score", "nltk"))
_FORBID_BT = Forbidden(packages=("labkit", "sklearn", "scipy", "statsmodels"))

TASKS = (
    Task("17.A", "corpus BLEU with brevity penalty and smoothing", ("corpus_bleu_score",), (
        Check("random corpora, 1-3 reference streams, 4 smoothing methods == sacrebleu.corpus_bleu", 2, _bleu_random),
        Check("identical corpus 100; empty and one-word outputs; no 4-gram match; None references; max_order; "
              "clipping", 2, _bleu_edges),
        Check("two references equally far from the output length: the shorter one counts", 1, _bleu_tied_lengths),
    ), _FORBID_BLEU),
    Task("17.B", "LCS and ROUGE-L", ("lcs_length", "rouge_l"), (
        Check("LCS of random token lists == rouge-score's LCS table; CLRS's example 4", 1, _lcs_random),
        Check("ROUGE-L (P, R, F) of random texts == rouge-score", 2, _rouge_random),
        Check("with the Porter stemmer (words > 3 characters) == rouge-score(use_stemmer=True)", 1, _rouge_stemmer),
        Check("the notes' 5/6 example; empty texts; non-ASCII; case and punctuation", 1, _rouge_edges),
    ), _FORBID_ROUGE),
    Task("17.C", "Bradley–Terry maximum-likelihood ratings", ("bradley_terry_fit",), (
        Check("random arenas (2-11 players) == sklearn LogisticRegression without intercept; mean 0", 2, _bt_random),
        Check("ties (s = 0.5) == half a win and half a loss", 1, _bt_ties),
        Check("recovers the known strengths of a large simulated arena", 1, _bt_recovers),
    ), _FORBID_BT),
)
