"""Chapter 21: prompt templates, output parsers and chains (labkit.agents).

* templates render exactly what ``str.format`` renders (random templates, several seeds), list their variables
  as ``string.Formatter`` parses them, and reject a missing or an unknown variable, naming the ``{{x}}`` bug;
* ``partial`` then ``format`` equals one ``format`` with all values (also with literal braces and braces in values);
* the key-value parser round-trips random dicts and rejects missing/repeated keys; the JSON parser finds the
  object ``json.loads`` finds inside prose and rejects malformed JSON;
* a chain runs its steps in order (trace), flattens, and rejects non-steps.
"""
from __future__ import annotations

import json
import random
import string

import pytest

from labkit.agents import (Chain, FewShotTemplate, JSONParser, KeyValueParser, OutputParserError, PromptTemplate,
                           RuleLLM, Runnable, as_runnable, template_variables)

WORDS = ["question", "context", "name", "city", "k2", "topic", "x"]


def _random_template(rng: random.Random) -> tuple[str, list[str]]:
    names = rng.sample(WORDS, rng.randint(1, 4))
    parts = []
    for _ in range(rng.randint(2, 7)):
        parts.append(rng.choice(["text ", "{{literal}} ", "a}}b ", "中文 ", "{" + rng.choice(names) + "} "]))
    parts.append("{" + names[0] + "}")
    used = list(dict.fromkeys(n for p in parts for n in names if p == "{" + n + "} " or p == "{" + n + "}"))
    return "".join(parts), used


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_template_matches_str_format(seed):
    rng = random.Random(seed)
    for _ in range(20):
        tmpl, used = _random_template(rng)
        ref_names = list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(tmpl) if f is not None))
        assert template_variables(tmpl) == ref_names == used
        values = {v: "".join(rng.choices("ab{}中 ", k=rng.randint(0, 5))) for v in used}
        assert PromptTemplate(tmpl).format(**values) == tmpl.format(**values)


def test_missing_and_unknown_variables_are_errors():
    t = PromptTemplate("Context: {context}\nQuestion: {question}")
    with pytest.raises(ValueError, match=r"missing variable\(s\) \['question'\]"):
        t.format(context="c")
    with pytest.raises(ValueError, match=r"\['answer'\] are not in the template"):
        t.format(context="c", question="q", answer="a")


def test_double_brace_bug_of_the_notes_is_named():
    bad = PromptTemplate("[背景知识] {{context}}\n[问题] {question}")
    assert bad.input_variables == ["question"]
    assert bad.format(question="q") == "[背景知识] {context}\n[问题] q"   # the notes' silent bug
    with pytest.raises(ValueError, match=r"renders as the literal text \{context\}"):
        bad.format(question="q", context="retrieved text")


@pytest.mark.parametrize("bad, match", [("{0} and {x}", "plain name"), ("{a.b}", "plain name"), ("{x", "unbalanced"),
                                        ("}", "unbalanced")])
def test_bad_templates(bad, match):
    with pytest.raises(ValueError, match=match):
        template_variables(bad)
    with pytest.raises(TypeError, match="template must be a str"):
        template_variables(3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_equals_full_format(seed):
    rng = random.Random(seed)
    for _ in range(20):
        tmpl, used = _random_template(rng)
        values = {v: rng.choice(["{a}", "x}}y", "plain", ""]) for v in used}
        first = set(rng.sample(used, rng.randint(0, len(used))))
        t = PromptTemplate(tmpl).partial(**{k: values[k] for k in first})
        assert t.input_variables == [v for v in used if v not in first]
        assert t.format(**{k: values[k] for k in used if k not in first}) == tmpl.format(**values)
    with pytest.raises(ValueError, match="partial got"):
        PromptTemplate("{a}").partial(b=1)


def test_few_shot_template():
    fs = FewShotTemplate("Answer briefly.", PromptTemplate("Q: {q}\nA: {a}"), PromptTemplate("Q: {q}\nA:"))
    ex = [{"q": "2+2", "a": "4"}, {"q": "3+3", "a": "6"}]
    assert fs.format(ex, q="5+5") == "Answer briefly.\n\nQ: 2+2\nA: 4\n\nQ: 3+3\nA: 6\n\nQ: 5+5\nA:"
    assert fs.format(ex, max_examples=1, q="1+1").count("Q:") == 2
    with pytest.raises(ValueError, match="max_examples"):
        fs.format(ex, max_examples=-1, q="x")
    with pytest.raises(ValueError, match="missing variable"):
        fs.format([{"q": "only q"}], q="x")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_key_value_parser_round_trip(seed):
    rng = random.Random(seed)
    keys = rng.sample(["name", "city", "job", "age", "favourite food", "备注"], rng.randint(1, 5))
    p = KeyValueParser(keys)
    for _ in range(10):
        d = {k: "".join(rng.choices("abc: 12中", k=rng.randint(1, 8))).strip() or "v" for k in keys}
        assert p.parse(p.render(d)) == d
        assert p.parse("Sure! Here it is:\n\n" + p.render(d) + "\nHope that helps.") == d
    assert all(k in p.format_instructions() for k in keys)


def test_key_value_parser_errors():
    p = KeyValueParser(["name", "city"])
    with pytest.raises(OutputParserError, match=r"lacks the line\(s\) \['city: ...'\]"):
        p.parse("name: Ada")
    with pytest.raises(OutputParserError, match="appears twice"):
        p.parse("name: Ada\nname: Bob\ncity: Oslo")
    with pytest.raises(OutputParserError, match="lacks"):
        p.parse("name: Ada\ncity: ")
    assert isinstance(OutputParserError("x"), ValueError)
    with pytest.raises(TypeError, match="keys must be"):
        KeyValueParser("name")
    with pytest.raises(ValueError, match="distinct"):
        KeyValueParser(["a", "a"])
    with pytest.raises(ValueError, match="must not contain"):
        KeyValueParser(["a:b"])
    with pytest.raises(ValueError, match="values must map exactly"):
        p.render({"name": "Ada"})


@pytest.mark.parametrize("seed", [0, 1])
def test_json_parser_matches_json_loads(seed):
    rng = random.Random(seed)
    for _ in range(10):
        obj = {"answer": rng.randint(-99, 99), "why": rng.choice(["a {b}", "x", "中文"]), "n": [1, {"k": None}]}
        text = rng.choice(["", "Sure: ", "```json\n"]) + json.dumps(obj) + rng.choice(["", " done", "\n```"])
        assert JSONParser(["answer"]).parse(text) == json.loads(json.dumps(obj))
    with pytest.raises(OutputParserError, match="no JSON object"):
        JSONParser().parse("the answer is 4")
    with pytest.raises(OutputParserError, match="malformed JSON"):
        JSONParser().parse('{"answer": 4,}')
    with pytest.raises(OutputParserError, match=r"lacks required key\(s\) \['why'\]"):
        JSONParser(["answer", "why"]).parse('{"answer": 4}')


def test_chain_runs_steps_in_order():
    prompt = PromptTemplate("Name: {name}\nGive the city of {name}.")
    llm = RuleLLM([(r"city of (\w+)", r"name: \1\ncity: Oslo")])
    chain = prompt | Runnable(llm, "llm") | KeyValueParser(["name", "city"])
    trace: list = []
    assert chain.invoke({"name": "Ada"}, trace) == {"name": "Ada", "city": "Oslo"}
    assert [n for n, _ in trace] == ["prompt", "llm", "KeyValueParser"]
    assert trace[0][1] == "Name: Ada\nGive the city of Ada."
    longer = chain | Runnable(lambda d: d["city"].upper(), "upper")
    assert isinstance(longer, Chain) and len(longer.steps) == 4 and longer.invoke({"name": "Bo"}) == "OSLO"
    assert RuleLLM([]).__call__("anything") == "I don't know."
    with pytest.raises(TypeError, match="cannot use a int"):
        as_runnable(3)
    with pytest.raises(TypeError, match="a prompt step takes a dict"):
        chain.invoke("not a dict")
    with pytest.raises(OutputParserError):
        (prompt | Runnable(RuleLLM([])) | KeyValueParser(["city"])).invoke({"name": "Ada"})
