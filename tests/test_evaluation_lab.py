"""Chapter 17's hidden tests catch the references: a lab task answered by calling sacrebleu, rouge-score or
scikit-learn scores 0 and the message names the reference (as tests/test_lab_references.py does for other
chapters); and a subtly wrong BLEU (no brevity penalty, ties resolved to the longer reference) loses points."""
from __future__ import annotations

import importlib

import pytest

from labkit.course.hidden import base
from labsupport import module_from_source

CHEATS = {
    "17.A": ("import sacrebleu\n\ndef corpus_bleu_score(hypotheses, references, smooth_method='exp', max_order=4):\n"
             "    return sacrebleu.corpus_bleu(hypotheses, references, smooth_method=smooth_method).score\n",
             "sacrebleu"),
    "17.B": ("from rouge_score import rouge_scorer\n\ndef lcs_length(a, b):\n"
             "    return rouge_scorer._lcs_table(a, b)[-1][-1]\n\n"
             "def rouge_l(target, prediction, stemmer=None):\n"
             "    return tuple(rouge_scorer.RougeScorer(['rougeL']).score(target, prediction)['rougeL'])\n",
             "rouge_score"),
    "17.C": ("import numpy as np\nfrom sklearn.linear_model import LogisticRegression\n\n"
             "def bradley_terry_fit(a, b, s, n_players):\n    X = np.zeros((len(a), n_players))\n"
             "    X[np.arange(len(a)), a] = 1\n    X[np.arange(len(a)), b] = -1\n"
             "    w = LogisticRegression(fit_intercept=False, C=np.inf).fit(X, s).coef_[0]\n    return w - w.mean()\n",
             "sklearn"),
}


def _task(key):
    return next(t for t in importlib.import_module("labkit.course.hidden.ch17").TASKS if t.key == key)


@pytest.mark.parametrize("key", sorted(CHEATS))
def test_calling_the_reference_scores_zero_and_names_it(key, tmp_path):
    source, needle = CHEATS[key]
    mod = module_from_source(tmp_path, f"cheat17_{key.replace('.', '_')}", source)
    r = base.run_task(_task(key), vars(mod), seed=1)
    assert r["points"] == 0 and needle in r["message"] and "reference" in r["message"], r["message"]


_BLEU = """import math
from collections import Counter
from labkit.evaluation import tokenize_13a


def corpus_bleu_score(hypotheses, references, smooth_method="exp", max_order=4):
    correct, total, c_len, r_len = [0.0] * max_order, [0.0] * max_order, 0, 0
    for i, hyp in enumerate(hypotheses):
        h = tokenize_13a(hyp).split()
        refs = [tokenize_13a(s[i]).split() for s in references if s[i] is not None]
        ref_max = Counter()
        for ref in refs:
            for g, n in Counter(tuple(ref[j:j + k]) for k in range(1, max_order + 1)
                                for j in range(len(ref) - k + 1)).items():
                ref_max[g] = max(ref_max[g], n)
        for g, n in Counter(tuple(h[j:j + k]) for k in range(1, max_order + 1) for j in range(len(h) - k + 1)).items():
            total[len(g) - 1] += n
            correct[len(g) - 1] += min(n, ref_max[g])
        c_len += len(h)
        r_len += min((len(r) for r in refs), key=lambda L: (abs(L - len(h)), TIE * L))
    if not any(correct):
        return 0.0
    bp = BP(c_len, r_len)
    logs, zeros = [], 0
    for n in range(max_order):
        cn, tn = correct[n], total[n]
        if smooth_method == "add-k" and n > 0:
            cn, tn = cn + 1, tn + 1
        if tn == 0:
            return 0.0
        if cn == 0:
            if smooth_method == "exp":
                zeros += 1
                cn = 0.5 ** zeros
            elif smooth_method == "floor":
                cn = 0.1
            else:
                return 0.0
        logs.append(math.log(cn / tn))
    return 100 * bp * math.exp(sum(logs) / max_order)
"""
_RIGHT_BP = "lambda c, r: 1.0 if c >= r else (math.exp(1 - r / c) if c else 0.0)"


@pytest.mark.parametrize("tie,bp,full_marks", [(1, _RIGHT_BP, True), (-1, _RIGHT_BP, False),
                                               (1, "lambda c, r: 1.0", False)])
def test_subtle_bleu_bugs_lose_points(tie, bp, full_marks, tmp_path):
    src = f"TIE = {tie}\nBP = None\n" + _BLEU + f"\n\nimport math\nBP = {bp}\n"
    mod = module_from_source(tmp_path, f"bleu17_{tie}_{len(bp)}", src)
    r = base.run_task(_task("17.A"), vars(mod), seed=2)
    assert (r["points"] == _task("17.A").max_points) == full_marks, r["message"]
