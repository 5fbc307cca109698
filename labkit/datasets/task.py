"""The course's instruction task (指令任务): five small skills with exactly checkable answers.

Fine-tuning needs a task whose success can be measured. This module generates one, deterministically,
and ships it in ``data/tasks/`` in the two standard formats:

* **Alpaca** (instruction / input / output JSON, a list of records)::

      {"instruction": "Reverse the letters.", "input": "k-e-p", "output": "p-e-k"}

* **Chat** (OpenAI-style ``messages`` JSONL, one object per line; the last message is the target)::

      {"messages": [{"role": "user", "content": "Reverse the letters.\\nk-e-p"},
                    {"role": "assistant", "content": "p-e-k"}]}

The five skills (技能), roughly from easy to hard for a small model:

=========  ===============================  ===========  ===========
skill      instruction                      input        output
=========  ===============================  ===========  ===========
last       Give the last letter.            ``k-e-p``    ``p``
upper      Write the letters in capitals.   ``k-e-p``    ``K-E-P``
shift      Shift each letter by one.        ``k-e-z``    ``l-f-a``
reverse    Reverse the letters.             ``k-e-p``    ``p-e-k``
sort       Sort the letters.                ``k-e-p``    ``e-k-p``
=========  ===============================  ===========  ===========

The format is chosen for the tokenizer: letters joined by ``-`` are each one token of the Shakespeare BPE,
the same token wherever they stand. Spaces would not do: ``" k"`` is one token but ``" q"`` is two and the
first letter of a line has no space, so the same letter would be spelled three ways. Lists hold 3–5 letters
(distinct for ``sort``). ``score`` is exact match after whitespace normalization.

An earlier version had two more skills that a model of this size did not learn within the course's CPU
budget: two-digit addition (carries) and answering a question from key=value facts in the prompt (it needs
three attention steps composed: bring the question's key to the answer, find it among the facts, read the
value after it); both stayed near chance after 2,000 fine-tuning steps, while the five skills above are
learned.

Regenerate the shipped files with ``python -m labkit.datasets.task generate`` (seeded; byte-identical output).
"""
from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from labkit.core.io import atomic_write_text
from labkit.core.paths import DATA

__all__ = [
    "SKILLS", "INSTRUCTIONS", "ROLES", "TASK_DIR", "N_TRAIN_PER_SKILL", "N_TEST_PER_SKILL",
    "make_example", "generate_task", "write_task", "load_task", "validate_example", "validate_records",
    "SEP", "to_chat", "to_alpaca", "prompt_text", "gold_answer", "skill_of", "normalize", "score",
    "score_by_skill",
]

#: The skills, in a fixed order (per-skill tables use it).
SKILLS: tuple[str, ...] = ("last", "upper", "shift", "reverse", "sort")

#: One fixed instruction per skill, so a record's skill can be read back from its instruction.
INSTRUCTIONS: dict[str, str] = {
    "last": "Give the last letter.",
    "upper": "Write the letters in capitals.",
    "shift": "Shift each letter by one.",
    "reverse": "Reverse the letters.",
    "sort": "Sort the letters.",
}
_SKILL_OF_INSTRUCTION = {v: k for k, v in INSTRUCTIONS.items()}

#: Roles allowed in chat records.
ROLES: tuple[str, ...] = ("system", "user", "assistant")

#: Where the shipped files live, and how many examples each split has per skill.
TASK_DIR: Path = DATA / "tasks"
N_TRAIN_PER_SKILL = 2000
N_TEST_PER_SKILL = 60
_FILES = {("alpaca", "train"): "alpaca_train.json", ("alpaca", "test"): "alpaca_test.json",
          ("chat", "train"): "chat_train.jsonl", ("chat", "test"): "chat_test.jsonl"}

#: The separator between letters (one token of its own in the Shakespeare BPE, see the module docstring).
SEP = "-"
_ALPHA_KEYS = ("alpaca", "chat")


# ----------------------------------------------------------------------------------------- generation
def _letters(rng: random.Random, lo: int = 3, hi: int = 5, distinct: bool = False) -> list[str]:
    n = rng.randint(lo, hi)
    if distinct:
        return rng.sample(string.ascii_lowercase, n)
    return [rng.choice(string.ascii_lowercase) for _ in range(n)]


def _shift(letter: str) -> str:
    """The next letter of the alphabet, ``z`` → ``a``."""
    return chr((ord(letter) - ord("a") + 1) % 26 + ord("a"))


def make_example(skill: str, rng: random.Random) -> dict[str, str]:
    """One Alpaca record ``{"instruction", "input", "output"}`` of ``skill``, drawn with ``rng``."""
    if skill not in INSTRUCTIONS:
        raise ValueError(f"unknown skill {skill!r}; pick one of {list(SKILLS)}")
    xs = _letters(rng, distinct=skill == "sort")
    out = {"last": xs[-1:], "upper": [x.upper() for x in xs], "shift": [_shift(x) for x in xs],
           "reverse": xs[::-1], "sort": sorted(xs)}[skill]
    return {"instruction": INSTRUCTIONS[skill], "input": SEP.join(xs), "output": SEP.join(out)}


def generate_task(seed: int = 0, n_train: int = N_TRAIN_PER_SKILL,
                  n_test: int = N_TEST_PER_SKILL) -> dict[str, list[dict[str, str]]]:
    """The train/test split as Alpaca records: ``{"train": [...], "test": [...]}``.

    Deterministic for a given ``seed``. Every (instruction, input) pair is unique across *both* splits,
    so no test prompt is ever seen in training. Records are interleaved by skill
    (last, upper, shift, reverse, sort, last, ...).
    """
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    rng = random.Random(seed)
    per_skill: dict[str, list[dict[str, str]]] = {}
    for skill in SKILLS:
        seen: set[str] = set()
        recs: list[dict[str, str]] = []
        while len(recs) < n_train + n_test:
            ex = make_example(skill, rng)
            if ex["input"] not in seen:
                seen.add(ex["input"])
                recs.append(ex)
        per_skill[skill] = recs
    test = [per_skill[s][i] for i in range(n_test) for s in SKILLS]
    train = [per_skill[s][n_test + i] for i in range(n_train) for s in SKILLS]
    return {"train": train, "test": test}


def to_chat(record: dict[str, str], system: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Alpaca record → chat record (``user`` = instruction + newline + input, ``assistant`` = output)."""
    validate_example(record, format="alpaca")
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs += [{"role": "user", "content": prompt_text(record)},
             {"role": "assistant", "content": record["output"]}]
    return {"messages": msgs}


def to_alpaca(record: dict[str, Any]) -> dict[str, str]:
    """Chat record (one user turn, one assistant turn, optional system) → Alpaca record."""
    validate_example(record, format="chat")
    turns = [m for m in record["messages"] if m["role"] != "system"]
    if len(turns) != 2:
        raise ValueError(f"to_alpaca needs exactly one user and one assistant turn, got {len(turns)} turns")
    instruction, _, inp = turns[0]["content"].partition("\n")
    return {"instruction": instruction, "input": inp, "output": turns[1]["content"]}


def write_task(out_dir: str | Path = TASK_DIR, seed: int = 0) -> list[Path]:
    """Generate the task and write the four files (Alpaca JSON and chat JSONL, train and test)."""
    out = Path(out_dir)
    splits = generate_task(seed)
    written = []
    for split, recs in splits.items():
        p = out / _FILES[("alpaca", split)]
        atomic_write_text(p, json.dumps(recs, indent=1, ensure_ascii=True) + "\n")
        written.append(p)
        p = out / _FILES[("chat", split)]
        atomic_write_text(p, "".join(json.dumps(to_chat(r), ensure_ascii=True) + "\n" for r in recs))
        written.append(p)
    return written


# ------------------------------------------------------------------------------------------- loading
def load_task(split: str = "train", format: str = "alpaca", *, root: str | Path | None = None,
              validate: bool = True) -> list[dict[str, Any]]:
    """Load a shipped split: a list of Alpaca records, or of chat records (``format="chat"``).

    Args:
        split: ``"train"`` (10,000 records) or ``"test"`` (300 records).
        format: ``"alpaca"`` (instruction/input/output) or ``"chat"`` (``messages``).
        root: folder holding the files (default ``data/tasks``).
        validate: run :func:`validate_records` on what was read.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if format not in _ALPHA_KEYS:
        raise ValueError(f"format must be 'alpaca' or 'chat', got {format!r}")
    path = Path(root or TASK_DIR) / _FILES[(format, split)]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with `python -m labkit.datasets.task generate`")
    text = path.read_text(encoding="utf-8")
    if format == "alpaca":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); regenerate it with "
                             "`python -m labkit.datasets.task generate`") from None
    else:
        records = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path.name} line {i} is not valid JSON: {e}") from None
    if validate:
        validate_records(records, format=format)
    return records


def _validate_alpaca(record: dict[str, Any]) -> str:
    """The Alpaca checks of :func:`validate_example`."""
    want = {"instruction", "input", "output"}
    keys = set(record)
    if keys != want:
        missing, extra = sorted(want - keys), sorted(keys - want)
        raise ValueError(f"alpaca record must have exactly the keys {sorted(want)}; "
                         f"missing {missing}, extra {extra}")
    for k in ("instruction", "input", "output"):
        if not isinstance(record[k], str):
            raise TypeError(f"alpaca field {k!r} must be a str, got {type(record[k]).__name__}")
    for k in ("instruction", "output"):
        if not record[k].strip():
            raise ValueError(f"alpaca field {k!r} is empty; write the {k}")
    return "alpaca"


def _check_message(i: int, m: Any, prev: str | None) -> str:
    """Check ``messages[i]`` (``prev``: the role before it) and return its role."""
    if not isinstance(m, dict) or set(m) != {"role", "content"}:
        raise ValueError(f"messages[{i}] must be a dict with exactly the keys 'role' and 'content', got {m!r}")
    role, content = m["role"], m["content"]
    if role not in ROLES:
        raise ValueError(f"messages[{i}] has unknown role {role!r}; use one of {list(ROLES)}")
    if not isinstance(content, str):
        raise TypeError(f"messages[{i}]['content'] must be a str, got {type(content).__name__}")
    if not content.strip():
        raise ValueError(f"messages[{i}]['content'] is empty")
    if role == "system" and i != 0:
        raise ValueError(f"messages[{i}] is a system message; only the first message may be one")
    if role == prev:
        raise ValueError(f"messages[{i - 1}] and messages[{i}] are both from {role!r}; "
                         "alternate user and assistant turns (merge the two messages)")
    return role


def _validate_chat(record: dict[str, Any]) -> str:
    """The chat checks of :func:`validate_example`."""
    if set(record) != {"messages"}:
        extra = sorted(set(record) - {"messages"})
        hint = (" (a 'completion' next to 'messages' mixes the legacy prompt/completion format into chat; "
                "put the answer in a final assistant message)") if "completion" in record else ""
        raise ValueError(f"chat record must have only the key 'messages'; missing "
                         f"{sorted({'messages'} - set(record))}, extra {extra}{hint}")
    msgs = record["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("chat 'messages' must be a non-empty list of {'role', 'content'} dicts")
    prev = None
    for i, m in enumerate(msgs):
        prev = _check_message(i, m, prev)
    if msgs[-1]["role"] != "assistant":
        raise ValueError(f"the last message must be from the assistant (the training target), "
                         f"got {msgs[-1]['role']!r}")
    return "chat"


def validate_example(record: Any, format: str | None = None) -> str:
    """Check one record and return its format (``"alpaca"`` or ``"chat"``); raise on anything malformed.

    Alpaca: a dict with exactly the keys ``instruction``, ``input``, ``output``, all strings;
    ``instruction`` and ``output`` non-empty (``input`` may be ``""``).
    Chat: a dict with exactly the key ``messages``: a non-empty list of ``{"role", "content"}`` dicts,
    roles in ``system``/``user``/``assistant``, a system message only first, no two consecutive messages
    from the same role, content a non-empty string, the last message from the assistant (the target).

    Raises:
        TypeError: the record or a field has the wrong type.
        ValueError: a key is missing or extra, a role is unknown, or the turn order is wrong.
    """
    if not isinstance(record, dict):
        raise TypeError(f"a record must be a dict, got {type(record).__name__}")
    if format is None:
        format = "chat" if "messages" in record else "alpaca"
    if format not in _ALPHA_KEYS:
        raise ValueError(f"format must be 'alpaca', 'chat' or None (infer), got {format!r}")
    if format == "alpaca":
        return _validate_alpaca(record)
    return _validate_chat(record)


def validate_records(records: Sequence[Any], format: str | None = None) -> int:
    """Validate every record; the error names the index of the first bad one. Returns the count."""
    if not isinstance(records, (list, tuple)):
        raise TypeError(f"records must be a list, got {type(records).__name__}")
    for i, r in enumerate(records):
        try:
            validate_example(r, format=format)
        except (TypeError, ValueError) as e:
            raise type(e)(f"record {i}: {e}") from None
    return len(records)


# ------------------------------------------------------------------------------------------- scoring
def prompt_text(example: dict[str, Any]) -> str:
    """The user's text: ``instruction`` + newline + ``input`` (Alpaca), or the last user message (chat)."""
    if "messages" in example:
        users = [m["content"] for m in example["messages"] if m["role"] == "user"]
        if not users:
            raise ValueError("chat record has no user message")
        return users[-1]
    return example["instruction"] + ("\n" + example["input"] if example["input"] else "")


def gold_answer(example: dict[str, Any]) -> str:
    """The reference answer: ``output`` (Alpaca) or the last assistant message (chat)."""
    if "messages" in example:
        return example["messages"][-1]["content"]
    if "output" not in example:
        raise ValueError("example has neither 'output' (alpaca) nor 'messages' (chat)")
    return example["output"]


def skill_of(example: dict[str, Any]) -> str:
    """Which skill a record tests, read from its (fixed) instruction."""
    instruction = prompt_text(example).split("\n", 1)[0] if "messages" in example else example["instruction"]
    if instruction not in _SKILL_OF_INSTRUCTION:
        raise ValueError(f"instruction {instruction!r} is not one of the task's {list(INSTRUCTIONS.values())}")
    return _SKILL_OF_INSTRUCTION[instruction]


def normalize(text: str) -> str:
    """Strip and collapse runs of whitespace to one space. Case is kept (``upper`` tests it)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return " ".join(text.split())


def score(prediction: str, example: dict[str, Any]) -> float:
    """Exact match after :func:`normalize`: 1.0 if ``prediction`` equals the gold answer, else 0.0."""
    return float(normalize(prediction) == normalize(gold_answer(example)))


def score_by_skill(predictions: Sequence[str], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean score per skill (in :data:`SKILLS` order) plus ``"all"``, the mean over every example."""
    if len(predictions) != len(examples):
        raise ValueError(f"got {len(predictions)} predictions for {len(examples)} examples; pass one each")
    if not examples:
        raise ValueError("examples is empty")
    by: dict[str, list[float]] = defaultdict(list)
    for p, ex in zip(predictions, examples):
        by[skill_of(ex)].append(score(p, ex))
    out = {s: sum(by[s]) / len(by[s]) for s in SKILLS if by[s]}
    allv = [v for vs in by.values() for v in vs]
    out["all"] = sum(allv) / len(allv)
    return out


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: Iterable[str] | None = None) -> int:
    """``python -m labkit.datasets.task generate`` (write data/tasks/) or ``... validate`` (check the shipped files)."""
    ap = argparse.ArgumentParser(prog="python -m labkit.datasets.task", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write data/tasks/ (deterministic)")
    g.add_argument("--out", default=str(TASK_DIR))
    g.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("validate", help="validate the shipped files")
    v.add_argument("--root", default=str(TASK_DIR))
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.cmd == "generate":
        for p in write_task(args.out, seed=args.seed):
            print(f"wrote {p}")
        return 0
    for fmt in _ALPHA_KEYS:
        for split in ("train", "test"):
            n = len(load_task(split, fmt, root=args.root))
            print(f"ok {fmt:6s} {split:5s} {n} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
