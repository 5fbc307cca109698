"""The shipped chapter-19 experiments (data/reader, data/advanced_rag) reproduce and say what the notebook says.

* the cheapest point of the reader run reruns: its first steps give the logged losses;
* the shipped reader (float16 weights) gives the logged answers when loaded back, and every retrieved-setting
  answer is a candidate span of its context (the reader reads);
* the plain pipeline of data/advanced_rag is the reader run's retrieved setting (same contexts, same answers);
* the cheapest point of the hard-negative run reruns: base retrieval and the in-batch adapter's losses and scores;
* the training data and the test questions are disjoint, and the counts are the logged ones;
* the technique results are internally consistent (answers ↔ exact match, FLARE's θ ends, adapter files);
* the hard-negative experiment's mined false negatives are real (they state the fact).
"""
from __future__ import annotations

import numpy as np
import pytest

from labkit.datasets.world import WORLD_DIR, load_corpus
from labkit.experiments import advanced_rag as AX
from labkit.experiments import hard_negatives as HX
from labkit.experiments import reader as RX
from labkit.retrieval import advanced as adv
from labkit.retrieval import encode


@pytest.fixture(scope="module")
def shipped():
    return RX.load_results()


def test_first_reader_steps_reproduce(shipped):
    _, _, losses, counts = RX.train_reader(3, schedule_steps=shipped["run"]["steps"], progress=False)
    assert counts == shipped["counts"]
    assert losses == pytest.approx(shipped["losses"][:3], abs=2e-3)


def test_shipped_reader_gives_logged_answers(shipped):
    reader = RX.load_reader()
    qs, sents, s_emb, q_emb = RX.world_retrieval()
    idx = [0, 1, 2, 9, 20, 33, 45, 80, 99, 106]
    top = RX.retrieve(q_emb[idx], s_emb, shipped["run"]["k"])
    assert top.tolist() == [shipped["retrieved"]["top"][i] for i in idx]
    got = reader.read_many([qs[i]["question"] for i in idx], [AX.contexts_of(t, [s for _, s in sents]) for t in top])
    assert [a.text for a in got] == [shipped["retrieved"]["answers"][i] for i in idx]
    gold = reader.read_many([qs[i]["question"] for i in idx], [adv.gold_sentences(qs[i], sents) for i in idx])
    assert [a.text for a in gold] == [shipped["gold"]["answers"][i] for i in idx]


def test_scores_match_answers(shipped):
    qs = RX.world_retrieval()[0]
    for mode in ("closed_book", "gold", "retrieved", "gold_generative"):
        re = RX.score_answers(qs, shipped[mode]["answers"])
        assert re["exact_match"] == shipped[mode]["exact_match"]
    _, sents, _, _ = RX.world_retrieval()
    texts = [s for _, s in sents]
    for i, a in enumerate(shipped["retrieved"]["answers"]):       # the reader reads: every answer is a span
        assert a in adv.candidate_spans(" ".join(texts[j] for j in shipped["retrieved"]["top"][i])), (i, a)
    assert shipped["counts"]["records"] > 5000 and shipped["counts"]["dropped_test_questions"] >= 0


def test_technique_results_are_consistent():
    res = AX.load_results()
    qs = RX.world_retrieval()[0]
    T = res["techniques"]
    for name in ("plain", "keywords", "fusion", "hybrid", "hyde", "hyde_gold", "selfrag", "closed_book"):
        assert RX.score_answers(qs, T[name]["answers"])["exact_match"] == T[name]["exact_match"], name
    flare = T["flare"]
    thetas = sorted(flare, key=float)
    assert flare[thetas[0]]["retrieval_rate"] == 0.0 and flare[thetas[-1]]["retrieval_rate"] == 1.0
    assert flare[thetas[0]]["exact_match"] == T["closed_book"]["exact_match"]
    emb = np.load(AX.OUT_DIR / "query_emb.npy")
    assert emb.shape == (sum(res["rows"].values()), 384) and emb.dtype == np.float16
    assert len(res["chunking"]) == len(AX.CHUNKING)
    assert all(0 <= c["recall"] <= 1 for c in res["chunking"])
    assert adv.parse_qa_pairs(adv.format_qa_pairs([tuple(p) for p in res["testset"]["pairs"]]),
                              num_questions=AX.RUN["testset"])


def test_hard_negative_results_and_false_negatives():
    res = HX.load_results()
    corpus = load_corpus()
    data = HX.make_queries(corpus)
    assert (len(data["train"]), len(data["test"])) == (res["n_train"], res["n_test"])
    assert not {q["question"] for q in data["train"]} & {q["question"] for q in data["test"]}
    assert not {q["fact"][0] for q in data["train"]} & {q["fact"][0] for q in data["test"]}
    ex = res["false_negative_example"]
    assert adv.is_false_negative(ex["text"], ex["subject"], ex["answer"])
    fact_passages = [p["id"] for p in corpus if any(t[0] == ex["subject"] and t[2] == ex["answer"] for t in p["triples"])]
    assert ex["mined"] in fact_passages and ex["label"] in fact_passages   # both truly state the fact
    for run in res["runs"].values():
        assert 0 <= run["recall@5"] <= 1 and 0 <= run["ndcg@10"] <= 1


def test_plain_pipeline_is_the_reader_runs_retrieved_setting(shipped):
    plain = AX.load_results()["techniques"]["plain"]
    assert plain["answers"] == shipped["retrieved"]["answers"]
    assert plain["top"] == shipped["retrieved"]["top"]


def test_hard_negative_in_batch_run_reproduces():
    """The cheapest point of data/advanced_rag/hard_negatives.json: the in-batch adapter, retrained."""
    res = HX.load_results()
    corpus = load_corpus()
    data = HX.make_queries(corpus)
    qtr = encode([x["question"] for x in data["train"]])
    qte = encode([x["question"] for x in data["test"]])
    p = np.load(WORLD_DIR / "passage_emb.npy")
    assert HX.evaluate(qte, p, data["test_pos"], None) == pytest.approx(
        {k: res["base"][k] for k in ("recall@5", "ndcg@10")}, abs=1e-6)
    ad, losses = HX.train_adapter(qtr, p, data["train_pos"], None)
    run = res["runs"]["in_batch"]
    assert losses[:5] == pytest.approx(run["first_losses"], abs=1e-4)
    assert HX.evaluate(qte, p, data["test_pos"], ad) == pytest.approx(
        {k: run[k] for k in ("recall@5", "ndcg@10")}, abs=1e-6)
