"""labkit.graphrag: extraction quality floor vs the world's true triples, entity resolution, the LLM
extractor with a fake LLM, graph/community invariants, local and global search, bad input."""
import json

import networkx as nx
import pytest

from labkit import retrieval as rag
from labkit.datasets import world
from labkit.retrieval import graphrag as gr


@pytest.fixture(scope="module")
def shipped():
    corpus = world.load_corpus()
    return [p["text"] for p in corpus], world.load_world(), world.load_questions()


def test_rule_extractor_precision_recall_floor(shipped):
    docs, w, _ = shipped
    sc = gr.extraction_scores(gr.extract_triples(docs), w["triples"])
    assert sc["precision"] >= 0.95 and sc["recall"] >= 0.9, sc


def test_extraction_scores_worked_example_and_empty_gold():
    gold = [("A", "born_in", "X"), ("A", "allied_with", "B")]
    sc = gr.extraction_scores([("B", "allied_with", "A"), ("A", "born_in", "Y")], gold)  # symmetric: order-free
    assert (sc["tp"], sc["precision"], sc["recall"], sc["f1"]) == (1, 0.5, 0.5, 0.5)
    for empty in ([], iter(())):
        with pytest.raises(ValueError, match="gold is empty"):
            gr.extraction_scores([("A", "born_in", "X")], empty)


def test_entity_resolution_is_what_lifts_precision(shipped):
    docs, w, _ = shipped
    raw = [t for d in docs for t in gr.rule_extract(d)]
    resolved = gr.extract_triples(docs)
    assert gr.extraction_scores(raw, w["triples"])["precision"] < gr.extraction_scores(resolved, w["triples"])["precision"] - 0.05


def test_resolver_aliases_pronouns_and_linking():
    docs = ["# Greern Foundry\n\n## History\n\nGreern Foundry (often just \"Greern\") was founded in 1930 by Ravsby.",
            "# Lionia Ravsby\n\n## Career\n\nShe works for Greern. In 1930 she founded Greern Foundry."]
    res = gr.EntityResolver.from_documents(docs)
    assert res.resolve("Greern") == "Greern Foundry" and res.resolve("Ravsby") == "Lionia Ravsby"
    assert res.resolve("the Greern Foundry") == "Greern Foundry"
    assert res.link("Did Ravsby work at Greern Foundry?") == ["Lionia Ravsby", "Greern Foundry"]
    triples = set(gr.extract_triples(docs, resolver=res))
    assert ("Lionia Ravsby", "works_for", "Greern Foundry") in triples  # pronoun "She" + alias "Greern"
    assert ("Greern Foundry", "founded_by", "Lionia Ravsby") in triples
    assert ("Greern Foundry", "founded_year", "1930") in triples
    with pytest.raises(ValueError, match="canonical"):
        gr.EntityResolver([])


def test_llm_extractor_with_fake_llm():
    prompts = []

    def fake_llm(prompt):
        prompts.append(prompt)
        return ('Sure! Here are the triples:\n[["Greern", "founded_by", "Lionia Ravsby"], '
                '["Greern Foundry", "sponsors", "Lornmoor"], ["bad"]]')

    doc = "# Greern Foundry\n\n## History\n\nGreern Foundry (often just \"Greern\") was founded by Lionia Ravsby."
    ext = gr.LLMExtractor(fake_llm)
    assert ext(doc) == [("Greern", "founded_by", "Lionia Ravsby")]
    assert ext.rejected == 2  # unknown relation + wrong shape
    assert "founded_by" in prompts[0] and "often just" in prompts[0] and '"Greern Foundry"' in prompts[0]
    # same interface as the rule extractor, aliases resolved afterwards
    assert gr.extract_triples([doc], method="llm", llm=fake_llm) == [("Greern Foundry", "founded_by", "Lionia Ravsby")]
    assert gr.LLMExtractor(lambda p: "no json here")(doc) == []
    assert gr.LLMExtractor(lambda p: "[not json]")(doc) == []
    with pytest.raises(ValueError, match="llm"):
        gr.extract_triples([doc], method="llm")
    with pytest.raises(ValueError, match="method"):
        gr.extract_triples([doc], method="magic")
    with pytest.raises(ValueError, match="empty"):
        gr.extract_triples(["  "])
    for not_callable in (None, "gpt-4o", {"model": "m"}):
        with pytest.raises(TypeError, match="llm must be a callable"):
            gr.LLMExtractor(not_callable)


def test_llm_extractor_reproduces_rules_when_llm_is_perfect(shipped):
    docs, w, _ = shipped

    def oracle(prompt):  # an "LLM" that returns exactly what the rules find in the passage of the prompt
        text = prompt.split("Text:\n", 1)[1].rstrip("\n")
        return json.dumps([list(t) for t in gr.rule_extract(text)])

    assert set(gr.extract_triples(docs[:30], method="llm", llm=oracle)) == set(gr.extract_triples(docs[:30]))


def test_build_graph_literals_are_attributes_and_bad_input():
    G = gr.build_graph([("A Co", "founded_by", "Bo Bell"), ("A Co", "founded_year", "1950"),
                        ("A Co", "headquartered_in", "Town"), ("A Co", "founded_by", "Bo Bell")])
    assert set(G.nodes) == {"A Co", "Bo Bell", "Town"} and G.nodes["A Co"]["founded_year"] == 1950
    assert G.number_of_edges() == 2 and G.edges["A Co", "Bo Bell"]["relation"] == "founded_by"
    with pytest.raises(ValueError, match="relation"):
        gr.build_graph([("a", "likes", "b")])
    with pytest.raises(ValueError, match="empty"):
        gr.build_graph([])


def test_communities_on_two_cliques_and_determinism(shipped):
    G = nx.DiGraph()
    for grp in ("abcde", "vwxyz"):
        G.add_edges_from((u, v, {"relation": "works_for"}) for u in grp for v in grp if u < v)
    G.add_edge("e", "v", relation="rival_of")
    comms = gr.detect_communities(G, seed=0)
    assert comms == [set("abcde"), set("vwxyz")]
    big = gr.GraphRAG(shipped[0]).graph
    c1, c2 = gr.detect_communities(big, seed=3), gr.detect_communities(big, seed=3)
    assert c1 == c2 and set().union(*c1) == set(big.nodes)
    assert len(gr.detect_communities(big, resolution=4.0)) > len(gr.detect_communities(big, resolution=0.3))
    with pytest.raises(ValueError, match="resolution"):
        gr.detect_communities(G, resolution=0)
    for empty in (nx.DiGraph(), nx.Graph()):
        with pytest.raises(ValueError, match="graph is empty"):
            gr.detect_communities(empty)


def test_local_search_multi_hop_and_hop_limit():
    triples = [("Lumen-3", "made_by", "Halvern Optics"), ("Halvern Optics", "founded_by", "Ada Brisk"),
               ("Ada Brisk", "born_in", "Dunmere"), ("Dunmere", "located_in", "Saltmarch"),
               ("Halvern Optics", "founded_year", "1950"), ("Vesper Mills", "founded_year", "1940"),
               ("Vesper Mills", "founded_by", "Cal Dorn")]
    G = gr.build_graph(triples)
    res = gr.EntityResolver(["Lumen-3", "Halvern Optics", "Ada Brisk", "Dunmere", "Saltmarch", "Vesper Mills", "Cal Dorn"])
    out = gr.local_search(G, "Where was the founder of Halvern Optics born?", res, hops=2)
    assert out["answer"] == "Dunmere" and len(out["path"]) == 2
    assert "Saltmarch" not in {n for t in gr.local_search(G, "Where was the founder of Halvern Optics born?", res, hops=1)["facts"] for n in (t[0], t[2])}
    assert gr.local_search(G, "In which region was the founder of Halvern Optics born?", res, hops=3)["answer"] == "Saltmarch"
    assert gr.local_search(G, "Which was founded earlier, Halvern Optics or Vesper Mills?", res)["answer"] == "Vesper Mills"
    with pytest.raises(ValueError, match="question"):
        gr.local_search(G, "", res)
    with pytest.raises(ValueError, match="hops"):
        gr.local_search(G, "Who founded Halvern Optics?", res, hops=0)


def test_graphrag_answers_shipped_questions(shipped):
    docs, w, qs = shipped
    g = gr.GraphRAG(docs)
    multi = [q for q in qs if q["type"] == "multi"]
    acc = sum(rag.exact_match(g.query(q["question"])["answer"], [q["answer"], *q["answer_aliases"]]) for q in multi) / len(multi)
    assert acc >= 0.9
    glob = [q for q in qs if q["type"] == "global"]
    assert all(gr.score_global_answer(g.auto(q["question"])["answer"], q["facts"]) == 1.0 for q in glob)
    assert gr.score_global_answer("They get along.", glob[0]["facts"]) == 0.0
    with pytest.raises(ValueError, match="reports"):
        gr.global_search([], "q?")
    with pytest.raises(ValueError, match="mode"):
        g.query("q?", mode="drift")
    with pytest.raises(ValueError, match="passages"):
        gr.GraphRAG([])


def test_score_global_answer_relations_and_memberships():
    rel = [("A League", "rival_of", "B Pact"), ("A League", "allied_with", "C Ring"), ("X Co", "member_of", "A League")]
    # relations are scored when present (memberships then only serve as support)
    assert gr.score_global_answer("A League is a rival of B Pact.\nA League and C Ring are friends.", rel) == 0.5
    assert gr.score_global_answer("A League and B Pact are allied.", rel) == 0.0  # wrong relation word
    mem = [("X Co", "member_of", "A League"), ("Y Co", "member_of", "A League"), ("Z Co", "member_of", "B Pact")]
    ans = "Members of the A League: X Co, Y Co.\nZ Co is large. B Pact exists."
    assert gr.score_global_answer(ans, mem) == pytest.approx(2 / 3)  # Z Co and B Pact are in different sentences
    with pytest.raises(ValueError, match="member_of"):
        gr.score_global_answer("anything", [("X Co", "founded_by", "Ann")])
