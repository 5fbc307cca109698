"""Agents and tools (chapter 21): prompt templates, chains, output parsers, tool calls, ReAct, conversation
memory, and the course model fine-tuned to call a calculator and the chapter-18 retriever (``toolmodel``)."""
from __future__ import annotations

from .chains import Chain, RuleLLM, Runnable, as_runnable  # noqa: F401
from .dialogue import DIALOGUE_PATH, FACTS, compare_memories, load_dialogue, make_dialogue, replay  # noqa: F401
from .memory import (BufferMemory, SummaryBufferMemory, SummaryMemory, TokenBufferMemory,  # noqa: F401
                     WindowMemory, first_sentence, render_messages, token_buffer_messages, window_messages)
from .memory_store import EntityMemory, KGMemory, VectorMemory, extract_facts  # noqa: F401
from .parsers import JSONParser, KeyValueParser, OutputParserError  # noqa: F401
from .prompts import FewShotTemplate, PromptTemplate, template_variables  # noqa: F401
from .react import AgentResult, ReactStep, parse_react_step, react_loop, scripted_policy  # noqa: F401
from .toolmodel import (WORLD_TEMPLATES, accuracy_by_kind, argument_candidates, arithmetic_questions,  # noqa: F401
                        constrained_call, copy_accuracy, decision_counts, direct_conversation, make_search_tool,
                        run_direct, run_tool_agent, sum_questions, tool_conversation, world_questions)
from .tools import (CALC_TOOL, JSON_TYPES, Tool, ToolCall, ToolCallError, calculate, compact_to_json,  # noqa: F401
                    format_compact_call, parse_tool_call)

__all__ = ["PromptTemplate", "FewShotTemplate", "template_variables", "OutputParserError", "KeyValueParser",
           "JSONParser", "Runnable", "Chain", "as_runnable", "RuleLLM", "ToolCallError", "Tool", "ToolCall",
           "JSON_TYPES", "parse_tool_call", "compact_to_json", "format_compact_call", "calculate", "CALC_TOOL",
           "ReactStep", "AgentResult", "parse_react_step", "react_loop", "scripted_policy", "BufferMemory",
           "WindowMemory", "TokenBufferMemory", "SummaryMemory", "SummaryBufferMemory", "first_sentence",
           "render_messages", "window_messages", "token_buffer_messages", "EntityMemory", "KGMemory", "VectorMemory",
           "extract_facts", "FACTS",
           "DIALOGUE_PATH", "make_dialogue", "load_dialogue", "replay", "compare_memories", "WORLD_TEMPLATES",
           "arithmetic_questions", "sum_questions", "world_questions", "make_search_tool", "tool_conversation",
           "direct_conversation", "run_tool_agent", "run_direct", "accuracy_by_kind", "argument_candidates",
           "constrained_call", "copy_accuracy", "decision_counts"]
