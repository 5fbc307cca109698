"""labkit.retrieval.advanced (chapter 19) against independent computations: RAG-Fusion on the notes' worked
example, HyDE as a plain mean, RAGAS context precision by its definition, the contrastive loss row by row with
the notes' inverted target shown wrong, mining by brute force, the reader's cached greedy decoding against a
full recompute, the training data kept apart from the test world, and bad input."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.datasets.world import load_corpus, load_questions
from labkit.model import load_pretrained
from labkit.retrieval import advanced as adv

NOTES_LISTS = [["doc1", "doc3", "doc2", "doc5"], ["doc2", "doc1", "doc4", "doc3"], ["doc3", "doc1", "doc5", "doc2"]]


# ------------------------------------------------------------------------------ RAG-Fusion, HyDE
def test_rag_fusion_reproduces_the_notes_example_and_differs_from_the_buggy_version():
    fused = adv.rag_fusion(NOTES_LISTS)
    assert fused == ["doc1", "doc3", "doc2", "doc5", "doc4"]
    score = {d: sum(1 / (60 + r.index(d) + 1) for r in NOTES_LISTS if d in r) for d in fused}
    assert [round(score[d], 6) for d in fused] == [0.048652, 0.048147, 0.047891, 0.031498, 0.015873]
    buggy = {}
    for r in NOTES_LISTS:                      # the notes' code: `+=` inside `if doc not in scores`
        for rank, d in enumerate(r):
            if d not in buggy:
                buggy[d] = 1 / (60 + rank + 1)
    assert sorted(buggy, key=lambda d: -buggy[d]) != fused
    assert adv.rag_fusion(NOTES_LISTS, top=2) == ["doc1", "doc3"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rag_fusion_uses_ranks_only_random_lists(seed):
    rng = random.Random(seed)
    lists = [rng.sample(range(30), rng.randint(3, 17)) for _ in range(rng.randint(2, 5))]
    ref = {}
    for r in lists:
        for i, d in enumerate(r):
            ref[d] = ref.get(d, 0) + 1 / (7 + i + 1)
    fused = adv.rag_fusion(lists, k=7)
    assert sorted(ref.values(), reverse=True) == pytest.approx([ref[d] for d in fused])


@pytest.mark.parametrize("n,d,seed", [(0, 5, 0), (1, 7, 1), (4, 3, 2), (9, 384, 3)])
def test_hyde_vector_is_the_mean_of_query_and_documents(n, d, seed):
    rng = np.random.default_rng(seed)
    q, docs = rng.normal(size=d), rng.normal(size=(n, d))
    mean = np.vstack([q[None], docs]).mean(0)
    np.testing.assert_allclose(adv.hyde_vector(q, docs, normalize=False), mean, atol=1e-12)
    np.testing.assert_allclose(adv.hyde_vector(q, docs), mean / np.linalg.norm(mean), atol=1e-12)


def test_hyde_bad_input():
    with pytest.raises(ValueError, match="query_emb"):
        adv.hyde_vector(np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="doc_embs"):
        adv.hyde_vector(np.zeros(3), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="zero"):
        adv.hyde_vector(np.ones(3), -np.ones((1, 3)))


def test_template_rewrites():
    assert adv.keyword_query("Who founded Ulaway Optics?") == "founded Ulaway Optics"
    assert adv.statement_stub("Where was Lionia Ravsby born?") == "Lionia Ravsby was born in"
    assert adv.statement_stub("In which city is Ulaway Optics based?") == "Ulaway Optics is headquartered in"
    assert adv.statement_stub("Who was born first, Ada or Bo?") is None
    assert adv.multi_queries("Who was born first, Ada or Bo?") == ["Who was born first, Ada or Bo?", "born first Ada Bo"]
    with pytest.raises(TypeError, match="question"):
        adv.keyword_query(["Who?"])


def test_flare_trigger_and_mask():
    probs = [0.9, 0.35, 0.8]
    assert adv.flare_trigger(probs, 0.4) and not adv.flare_trigger(probs, 0.3)
    assert adv.mask_uncertain(["a", "b", "c"], probs, 0.4) == ["a", "c"]
    with pytest.raises(ValueError, match="theta"):
        adv.flare_trigger(probs, 1.5)
    with pytest.raises(ValueError, match="one probability per token"):
        adv.mask_uncertain(["a"], probs, 0.4)


def test_selfrag_score_weights_flip_the_choice():
    a = dict(logprob=-0.2, relevance=0.5, support=0.0)   # confident, unsupported
    b = dict(logprob=-1.0, relevance=0.5, support=1.0)   # less confident, supported
    assert adv.selfrag_score(**a, w_sup=0.5) > adv.selfrag_score(**b, w_sup=0.5)
    assert adv.selfrag_score(**a, w_sup=1.0) < adv.selfrag_score(**b, w_sup=1.0)
    with pytest.raises(ValueError, match="support"):
        adv.selfrag_score(0.0, 0.5, 2.0)


# ------------------------------------------------------------------------------ RAG evaluation
def _cp_reference(v, k):
    v = v[:k]
    num = sum((sum(v[:i + 1]) / (i + 1)) * v[i] for i in range(len(v)))
    return num / sum(v) if sum(v) else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_context_precision_matches_the_ragas_definition(seed):
    rng = random.Random(seed)
    v = [rng.random() < 0.4 for _ in range(rng.randint(1, 13))]
    for k in (1, 2, 5, 20):
        assert adv.context_precision_at_k(v, k) == pytest.approx(_cp_reference([int(x) for x in v], k))


def test_context_precision_worked_values():
    assert adv.context_precision_at_k([1, 0, 1], 3) == pytest.approx((1 + 2 / 3) / 2)
    assert adv.context_precision_at_k([0, 1], 2) == pytest.approx(0.5)
    assert adv.context_precision_at_k([0, 0], 2) == 0.0
    assert adv.context_precision_at_k([1, 1, 0], 3) == 1.0   # order matters, not only the count
    with pytest.raises(ValueError, match="k must"):
        adv.context_precision_at_k([1], 0)
    with pytest.raises(TypeError, match="relevant"):
        adv.context_precision_at_k("10", 1)


def test_context_recall_and_faithfulness():
    facts = [["Ada Vale", "born_in", "Lornmoor"], ["Ada Vale", "works_for", "Ulaway Optics"]]
    assert adv.context_recall(facts, ["Ada Vale was born in Lornmoor."]) == 0.5
    assert adv.context_recall(facts, ["Lornmoor is a city."]) == 0.0      # the object alone is not the fact
    assert adv.faithfulness("Lornmoor", ["Ada Vale was born in Lornmoor."]) == 1.0
    assert adv.faithfulness("Lornmoor and Cranwick", ["Born in Lornmoor."]) == 0.5
    assert adv.faithfulness("Lorn", ["Born in Lornmoor."]) == 0.0           # whole words only
    assert math.isnan(adv.faithfulness("", ["Born in Lornmoor."]))          # no claim: undefined, not 1
    with pytest.raises(ValueError, match="facts"):
        adv.context_recall([], ["x"])
    with pytest.raises(TypeError, match="contexts"):
        adv.faithfulness("a", "a context")


def test_qa_pair_format_roundtrip_and_errors():
    pairs = [("Who founded Ulaway Optics?", "Kerec Ellvale"), ("Where was Ada born?", "Lornmoor")]
    text = adv.format_qa_pairs(pairs)
    assert adv.parse_qa_pairs(text, num_questions=2) == pairs
    messy = "question:  Who is X?\n  answer: the\n  answer  XXX\n\nquestion: Why?\nanswer: because XXX\n"
    assert adv.parse_qa_pairs(messy) == [("Who is X?", "the answer"), ("Why?", "because")]
    with pytest.raises(ValueError, match="num_questions"):
        adv.parse_qa_pairs(text, num_questions=3)
    with pytest.raises(ValueError, match="end with"):
        adv.parse_qa_pairs("question: Who\nanswer: me XXX")
    with pytest.raises(ValueError, match="block 0"):
        adv.parse_qa_pairs("just text XXX")


# ------------------------------------------------------------------------------ hard negatives
@pytest.mark.parametrize("b,g,seed", [(3, 1, 0), (4, 3, 1), (5, 2, 2)])
def test_mnrl_loss_row_by_row_and_the_notes_target(b, g, seed):
    gen = torch.Generator().manual_seed(seed)
    q, d = torch.randn(b, 6, generator=gen), torch.randn(b * g, 6, generator=gen)
    s = 20 * F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    ref = torch.stack([torch.logsumexp(s[i], 0) - s[i, i * g] for i in range(b)]).mean()
    torch.testing.assert_close(adv.mnrl_loss(q, d), ref)
    notes_target = torch.arange(b) * (q.shape[0] // d.shape[0])
    if g > 1:
        assert notes_target.tolist() == [0] * b      # every query "matched" to passage 0
    with pytest.raises(ValueError, match="multiple"):
        adv.mnrl_loss(q, d[:-1] if b * g > b else torch.randn(b + 1, 6))


@pytest.mark.parametrize("seed", [0, 1])
def test_mining_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(4, 11))
    pos = [[int(np.argmax(s[i]))] for i in range(4)]
    skip = [[int(np.argsort(-s[i])[1])] for i in range(4)]
    got = adv.mine_hard_negatives(s, pos, 3, skip=skip)
    for i in range(4):
        ref = [j for j in np.argsort(-s[i]) if j not in pos[i] + skip[i]][:3]
        assert got[i] == [int(j) for j in ref]
    with pytest.raises(ValueError, match="n must"):
        adv.mine_hard_negatives(s, pos, 0)
    with pytest.raises(ValueError, match="positives"):
        adv.mine_hard_negatives(s, pos[:2], 1)


def test_false_negative_and_adapter_identity():
    assert adv.is_false_negative("Ulaway Optics was established by Kerec Ellvale.", "Ulaway Optics", "Kerec Ellvale")
    assert not adv.is_false_negative("Ulaway Optics is based in Lornmoor.", "Ulaway Optics", "Kerec Ellvale")
    x = torch.randn(5, 9)
    torch.testing.assert_close(adv.QueryAdapter(9)(x), F.normalize(x, dim=-1))
    with pytest.raises(ValueError, match="dim"):
        adv.QueryAdapter(0)


# ------------------------------------------------------------------------------ reader data and decoding
def test_training_data_never_uses_the_test_world_or_its_questions():
    test_q = {q["question"] for q in load_questions()}
    recs, dropped = adv.training_records([1, 2], exclude=sorted(test_q))
    asked = {r["messages"][0]["content"].split("\nQ: ")[-1] for r in recs}
    assert recs and not asked & test_q
    for r in recs[:200]:                       # the answer is in the context (an extractive task) or no context
        user, ans = r["messages"][0]["content"], r["messages"][1]["content"]
        assert ans in user.split("\nQ: ")[0] or not user.split("\nQ: ")[0]
    with pytest.raises(ValueError, match="seeds must not contain 0"):
        adv.training_records([0, 1])


def test_world_sentences_are_the_shipped_embedding_rows():
    sents = adv.world_sentences(load_corpus())
    assert len(sents) == len(np.load("data/world/sentence_emb.npz")["emb"])
    assert sents[0][1].startswith("Kerec Ellvale: ")
    gold = adv.gold_sentences(load_questions()[0], sents)
    assert gold and "Lornmoor" in gold[0] and "Lionia Ravsby" in gold[0]


@torch.no_grad()
def _greedy_full(model, ids, n):
    out, probs = [], []
    for _ in range(n):
        p = torch.softmax(model(torch.tensor([ids + out]))[0, -1].double(), -1)
        out.append(int(p.argmax()))
        probs.append(float(p.max()))
    return out, probs


def test_reader_cached_decoding_equals_full_recompute():
    model, tok = load_pretrained()
    reader = adv.LMReader(model, tok, max_new_tokens=5)
    qs = ["Who founded Ulaway Optics?", "Where was Ada born?", "Who founded Ulaway Optics?"]
    ctx = [["Ulaway Optics: It was founded by Kerec Ellvale."], [], ["x"]]
    got = reader.answer_many(qs, ctx)
    end = tok.special_tokens["<|end|>"]
    for q, c, a in zip(qs, ctx, got):
        toks, probs = _greedy_full(model, reader.prompt_ids(q, c), 5)
        stop = toks.index(end) + 1 if end in toks else 5
        assert a.text == tok.decode([t for t in toks[:stop] if t != end]).strip()
        np.testing.assert_allclose(a.probs, probs[:stop], rtol=1e-4)
        assert a.min_prob == min(a.probs) and a.mean_logprob <= 0
    with pytest.raises(ValueError, match="one context each"):
        reader.answer_many(qs, ctx[:1])
    with pytest.raises(TypeError, match="questions"):
        reader.answer_many("Who?", [[]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        adv.LMReader(model, tok, max_new_tokens=0)
    with pytest.raises(TypeError, match="context"):
        adv.reader_record("Who?", "one sentence")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_dense_ranking_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    q, p = rng.normal(size=(rng.integers(1, 4), 5)), rng.normal(size=(13, 5))
    depth = int(rng.integers(2, 13))
    score = {}
    for row in q:
        for r, j in enumerate(sorted(range(13), key=lambda j: (-(row @ p[j]), j))[:depth]):
            score[j] = score.get(j, 0) + 1 / (60 + r + 1)
    want = sorted(score, key=lambda j: -score[j])
    got = adv.fused_dense_ranking(q, p, depth=depth)
    assert [round(score[j], 12) for j in got] == [round(score[j], 12) for j in want]
    assert adv.fused_dense_ranking(q, p, depth=depth, top=2) == got[:2]
    with pytest.raises(ValueError, match="share d"):
        adv.fused_dense_ranking(q, p[:, :4])
    with pytest.raises(ValueError, match="depth"):
        adv.fused_dense_ranking(q, p, depth=0)


def test_states_needs_the_relation_cue():
    assert adv.states("Ada Vale: Ada Vale was born in Lornmoor in 1902.", ("Ada Vale", "born_in", "Lornmoor"))
    assert adv.states("Ada Vale: Ada Vale于1902年出生在Lornmoor。", ("Ada Vale", "born_in", "Lornmoor"))
    # the title puts the subject in every sentence: naming both is not stating the fact
    assert not adv.states("Ada Vale: In 1934 she founded Ulaway Optics.", ("Ada Vale", "works_for", "Ulaway Optics"))
    assert not adv.states("Ada Vale: She works for Corfield Motors.", ("Ada Vale", "works_for", "Ulaway Optics"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rename_record_is_consistent_and_keeps_the_answer_extractive(seed):
    rec = adv.reader_record("Who founded Ulaway Optics?", ["Ulaway Optics: Ulaway Optics was founded by Kerec Ellvale.",
                                                          "Kerec Ellvale: Ellvale was born in 1902."], "Kerec Ellvale")
    out = adv.rename_record(rec, {"Ulaway", "Optics", "Kerec", "Ellvale"}, random.Random(seed))
    user, ans = out["messages"][0]["content"], out["messages"][1]["content"]
    assert not any(w in user + ans for w in ("Ulaway", "Kerec", "Ellvale")) and "1902" in user
    assert ans in user and user.count(ans.split()[1]) == 3        # every "Ellvale" became the same word
    assert user.startswith(user.split(":")[0] + ": " + user.split(":")[0])   # the title renamed like the text


def test_candidate_spans():
    text = "Ulaway Optics: The Aster-6 is made by Holmore Instruments in 1934. Ada Vale: She works for the Iron Circle."
    assert adv.candidate_spans(text) == ["Ulaway Optics", "Aster-6", "Holmore Instruments", "1934", "Ada Vale",
                                         "Iron Circle"]
    assert adv.candidate_spans("no names here, 12 and 123") == []


def test_span_scores_equal_the_greedy_probabilities():
    model, tok = load_pretrained()
    reader = adv.LMReader(model, tok, max_new_tokens=4)
    q, ctx = "Who founded Ulaway Optics?", ["Ulaway Optics: It was founded by Kerec Ellvale in 1934."]
    g = reader.answer(q, ctx)
    span = adv.ReaderAnswer(tok.decode(g.ids))
    s = reader.span_scores(q, ctx, [span.text, "Kerec Ellvale"])
    n = len(g.ids)
    np.testing.assert_allclose(s[0].probs[:n], g.probs[:n], rtol=1e-4)     # same tokens, same probabilities
    assert s[0].ids == g.ids and len(s[1].probs) == len(tok.encode("Kerec Ellvale")) + 1
    best = reader.answer_extractive(q, ctx)
    lp = {a.text: sum(math.log(p) for p in a.probs) for a in reader.span_scores(q, ctx, adv.candidate_spans(ctx[0]))}
    assert best.text == max(lp, key=lp.get)
    assert reader.answer_extractive(q, []).text == ""


def test_candidate_spans_stop_at_chinese_text():
    assert adv.candidate_spans("Ada Vale：Ada Vale于1902年出生在Lornmoor。") == ["Ada Vale", "1902", "Lornmoor"]


def test_read_many_is_extractive_with_context_and_generative_without():
    model, tok = load_pretrained()
    reader = adv.LMReader(model, tok, max_new_tokens=4)
    qs = ["Who founded Ulaway Optics?", "Where was Ada born?", "Who founded Ulaway Optics?", "When?"]
    ctx = [["Ulaway Optics: It was founded by Kerec Ellvale in 1934."], [], ["no names here"],
           ["Ada Vale: born 1902 in Lornmoor.", "Corport: a port town."]]
    got = reader.read_many(qs, ctx)
    for q, c, a in zip(qs, ctx, got):
        want = reader.answer_extractive(q, c) if adv.candidate_spans(" ".join(c)) else reader.answer(q, c)
        assert (a.text, a.ids) == (want.text, want.ids)
        np.testing.assert_allclose(a.probs, want.probs, rtol=1e-6)
    assert got[0].text in adv.candidate_spans(ctx[0][0]) and got[3].text in adv.candidate_spans(" ".join(ctx[3]))
    with pytest.raises(ValueError, match="one context each"):
        reader.read_many(qs, ctx[:2])
    with pytest.raises(TypeError, match="questions"):
        reader.read_many("Who?", [[]])
