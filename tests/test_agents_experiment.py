"""Chapter 21: the shipped tool-use experiment (data/tools) and its data.

* the cheapest point reruns: the first 3 steps of the shipped tool fine-tuning give the logged losses;
* the shipped float16 weights give the shipped traces (constrained agent on held-out questions of every kind);
* every stored accuracy is the mean of its traces; no test question (arithmetic expression or world entity)
  occurs in training; every training conversation fits the model's 128 positions;
* the claims the chapter prints hold: constrained tool use beats answering directly on calc and search, the
  free-decoding tool model fails to copy (the base and fine-tuned models have no in-context copying), and
  the tool model's decision (call or not, which tool) is right on every test question;
* bad input raises ValueError / FileNotFoundError naming the fix.
"""
from __future__ import annotations

import pytest

from labkit.agents import (CALC_TOOL, accuracy_by_kind, arithmetic_questions, decision_counts, make_search_tool,
                           run_tool_agent, world_questions)
from labkit.experiments import tools as T
from labkit.finetune import sft


@pytest.fixture(scope="module")
def results():
    return T.load_results()


@pytest.fixture(scope="module")
def tools():
    return [CALC_TOOL, make_search_tool()]


def test_settings_and_accuracies_are_consistent(results):
    assert results["settings"] == T.RUN
    assert len(results["tools"]["losses"]) == len(results["direct"]["losses"]) == T.RUN["steps"]
    for block in (results["direct"], results["tools"]["free"], results["tools"]["constrained"]):
        assert accuracy_by_kind(block["traces"]) == block["accuracy"]
        assert [t["question"] for t in block["traces"]] == [q["question"] for q in T.test_questions()]


def test_claims_of_the_chapter(results):
    direct, free = results["direct"]["accuracy"], results["tools"]["free"]["accuracy"]
    cons = results["tools"]["constrained"]["accuracy"]
    assert cons["calc"] > direct["calc"] + 0.5 and cons["search"] > direct["search"] + 0.3
    assert direct["calc"] <= 0.05 and free["calc"] <= 0.05
    assert results["base_copy_accuracy"] < 0.05 and results["tools"]["copy_accuracy"] < 0.05


def test_no_test_question_is_in_training():
    train, test = T.training_questions(), T.test_questions()
    calc_train = {q["arg"] for q in train if q["kind"] == "calc"}
    assert not calc_train & {q["arg"] for q in test if q["kind"] == "calc"}
    subject = lambda q: q["question"]  # noqa: E731  (world questions name their subject entity)
    train_world = {subject(q) for q in train if q["kind"] == "search"}
    test_world = {subject(q) for q in test if q["kind"] == "search"}
    assert not train_world & test_world and len(test_world) >= 25
    names_test = {w for q in test if q["kind"] == "search" for w in q["question"].split() if w[:1].isupper()}
    names_train = {w for q in train if q["kind"] == "search" for w in q["question"].split() if w[:1].isupper()}
    assert names_test - names_train       # held-out entities: names never seen in a training question


def test_training_conversations_fit_128_positions(tools):
    _, tok = T.load_pretrained()
    lengths = [len(sft.encode_example(r, tok)["input_ids"]) for r in T.training_records("tools", tools)]
    assert max(lengths) <= T.RUN["max_len"]


def test_first_steps_of_the_shipped_run_reproduce(results, tools):
    _, _, losses = T.train_run("tools", steps=3, tools=tools, progress=False)
    assert losses == pytest.approx(results["tools"]["losses"][:3], abs=2e-3)


def test_shipped_weights_give_the_shipped_traces(results, tools):
    model, tok = T.load_tool_model()
    test = T.test_questions()
    pick = [0, 1, 2, 51, 102] + [i for i, q in enumerate(test) if q["kind"] != "calc"][::4]
    traces = run_tool_agent(model, tok, [test[i] for i in pick], tools, constrained=True)
    shipped = [results["tools"]["constrained"]["traces"][i] for i in pick]
    assert [t["step1"] for t in traces] == [s["step1"] for s in shipped]
    assert [t["prediction"] for t in traces] == [s["prediction"] for s in shipped]


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be 'tools' or 'direct'"):
        T.training_records("both", [CALC_TOOL])
    with pytest.raises(ValueError, match="n must be a positive int"):
        arithmetic_questions(0, seed=1)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        world_questions("dev")
    with pytest.raises(ValueError, match="traces is empty"):
        accuracy_by_kind([])
    with pytest.raises(FileNotFoundError, match="regenerate it with"):
        T.load_tool_model("/nonexistent/tool_model.safetensors")


def test_decision_counts_judge_the_tool_choice(results):
    """A wrong tool, a missing call and a needless call each count as wrong; the shipped traces of the tool
    model make the right decision on every test question (the claim of the chapter), the argument aside."""
    call = lambda name: '{"name": "%s", "arguments": {"query": "x"}}' % name  # noqa: E731
    traces = [{"kind": "calc", "call": call("calc")}, {"kind": "calc", "call": call("search")},
              {"kind": "search", "call": None}, {"kind": "direct", "call": call("calc")},
              {"kind": "direct", "call": None}]
    assert decision_counts(traces) == {"calc": [1, 2], "direct": [1, 2], "search": [0, 1]}
    n = results["n_test"]
    for how in ("free", "constrained"):
        got = decision_counts(results["tools"][how]["traces"])
        assert got == {k: [n[k], n[k]] for k in ("calc", "direct", "search")}
    with pytest.raises(ValueError, match="traces is empty"):
        decision_counts([])
