"""Chat template and loss masks for supervised fine-tuning (SFT, 监督微调), chapter 12.

**Chat template (对话模板).** A conversation becomes one token sequence with role tokens::

    <|system|>…<|end|><|user|>Reverse the letters.\\nk e p<|end|><|assistant|>p e k<|end|>

Message contents are encoded as *plain text* (a user who types ``<|end|>`` gets the characters, not the
special token), role markers and ``<|end|>`` are special ids inserted by the template.

**Loss mask (损失掩码).** ``labels`` equal ``input_ids`` on the tokens the model must learn to produce,
the content of every assistant turn and its closing ``<|end|>`` (so it learns to stop), and ``-100``
(ignored by cross-entropy) everywhere else. Labels are *aligned* with ``input_ids``; the loss shifts them
(logits at position t predict the label at t + 1), as Hugging Face does.
"""
from __future__ import annotations

from typing import Any, Sequence

from labkit.datasets import task as task_data

__all__ = ["IGNORE_INDEX", "ROLE_TOKENS", "END_TOKEN", "render_chat", "apply_chat_template", "build_labels", "encode_example"]


IGNORE_INDEX = -100
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TOKEN = "<|end|>"


def _special_id(tokenizer: Any, name: str) -> int:
    sp = getattr(tokenizer, "special_tokens", None)
    if not isinstance(sp, dict) or name not in sp:
        raise ValueError(f"the tokenizer has no special token {name!r}; the chat template needs "
                         f"{sorted([*ROLE_TOKENS.values(), END_TOKEN])} (labkit's Shakespeare tokenizer has them)")
    return int(sp[name])


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLE_TOKENS or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be {{'role': one of {list(ROLE_TOKENS)}, 'content': str}}, got {m!r}")


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The template as text: ``<|role|>content<|end|>`` per message (+ ``<|assistant|>`` to prompt a reply)."""
    _check_messages(messages)
    text = "".join(f"{ROLE_TOKENS[m['role']]}{m['content']}{END_TOKEN}" for m in messages)
    return text + (ROLE_TOKENS["assistant"] if add_generation_prompt else "")


def _segments(messages: Sequence[dict[str, str]], tokenizer: Any) -> list[tuple[list[int], bool]]:
    """``[(ids, is_target), ...]``: role token (no), content (yes for assistant), ``<|end|>`` (yes for assistant)."""
    _check_messages(messages)
    end = _special_id(tokenizer, END_TOKEN)
    segs = []
    for m in messages:
        target = m["role"] == "assistant"
        segs.append(([_special_id(tokenizer, ROLE_TOKENS[m["role"]])], False))
        segs.append((tokenizer.encode(m["content"], allowed_special="none"), target))
        segs.append(([end], target))
    return segs


def apply_chat_template(messages: Sequence[dict[str, str]], tokenizer: Any,
                        add_generation_prompt: bool = False) -> list[int]:
    """Token ids of :func:`render_chat`, with role/end markers as special ids and contents as plain text.

    ``add_generation_prompt=True`` appends ``<|assistant|>`` (use it with the conversation *without* the
    answer, to ask the model for one).
    """
    ids = [i for seg, _ in _segments(messages, tokenizer) for i in seg]
    if add_generation_prompt:
        ids.append(_special_id(tokenizer, ROLE_TOKENS["assistant"]))
    return ids


def build_labels(messages: Sequence[dict[str, str]], tokenizer: Any,
                 train_on: str = "all_assistant") -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: labels are ``-100`` except on assistant tokens (content + closing ``<|end|>``).

    Args:
        train_on: ``"all_assistant"`` (every assistant turn, the usual multi-turn SFT) or
            ``"last_assistant"`` (only the final reply; earlier replies are context).
    """
    if train_on not in ("all_assistant", "last_assistant"):
        raise ValueError(f"train_on must be 'all_assistant' or 'last_assistant', got {train_on!r}")
    segs = _segments(messages, tokenizer)
    if not any(t for _, t in segs):
        raise ValueError("the conversation has no assistant message, so nothing would be trained; "
                         "end it with the assistant's reply")
    last_turn = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids, labels = [], []
    for k, (seg, target) in enumerate(segs):
        if train_on == "last_assistant" and k // 3 != last_turn:
            target = False
        ids.extend(seg)
        labels.extend(seg if target else [IGNORE_INDEX] * len(seg))
    return ids, labels


def encode_example(record: dict[str, Any], tokenizer: Any) -> dict[str, list[int]]:
    """An Alpaca or chat record → ``{"input_ids", "labels"}`` (validated first)."""
    fmt = task_data.validate_example(record)
    chat = task_data.to_chat(record) if fmt == "alpaca" else record
    ids, labels = build_labels(chat["messages"], tokenizer)
    return {"input_ids": ids, "labels": labels}
