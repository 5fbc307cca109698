"""Chapter 17's hidden tests catch subtly wrong answers: a BLEU without brevity penalty, or with ties resolved to
the longer reference, loses points. (Answers that call sacrebleu, rouge-score or scikit-learn score 0: their
entries are in tests/test_lab_references.py's CHEATS, with the other chapters'.)"""
from __future__ import annotations

import importlib

import pytest

from labkit.course.hidden import base
from labsupport import module_from_source


def _task(key):
    return next(t for t in importlib.import_module("labkit.course.hidden.ch17").TASKS if t.key == key)


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
