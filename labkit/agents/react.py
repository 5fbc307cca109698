"""The ReAct loop (推理-行动循环; Yao et al. 2023), chapter 21: thought → action → observation, until a final
answer or a step limit.

The policy (a model, or a scripted stand-in) sees the transcript and writes one step::

    Thought: 347*28 is too long to do in my head.
    Action: {"name": "calc", "arguments": {"expression": "347*28"}}

or ends with ``Final Answer: ...``. The loop parses the step (:func:`parse_react_step`), validates the call
(:func:`labkit.agents.tools.parse_tool_call`), runs the tool and appends ``Observation: <result>``. A bad call
does not crash the loop: the :class:`~labkit.agents.tools.ToolCallError` message becomes the observation, so
the policy can correct itself. After ``max_steps`` steps without a final answer the loop stops with
``answer=None`` and ``stopped="max_steps"``: a policy that loops forever costs at most ``max_steps`` calls.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from labkit.agents.parsers import OutputParserError
from labkit.agents.tools import Tool, ToolCallError, parse_tool_call

__all__ = ["ReactStep", "AgentResult", "parse_react_step", "react_loop", "scripted_policy"]


@dataclass
class ReactStep:
    """One step: the thought, the action (JSON text) or the final answer, and the observation."""

    thought: str
    action: str | None = None
    observation: str | None = None
    final: str | None = None


@dataclass
class AgentResult:
    """``answer`` (None when the step limit stopped the loop), the steps, and why it stopped."""

    answer: str | None
    steps: list[ReactStep] = field(default_factory=list)
    stopped: str = "final"
    transcript: str = ""


_THOUGHT = re.compile(r"Thought:\s*(.*?)\s*(?=\n\s*(?:Action|Final Answer):|\Z)", re.S)
_ACTION = re.compile(r"Action:\s*(.*?)\s*(?=\n\s*Observation:|\Z)", re.S)
_FINAL = re.compile(r"Final Answer:\s*(.*?)\s*\Z", re.S)


def parse_react_step(text: str) -> ReactStep:
    """Split one policy output into thought and action, or thought and final answer.

    Raises OutputParserError when the text has neither ``Action:`` nor ``Final Answer:``, or both.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be the policy's output as a str, got {type(text).__name__}")
    t, a, f = _THOUGHT.search(text), _ACTION.search(text), _FINAL.search(text)
    if (a is None) == (f is None):
        raise OutputParserError("a ReAct step needs exactly one of 'Action: {json}' or 'Final Answer: ...'; "
                                f"got {text[:80]!r}")
    thought = t.group(1) if t else ""
    return ReactStep(thought, action=a.group(1) if a else None, final=f.group(1) if f else None)


def _observe(action: str, table: Mapping[str, Tool]) -> str:
    try:
        call = parse_tool_call(action, table)
        return str(table[call.name].fn(**call.arguments))
    except ToolCallError as e:
        return f"Error: {e}"


def react_loop(policy: Callable[[str], str], question: str, tools: Sequence[Tool],
               max_steps: int = 5) -> AgentResult:
    """Run ReAct: at most ``max_steps`` policy calls; each action's tool output is appended as an observation.

    The transcript starts ``Question: ...`` and grows by ``<policy output>\\nObservation: <text>\\n`` per
    action; a malformed step or call yields an ``Error: ...`` observation (the loop continues).
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty str")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    table = {t.name: t for t in tools}
    transcript, steps = f"Question: {question}\n", []
    for _ in range(max_steps):
        out = policy(transcript).strip()
        try:
            step = parse_react_step(out)
        except OutputParserError as e:
            step = ReactStep(thought="", action=None, observation=f"Error: {e}")
        if step.final is not None:
            steps.append(step)
            return AgentResult(step.final, steps, "final", transcript + out + "\n")
        if step.action is not None:
            step.observation = _observe(step.action, table)
        steps.append(step)
        transcript += f"{out}\nObservation: {step.observation}\n"
    return AgentResult(None, steps, "max_steps", transcript)


def scripted_policy(transcript: str) -> str:
    """A rule-based stand-in for a model: compute ``a op b`` with ``calc``, then answer with the observation.

    Questions ``What is <expr>?``; if the last observation is an error it gives up with a final answer.
    """
    obs = re.findall(r"Observation: (.*)", transcript)
    if obs:
        if obs[-1].startswith("Error"):
            return "Thought: the tool failed.\nFinal Answer: I don't know"
        return f"Thought: the calculator answered.\nFinal Answer: {obs[-1]}"
    m = re.search(r"What is (.+?)\?", transcript)
    if not m:
        return "Thought: this is no arithmetic question.\nFinal Answer: I don't know"
    expr = m.group(1).replace(" ", "")
    return (f"Thought: {expr} is too long to compute in my head.\n"
            f'Action: {{"name": "calc", "arguments": {{"expression": "{expr}"}}}}')

