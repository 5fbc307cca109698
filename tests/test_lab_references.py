"""Lab tasks of chapters 04, 18, 20, 22, 23, 24: a task answered by calling its reference scores 0 and the message
names the reference; a learner's *local* variable that happens to share a name with a forbidden global of the
notebook (``A`` = ``labkit.blocks``, ``D`` = ``labkit.parallel`` ...) is not mistaken for it."""
import importlib

import pytest

from labkit.course.hidden import base
from labsupport import module_from_source

CHEATS = {  # task -> (source of the learner's cell, text the message must contain)
    "04.A": ("import torch.nn.functional as F\nfrom transformers.models.llama.modeling_llama import repeat_kv as hf_rep\n\n"
             "def repeat_kv(x, n_rep):\n    return hf_rep(x, n_rep)\n\n"
             "def gqa_attention(q, k, v, is_causal=False):\n"
             "    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)\n",
             "repeat_kv"),
    "04.C": ("from transformers.models.llama import modeling_llama as m\n\n"
             "def rotate_half(x):\n    return m.rotate_half(x)\n\n"
             "def rope(x, pos, base=10000.0):\n    return x\n", "rotate_half"),
    "19.B": ("from labkit.retrieval import advanced as adv\n\ndef hyde_embedding(q, docs):\n    return adv.hyde_vector(q, docs)\n",
             "hyde_vector"),
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
    "18.A": ("from labkit.retrieval import BM25\n\ndef bm25_scores(query, docs, k1=1.5, b=0.75):\n"
             "    return BM25(docs, k1=k1, b=b).scores(query)\n", "labkit"),
    "18.C": ("import numpy as np\nfrom sklearn.metrics import ndcg_score\n\ndef ndcg_at_k(ranked, relevant, k):\n"
             "    return ndcg_score(np.array([[d in relevant for d in ranked]]), np.array([list(range(len(ranked), 0, -1))]), k=k)\n",
             "sklearn"),
    "20.A": ("from labkit.retrieval import graphrag as gr\n\ndef triples_to_graph(triples):\n"
             "    return gr.build_graph(triples)\n", "build_graph"),
    "22.B": ("from torch.nn.parallel import DistributedDataParallel\n\ndef ddp_step(replicas, shards, loss_fn, lr):\n"
             "    return [DistributedDataParallel(m) for m in replicas]\n", "DistributedDataParallel"),
    "23.A": ("import torch\n\ndef zero1_adam_step(params, grads, states, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):\n"
             "    opt = torch.optim.Adam([params[0]], lr=lr)\n    return params\n", "torch.optim.Adam"),
    "24.B": ("import labkit.parallel as D\n\ndef one_f_one_b(stage, n_stages, n_micro):\n"
             "    return [(op, i) for op, i, _, _ in D.pipeline_schedule('1f1b', n_stages, n_micro).ops[stage]]\n",
             "labkit"),
}


def _task(key):
    return next(t for t in importlib.import_module(f"labkit.course.hidden.ch{key[:2]}").TASKS if t.key == key)


@pytest.mark.parametrize("key", sorted(CHEATS))
def test_calling_the_reference_scores_zero_and_names_it(key, tmp_path):
    source, needle = CHEATS[key]
    mod = module_from_source(tmp_path, f"cheat_{key.replace('.', '_')}", source)
    r = base.run_task(_task(key), vars(mod), seed=1)
    assert r["points"] == 0 and needle in r["message"] and "reference" in r["message"], r["message"]


def test_a_local_name_is_not_the_notebooks_global(tmp_path):
    """The notebook's global ``D`` is labkit.parallel; a learner's local ``D`` (a dimension) is their own."""
    mod = module_from_source(tmp_path, "local_names", (
        "import labkit.parallel as D\nimport torch.nn.functional as F\n\n"
        "def column_parallel(x, w, b, world):\n    D = w.shape[0] // world\n"
        "    return [F.linear(x, w[r * D:(r + 1) * D], None if b is None else b[r * D:(r + 1) * D]) for r in range(world)]\n\n"
        "def row_parallel(x_parts, w, b, world):\n    D = w.shape[1] // world\n"
        "    out = sum(F.linear(xp, w[:, r * D:(r + 1) * D]) for r, xp in enumerate(x_parts))\n"
        "    return out if b is None else out + b\n\n"
        "def uses_global(world):\n    return D.pipeline_bubble_fraction(world, 4)\n"))
    task = _task("24.A")
    assert base.find_forbidden(mod.column_parallel, task.forbidden) is None
    r = base.run_task(task, vars(mod), seed=2)
    assert r["points"] == task.max_points, r["message"]
    why = base.find_forbidden(mod.uses_global, task.forbidden)          # the global D is still caught
    assert why is not None and "labkit.parallel" in why
