"""The instruction task: generation is deterministic, splits are disjoint, files match, scoring is exact."""
import json
import random
import string

import pytest

from labkit.datasets import task as D


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    written = D.write_task(tmp_path, seed=0)
    for p in written:
        assert p.read_bytes() == (D.TASK_DIR / p.name).read_bytes(), p.name


def test_generation_is_deterministic_and_seed_dependent():
    a, b, c = D.generate_task(0), D.generate_task(0), D.generate_task(1)
    assert a == b
    assert a["test"] != c["test"]


def test_split_sizes_and_disjoint():
    tr, te = D.load_task("train"), D.load_task("test")
    assert len(tr) == len(D.SKILLS) * D.N_TRAIN_PER_SKILL
    assert len(te) == len(D.SKILLS) * D.N_TEST_PER_SKILL
    key = lambda r: (r["instruction"], r["input"])  # noqa: E731
    assert not {key(r) for r in tr} & {key(r) for r in te}
    assert len({key(r) for r in tr}) == len(tr)
    counts = {s: sum(D.skill_of(r) == s for r in te) for s in D.SKILLS}
    assert set(counts.values()) == {D.N_TEST_PER_SKILL}


def test_chat_and_alpaca_files_agree():
    for split in ("train", "test"):
        al, ch = D.load_task(split, "alpaca"), D.load_task(split, "chat")
        assert [D.to_chat(r) for r in al] == ch
        assert [D.to_alpaca(r) for r in ch] == al


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gold_answers_are_correct(seed):
    rng = random.Random(seed)
    for skill in D.SKILLS:
        for _ in range(50):
            ex = D.make_example(skill, rng)
            inp, out = ex["input"], ex["output"]
            assert inp.isascii() and out.isascii()
            xs, ys = inp.split(D.SEP), out.split(D.SEP)
            assert 3 <= len(xs) <= 5 and all(len(x) == 1 and x.islower() for x in xs)
            if skill == "last":
                assert ys == xs[-1:]
            elif skill == "upper":
                assert ys == [x.upper() for x in xs]
            elif skill == "shift":
                assert ys == [string.ascii_lowercase[(string.ascii_lowercase.index(x) + 1) % 26] for x in xs]
            elif skill == "reverse":
                assert ys == xs[::-1]
            else:
                assert ys == sorted(xs) and len(set(xs)) == len(xs)


def test_score_exact_match_after_normalization():
    ex = {"instruction": "Reverse the letters.", "input": "a-b-c", "output": "c-b-a"}
    assert D.score("c-b-a", ex) == 1.0
    assert D.score("  c-b-a \n", ex) == 1.0
    assert D.score("c-b", ex) == 0.0
    assert D.score("C-B-A", ex) == 0.0  # case matters (the upper skill depends on it)
    chat = D.to_chat(ex)
    assert D.score("c-b-a", chat) == 1.0 and D.skill_of(chat) == "reverse"


def test_score_by_skill():
    te = D.load_task("test")
    golds = [D.gold_answer(r) for r in te]
    preds = [g if D.skill_of(r) in ("upper", "last") else "x" for g, r in zip(golds, te)]
    s = D.score_by_skill(preds, te)
    assert list(s) == [*D.SKILLS, "all"]
    assert s["upper"] == 1.0 and s["last"] == 1.0 and s["sort"] == 0.0
    assert s["all"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="predictions"):
        D.score_by_skill(preds[:-1], te)


@pytest.mark.parametrize("record, err, match", [
    ([1, 2], TypeError, "dict"),
    ({"instruction": "x", "output": "y"}, ValueError, r"missing \['input'\]"),
    ({"instruction": "x", "input": "", "output": "y", "extra": 1}, ValueError, r"extra \['extra'\]"),
    ({"instruction": "x", "input": 3, "output": "y"}, TypeError, "'input' must be a str"),
    ({"instruction": "x", "input": "", "output": " "}, ValueError, "'output' is empty"),
    ({"messages": []}, ValueError, "non-empty list"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, ValueError, "unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, ValueError, "last message must be from the assistant"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, ValueError, "both from 'assistant'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, ValueError, "only the first"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
      "completion": "c"}, ValueError, "completion"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]},
     TypeError, "content'] must be a str"),
])
def test_validator_rejects_malformed(record, err, match):
    with pytest.raises(err, match=match):
        D.validate_example(record)


def test_validate_records_names_the_index():
    recs = D.load_task("test")[:5] + [{"instruction": "x"}]
    with pytest.raises(ValueError, match="record 5"):
        D.validate_records(recs)


def test_loader_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        D.load_task("dev")
    with pytest.raises(ValueError, match="format"):
        D.load_task("train", format="csv")
    with pytest.raises(FileNotFoundError, match="generate"):
        D.load_task("train", root=tmp_path)
    (tmp_path / "chat_test.jsonl").write_text('{"messages": [}\n')
    with pytest.raises(ValueError, match="line 1"):
        D.load_task("test", "chat", root=tmp_path)
    (tmp_path / "alpaca_test.json").write_text('[{"instruction": "Sort the')  # truncated download
    with pytest.raises(ValueError, match="alpaca_test.json is not valid JSON.*generate"):
        D.load_task("test", root=tmp_path)


def test_generator_arguments():
    with pytest.raises(ValueError, match="n_train"):
        D.generate_task(0, n_train=0)
    with pytest.raises(ValueError, match="unknown skill"):
        D.make_example("divide", random.Random(0))


def test_records_are_plain_json():
    line = (D.TASK_DIR / "chat_test.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["messages"][-1]["role"] == "assistant"
