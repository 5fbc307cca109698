"""Chapter 12's lab tasks (12.A build_labels, 12.B document_causal_mask, 12.C ffd_bins): the instructor's task
cells get full marks for several seeds, while realistic wrong versions (the mistakes learners make) and answers
that call labkit lose points, each for the reason the hidden test names."""

import nbformat
import pytest

from labkit.core.paths import NOTEBOOKS
from labkit.course.hidden import base, ch12
from labsupport import module_from_source

NOTEBOOK = NOTEBOOKS / "12_sft_and_packing.ipynb"
TASK = {t.key: t for t in ch12.TASKS}


@pytest.fixture(scope="module")
def solution_source():
    cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if "task" in c.metadata.get("tags", [])]
    assert len(cells) == 3
    return "\n\n".join(cells)


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_the_instructor_solutions_get_full_marks(solution_source, tmp_path, seed):
    ns = vars(module_from_source(tmp_path, f"sol12_{seed}", solution_source))
    for task in ch12.TASKS:
        r = base.run_task(task, ns, seed=seed)
        assert r["points"] == task.max_points, (task.key, r["message"])


# a wrong version of one function, appended after the solutions (it replaces the right one), and a phrase of the
# failing check's message
WRONG = {
    "12.A": [
        ("encodes the rendered text with every special token allowed (role markers can be injected)",
         "def build_labels(messages, tokenizer, train_on='all_assistant'):\n"
         "    if train_on not in ('all_assistant', 'last_assistant') or not any(m['role'] == 'assistant' for m in messages):\n"
         "        raise ValueError('bad')\n"
         "    ids, labels = [], []\n"
         "    for i, m in enumerate(messages):\n"
         "        piece = tokenizer.encode(f\"<|{m['role']}|>{m['content']}<|end|>\", allowed_special='all')\n"
         "        ids += piece\n"
         "        labels += [-100] + piece[1:] if m['role'] == 'assistant' else [-100] * len(piece)\n"
         "    return ids, labels\n", "plain text"),
        ("does not train the closing <|end|> (the model never learns to stop)",
         "_right = build_labels\n\ndef build_labels(messages, tokenizer, train_on='all_assistant'):\n"
         "    ids, labels = _right(messages, tokenizer, train_on)\n"
         "    end = tokenizer.special_tokens['<|end|>']\n"
         "    return ids, [-100 if i == end else l for i, l in zip(ids, labels)]\n", "labels"),
        ("ignores train_on", "_right = build_labels\n\ndef build_labels(messages, tokenizer, train_on='all_assistant'):\n"
         "    return _right(messages, tokenizer)\n", "last_assistant"),
    ],
    "12.B": [
        ("plain causal mask (documents see each other)",
         "def document_causal_mask(doc_ids):\n    T = doc_ids.shape[-1]\n"
         "    return torch.ones(T, T, dtype=torch.bool).tril().expand(*doc_ids.shape, T).clone()\n", "block_diag"),
        ("masks padding rows completely (a softmax over nothing is NaN)",
         "_right = document_causal_mask\n\ndef document_causal_mask(doc_ids):\n"
         "    return _right(doc_ids) & (doc_ids[..., :, None] >= 0)\n", "padding"),
        ("same document but not causal", "def document_causal_mask(doc_ids):\n"
         "    return doc_ids[..., :, None] == doc_ids[..., None, :]\n", "block_diag"),
    ],
    "12.C": [
        ("next-fit in the given order (greedy, no sorting)",
         "def ffd_bins(lengths, max_len):\n    if max(lengths) > max_len:\n        raise ValueError('long')\n"
         "    rows, room = [], []\n    for i, n in enumerate(lengths):\n"
         "        if not rows or room[-1] < n:\n            rows.append([]); room.append(max_len)\n"
         "        rows[-1].append(i); room[-1] -= n\n    return rows\n", "first-fit decreasing"),
        ("best fit (the fullest row with room) instead of the first row with room",
         "def ffd_bins(lengths, max_len):\n    if max(lengths) > max_len:\n        raise ValueError('long')\n"
         "    rows, room = [], []\n    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):\n"
         "        fits = [r for r in range(len(rows)) if room[r] >= lengths[i]]\n"
         "        if fits:\n            r = min(fits, key=lambda r: room[r]); rows[r].append(i); room[r] -= lengths[i]\n"
         "        else:\n            rows.append([i]); room.append(max_len - lengths[i])\n    return rows\n",
         "first-fit decreasing"),
    ],
}


@pytest.mark.parametrize("key,case", [(k, i) for k, cases in WRONG.items() for i in range(len(cases))])
def test_a_wrong_version_loses_points_for_the_right_reason(solution_source, tmp_path, key, case):
    what, source, needle = WRONG[key][case]
    ns = vars(module_from_source(tmp_path, f"wrong12_{key.replace('.', '_')}_{case}", solution_source + "\n\n" + source))
    r = base.run_task(TASK[key], ns, seed=2)
    assert r["points"] < TASK[key].max_points, f"{key}: {what} passed every check"
    assert needle in r["message"], (what, r["message"])
    assert "reference" not in r["message"], r["message"]


CHEATS = {
    "12.A": "from labkit.finetune import sft\n\ndef build_labels(messages, tokenizer, train_on='all_assistant'):\n"
            "    return sft.build_labels(messages, tokenizer, train_on)\n",
    "12.B": "from labkit.blocks import masks\n\ndef document_causal_mask(doc_ids):\n"
            "    return masks.document_causal_mask(doc_ids)\n",
    "12.C": "import labkit.finetune.sft as S\n\ndef ffd_bins(lengths, max_len):\n"
            "    return S.assign_bins(lengths, max_len, 'ffd')\n",
}


@pytest.mark.parametrize("key", sorted(CHEATS))
def test_calling_labkit_scores_zero_and_names_it(tmp_path, key):
    ns = vars(module_from_source(tmp_path, f"cheat12_{key.replace('.', '_')}", CHEATS[key]))
    r = base.run_task(TASK[key], ns, seed=1)
    assert r["points"] == 0 and "labkit" in r["message"] and "reference" in r["message"], r["message"]
