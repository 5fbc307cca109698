"""Agents and tools (chapter 21): prompt templates, chains, output parsers, tool calls, ReAct, conversation memory."""
