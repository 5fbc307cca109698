"""The fictional world (labkit.world): deterministic, self-consistent, and the shipped files regenerate."""
import json

import pytest

from labkit.datasets import world

FILES = ("world.json", "corpus.jsonl", "questions.jsonl")


def test_same_seed_same_bytes_and_matches_shipped(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    world.generate(0, a)
    world.generate(0, b)
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
        assert (a / f).read_bytes() == (world.WORLD_DIR / f).read_bytes(), f"shipped {f} is stale: regenerate"


def test_other_seed_other_world(tmp_path):
    world.generate(1, tmp_path)
    assert (tmp_path / "corpus.jsonl").read_bytes() != (world.WORLD_DIR / "corpus.jsonl").read_bytes()


def test_passages_state_only_true_facts_and_questions_are_grounded():
    w = world.load_world()
    truth = {tuple(t) for t in w["triples"]}
    corpus = world.load_corpus()
    by_id = {p["id"]: p for p in corpus}
    for p in corpus:
        assert {tuple(t) for t in p["triples"]} <= truth, p["id"]
        assert p["text"].startswith(f"# {p['title']}\n\n## ")
    names = {e["name"]: [e["name"], *e["aliases"]] for e in w["entities"]}
    qs = world.load_questions()
    kinds = {q["type"] for q in qs}
    assert kinds == {"single", "multi", "comparison", "global", "zh"}
    assert len(qs) >= 100
    for q in qs:
        assert {tuple(f) for f in q["facts"]} <= truth
        assert q["support"] and all(s in by_id for s in q["support"])
        if q["type"] in ("single", "zh"):
            forms = names.get(q["answer"], [q["answer"]])
            assert any(f in by_id[s]["text"] for s in q["support"] for f in forms), q
    multi = [q for q in qs if q["type"] == "multi"]
    assert {q["hops"] for q in multi} == {2, 3}
    # a multi-hop question's facts live in more than one article
    assert all(len({s.split("#")[0] for s in q["support"]}) >= 2 for q in multi)


def test_chinese_subset_and_aliases_present():
    corpus = world.load_corpus()
    zh = [p for p in corpus if p["lang"] == "zh"]
    assert len(zh) >= 10 and all("。" in p["text"] for p in zh)
    text = " ".join(p["text"] for p in corpus)
    assert "often just" in text and (" She " in text or " He " in text)


def test_bad_sizes():
    with pytest.raises(ValueError, match="n_people"):
        world.make_world(0, n_people=10, n_orgs=12)
    with pytest.raises(ValueError, match="at most"):
        world.make_world(0, n_orgs=40)


def test_article_text_and_missing_article():
    corpus = world.load_corpus()
    art = world.article_text(corpus, "org:0")
    assert art.startswith("# ") and art.count("## ") == 2
    with pytest.raises(ValueError, match="article"):
        world.article_text(corpus, "org:999")


def test_world_json_is_valid():
    w = json.loads((world.WORLD_DIR / "world.json").read_text())
    assert set(w["relations"]) == set(world.RELATIONS)
    assert all(t[1] in world.RELATIONS for t in w["triples"])
