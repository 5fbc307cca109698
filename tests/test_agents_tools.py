"""Chapter 21: tool schema, the JSON call validator, the compact call, the calculator and the ReAct loop.

* every kind of bad call (not JSON, not an object, wrong keys, unknown tool, arguments not an object, missing
  or unknown argument, wrong JSON type, bool given for an integer) raises ToolCallError naming the problem;
* valid calls round-trip through ``ToolCall.to_json``; the compact form gives the same call as the JSON;
* the calculator equals Python's arithmetic on random integer expressions (several seeds) and refuses code;
* ReAct: the scripted policy's answer equals the calculator's result, a looping policy is stopped after exactly
  ``max_steps`` policy calls, a bad call comes back as an ``Error:`` observation;
* the search tool (chapter-18 retriever + reader) answers a shipped world question.
"""
from __future__ import annotations

import json
import random

import pytest

from labkit.agents import (CALC_TOOL, OutputParserError, Tool, ToolCall, ToolCallError, calculate, compact_to_json,
                           format_compact_call, make_search_tool, parse_react_step, parse_tool_call, react_loop,
                           scripted_policy)

LOOKUP = Tool("lookup", "Find a person's age.", {"name": {"type": "string", "description": "who"},
                                                 "year": {"type": "integer", "description": "in which year"},
                                                 "exact": {"type": "boolean", "description": "no rounding"}},
              lambda name, year=2024, exact=False: f"{name} is 40 in {year}", required=["name"])
TOOLS = [CALC_TOOL, LOOKUP]


def test_valid_calls_round_trip():
    call = parse_tool_call('{"name": "lookup", "arguments": {"name": "Ada", "year": 1850}}', TOOLS)
    assert call == ToolCall("lookup", {"name": "Ada", "year": 1850})
    assert parse_tool_call(call.to_json(), TOOLS) == call
    assert parse_tool_call('{"arguments": {"expression": "1+2"}, "name": "calc"}', {"calc": CALC_TOOL}).name == "calc"
    assert LOOKUP.schema()["parameters"]["required"] == ["name"]
    assert CALC_TOOL.schema() == {"name": "calc", "description": CALC_TOOL.description, "parameters": {
        "type": "object", "properties": {"expression": dict(CALC_TOOL.parameters["expression"])},
        "required": ["expression"]}}


@pytest.mark.parametrize("text, match", [
    ('{"name": "calc", "arguments": {"expression": "1+2"}', "not valid JSON"),
    ("calc(1+2)", "not valid JSON"),
    ('["calc", {"expression": "1+2"}]', "must be a JSON object"),
    ('{"name": "calc"}', "exactly the keys 'name' and 'arguments'"),
    ('{"name": "calc", "arguments": {}, "id": 3}', "exactly the keys"),
    ('{"name": "search", "arguments": {"query": "x"}}',
     r"unknown tool 'search'; available tools: \['calc', 'lookup'\]"),
    ('{"name": "calc", "arguments": "1+2"}', "'arguments' of 'calc' must be a JSON object"),
    ('{"name": "calc", "arguments": {}}', r"missing required argument\(s\) \['expression'\]"),
    ('{"name": "calc", "arguments": {"expression": "1", "precision": 2}}', r"unknown argument\(s\) \['precision'\]"),
    ('{"name": "calc", "arguments": {"expression": 12}}', "must be of JSON type 'string'"),
    ('{"name": "lookup", "arguments": {"name": "Ada", "year": "1850"}}',
     "'year' of 'lookup' must be of JSON type 'integer'"),
    ('{"name": "lookup", "arguments": {"name": "Ada", "year": true}}', "must be of JSON type 'integer'"),
    ('{"name": "lookup", "arguments": {"name": "Ada", "exact": 1}}', "must be of JSON type 'boolean'"),
])
def test_bad_calls_raise_tool_call_error(text, match):
    with pytest.raises(ToolCallError, match=match):
        parse_tool_call(text, TOOLS)
    assert issubclass(ToolCallError, ValueError)


def test_bad_arguments_of_the_validator_and_schema():
    with pytest.raises(TypeError, match="text must be"):
        parse_tool_call({"name": "calc"}, TOOLS)
    with pytest.raises(TypeError, match="tools must be a non-empty list of Tool"):
        parse_tool_call('{"name": "calc", "arguments": {}}', [])
    with pytest.raises(ValueError, match="name must be an identifier"):
        Tool("my tool", "", {}, print)
    with pytest.raises(ValueError, match="needs a 'type'"):
        Tool("t", "", {"x": {"type": "str"}}, print)
    with pytest.raises(ValueError, match="are not in its parameters"):
        Tool("t", "", {"x": {"type": "string"}}, print, required=["y"])
    with pytest.raises(TypeError, match="must be callable"):
        Tool("t", "", {}, "print")


def test_compact_calls():
    assert json.loads(compact_to_json("<call>calc(347*28)</call>", TOOLS)) == {
        "name": "calc", "arguments": {"expression": "347*28"}}
    text = format_compact_call("lookup", "Ada Lovelace")
    assert parse_tool_call(compact_to_json("noise " + text + " more", TOOLS), TOOLS) == ToolCall(
        "lookup", {"name": "Ada Lovelace"})
    for bad, match in [("calc(1+2)", "no tool call"), ("<call>calc 1+2</call>", "no tool call"),
                       ("<call>web(x)</call>", "unknown tool 'web'")]:
        with pytest.raises(ToolCallError, match=match):
            compact_to_json(bad, TOOLS)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_calculator_matches_python(seed):
    rng = random.Random(seed)
    for _ in range(50):
        a, b, c = rng.randint(-999, 999), rng.randint(1, 999), rng.randint(0, 99)
        op1, op2 = rng.choice("+-*"), rng.choice("+-*")
        expr = f"({a}{op1}{b}){op2}{c}"
        assert calculate(expr) == str(eval(expr))   # the reference: Python's own integer arithmetic
        assert calculate(f"{a} // {b}") == str(a // b) and calculate(f"{a}%{b}") == str(a % b)
    assert calculate("7/2") == "3.5" and calculate("8/2") == "4" and calculate("-(2**10)") == "-1024"


@pytest.mark.parametrize("bad, match", [("__import__('os').getcwd()", "accepts numbers"), ("x+1", "accepts numbers"),
                                        ("1/0", "division by zero"), ("2**1000", "exponent"), ("1+", "not valid"),
                                        ("", "non-empty"), ("'a'*3", "accepts numbers")])
def test_calculator_refuses(bad, match):
    with pytest.raises(ToolCallError, match=match):
        calculate(bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_react_scripted_policy_answers_with_the_tool_result(seed):
    rng = random.Random(seed)
    for _ in range(10):
        expr = f"{rng.randint(10, 9999)}{rng.choice('+-*')}{rng.randint(10, 9999)}"
        res = react_loop(scripted_policy, f"What is {expr}?", TOOLS, max_steps=4)
        assert res.stopped == "final" and res.answer == str(eval(expr)) and len(res.steps) == 2
        assert res.steps[0].observation == res.answer and res.steps[0].action is not None
        assert res.transcript.startswith(f"Question: What is {expr}?\nThought:")
        assert f"Observation: {res.answer}\n" in res.transcript
        assert res.transcript.endswith(f"Final Answer: {res.answer}\n")


@pytest.mark.parametrize("max_steps", [1, 3, 7])
def test_react_step_limit(max_steps):
    calls = []

    def looping(transcript: str) -> str:
        calls.append(transcript)
        return 'Thought: again.\nAction: {"name": "calc", "arguments": {"expression": "1+1"}}'

    res = react_loop(looping, "What is 1+1?", TOOLS, max_steps=max_steps)
    assert res.answer is None and res.stopped == "max_steps"
    assert len(calls) == max_steps == len(res.steps)
    assert [s.observation for s in res.steps] == ["2"] * max_steps
    assert calls[-1].count("Observation: 2") == max_steps - 1


def test_react_errors_become_observations():
    outputs = iter(['Thought: hm.\nAction: {"name": "web", "arguments": {}}', "I think it is 4",
                    'Action: {"name": "calc", "arguments": {"expression": "2+2"}}', "Final Answer: 4"])
    res = react_loop(lambda t: next(outputs), "What is 2+2?", TOOLS, max_steps=5)
    assert res.answer == "4" and len(res.steps) == 4
    assert res.steps[0].observation.startswith("Error: unknown tool 'web'")
    assert res.steps[1].observation.startswith("Error: a ReAct step needs exactly one of")
    assert res.steps[2].observation == "4"
    with pytest.raises(ValueError, match="max_steps must be a positive int"):
        react_loop(scripted_policy, "What is 1+1?", TOOLS, max_steps=0)
    with pytest.raises(ValueError, match="question must be"):
        react_loop(scripted_policy, "  ", TOOLS)


def test_parse_react_step():
    s = parse_react_step("Thought: add them.\nAction: {\"name\": \"calc\", \"arguments\": {}}")
    assert s.thought == "add them." and s.action == '{"name": "calc", "arguments": {}}' and s.final is None
    s = parse_react_step("Thought: done.\nFinal Answer: Oslo, Norway")
    assert s.final == "Oslo, Norway" and s.action is None
    with pytest.raises(OutputParserError, match="exactly one of"):
        parse_react_step("Thought: x\nAction: {}\nFinal Answer: y")
    with pytest.raises(TypeError, match="text must be"):
        parse_react_step(None)


def test_search_tool_answers_a_world_question():
    search = make_search_tool()
    assert search.fn("Where was Lionia Ravsby born?") == "Lornmoor"
    assert search.fn("In what year was Kerec Ellvale born?") == "1927"
