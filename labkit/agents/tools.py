"""Tool calling (工具调用), chapter 21: a tool schema, the JSON function-call format, its validator, a safe
calculator, and the compact call syntax a 128-token model can emit.

**Schema (模式).** A tool is described the way OpenAI-style function calling describes it::

    {"name": "calc", "description": "...",
     "parameters": {"type": "object",
                    "properties": {"expression": {"type": "string", "description": "..."}},
                    "required": ["expression"]}}

**Call (调用).** The model answers with one JSON object ``{"name": <tool>, "arguments": {<param>: <value>}}``.
:func:`parse_tool_call` accepts it only if the JSON parses, the tool exists, every required argument is there,
no unknown argument is, and every value has the declared JSON type; anything else raises
:class:`ToolCallError` (a ``ValueError``) that says what is wrong and how to fix it, so an agent loop can hand
the message back to the model as its observation instead of crashing.

**Compact form (紧凑格式).** ``<call>calc(347*28)</call>`` costs 20 tokens of the course tokenizer where the
JSON costs about 40; :func:`compact_to_json` turns it into the JSON call (its one positional argument fills the
tool's first required parameter), so both forms meet the same validator.
"""
from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["ToolCallError", "Tool", "ToolCall", "JSON_TYPES", "parse_tool_call", "compact_to_json",
           "format_compact_call", "calculate", "CALC_TOOL"]

#: JSON-schema type name → the Python types that satisfy it (bool is not an integer here).
JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                          "boolean": (bool,), "object": (dict,), "array": (list,)}


class ToolCallError(ValueError):
    """A model's tool call that cannot be run: malformed JSON, an unknown tool, missing or wrong arguments."""


@dataclass(frozen=True)
class Tool:
    """A callable with a JSON schema: ``parameters`` maps argument name → ``{"type", "description"}``.

    ``required`` lists the arguments a call must give (default: all of them, in order).
    """

    name: str
    description: str
    parameters: Mapping[str, Mapping[str, str]]
    fn: Callable[..., Any]
    required: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"name must be an identifier such as 'calc', got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"fn of tool {self.name!r} must be callable, got {type(self.fn).__name__}")
        for arg, spec in self.parameters.items():
            if not isinstance(spec, Mapping) or spec.get("type") not in JSON_TYPES:
                raise ValueError(f"parameters[{arg!r}] of tool {self.name!r} needs a 'type' in {list(JSON_TYPES)}, "
                                 f"got {spec!r}")
        unknown = [r for r in self.required_args if r not in self.parameters]
        if unknown:
            raise ValueError(f"required {unknown} of tool {self.name!r} are not in its parameters "
                             f"{list(self.parameters)}")

    @property
    def required_args(self) -> list[str]:
        return list(self.parameters) if self.required is None else list(self.required)

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema (what goes into the system prompt)."""
        return {"name": self.name, "description": self.description,
                "parameters": {"type": "object", "properties": {k: dict(v) for k, v in self.parameters.items()},
                               "required": self.required_args}}


@dataclass(frozen=True)
class ToolCall:
    """A validated call: the tool's name and its arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


def _tool_table(tools: Sequence[Tool] | Mapping[str, Tool]) -> dict[str, Tool]:
    table = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    if not table or not all(isinstance(t, Tool) for t in table.values()):
        raise TypeError("tools must be a non-empty list of Tool (or a dict name → Tool)")
    return table


def _check_arguments(tool: Tool, args: dict[str, Any]) -> None:
    missing = [a for a in tool.required_args if a not in args]
    if missing:
        raise ToolCallError(f"call of {tool.name!r} is missing required argument(s) {missing}; "
                            f"its schema requires {tool.required_args}")
    extra = [a for a in args if a not in tool.parameters]
    if extra:
        raise ToolCallError(f"call of {tool.name!r} has unknown argument(s) {extra}; it accepts "
                            f"{list(tool.parameters)}")
    for a, v in args.items():
        want = tool.parameters[a]["type"]
        ok = isinstance(v, JSON_TYPES[want]) and not (want in ("integer", "number") and isinstance(v, bool))
        if not ok:
            raise ToolCallError(f"argument {a!r} of {tool.name!r} must be of JSON type {want!r}, "
                                f"got {type(v).__name__} {v!r}")


def parse_tool_call(text: str, tools: Sequence[Tool] | Mapping[str, Tool]) -> ToolCall:
    """Parse and validate one JSON function call ``{"name": ..., "arguments": {...}}`` against ``tools``.

    Raises :class:`ToolCallError` naming the problem: text that is not JSON (with the position), JSON that is
    not an object, a missing/extra top-level key, an unknown tool (listing the known ones), ``arguments`` not
    an object, a missing required argument, an unknown argument, or a value of the wrong JSON type.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be the model's output as a str, got {type(text).__name__}")
    table = _tool_table(tools)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolCallError(f"tool call is not valid JSON ({e.msg} at char {e.pos}): {text[:80]!r}; "
                            'write {"name": "<tool>", "arguments": {...}}') from None
    if not isinstance(obj, dict):
        raise ToolCallError(f"tool call must be a JSON object, got {type(obj).__name__}")
    if set(obj) != {"name", "arguments"}:
        raise ToolCallError(f"tool call must have exactly the keys 'name' and 'arguments', got {sorted(obj)}")
    name, args = obj["name"], obj["arguments"]
    if name not in table:
        raise ToolCallError(f"unknown tool {name!r}; available tools: {sorted(table)}")
    if not isinstance(args, dict):
        raise ToolCallError(f"'arguments' of {name!r} must be a JSON object, got {type(args).__name__}")
    _check_arguments(table[name], args)
    return ToolCall(name, dict(args))


_COMPACT = re.compile(r"<call>\s*([A-Za-z_][A-Za-z0-9_]*)\((.*)\)\s*</call>", re.S)


def compact_to_json(text: str, tools: Sequence[Tool] | Mapping[str, Tool]) -> str:
    """``<call>name(arg)</call>`` → ``{"name": "name", "arguments": {<first required param>: "arg"}}``.

    Raises :class:`ToolCallError` when ``text`` holds no well-formed ``<call>…(…)</call>`` or names an unknown
    tool. The argument is passed as a string (every compact tool takes one string).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    m = _COMPACT.search(text)
    if m is None:
        raise ToolCallError(f"no tool call of the form <call>name(argument)</call> in {text[:80]!r}")
    table = _tool_table(tools)
    name, arg = m.group(1), m.group(2).strip()
    if name not in table:
        raise ToolCallError(f"unknown tool {name!r}; available tools: {sorted(table)}")
    params = table[name].required_args or list(table[name].parameters)
    return json.dumps({"name": name, "arguments": {params[0]: arg}}, ensure_ascii=False)


def format_compact_call(name: str, arg: str) -> str:
    """The compact call the model is trained to emit: ``<call>name(arg)</call>``."""
    return f"<call>{name}({arg})</call>"


# ------------------------------------------------------------------------------------------ calculator
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {ast.Add: operator.add, ast.Sub: operator.sub,
                                                  ast.Mult: operator.mul, ast.Div: operator.truediv,
                                                  ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
                                                  ast.Pow: operator.pow}


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(b) > 64:
            raise ToolCallError(f"exponent {b} is too large for the calculator (at most 64)")
        return _BINOPS[type(node.op)](a, b)
    raise ToolCallError(f"the calculator accepts numbers, + - * / // % ** and parentheses; "
                        f"found {type(node).__name__}")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression safely (an AST walk, never ``eval``); integers print exactly.

    ``"347*28"`` → ``"9716"``, ``"7/2"`` → ``"3.5"``. Raises :class:`ToolCallError` for anything that is not
    arithmetic (names, calls, attributes), for a syntax error and for division by zero.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ToolCallError(f"expression must be a non-empty string such as '12*34', got {expression!r}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolCallError(f"expression {expression!r} is not valid arithmetic") from None
    try:
        v = _eval(tree)
    except ZeroDivisionError:
        raise ToolCallError(f"division by zero in {expression!r}") from None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v) if isinstance(v, int) else f"{v:.6g}"


#: The calculator as a tool.
CALC_TOOL = Tool("calc", "Evaluate an arithmetic expression exactly, e.g. 347*28.",
                 {"expression": {"type": "string", "description": "numbers with + - * / and parentheses"}},
                 calculate)
