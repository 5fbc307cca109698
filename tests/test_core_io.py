"""labkit.core.io and labkit.core.validate: atomic writes leave no half file, bad input says what to do."""

import pytest
import torch

from labkit.core.io import atomic_path, atomic_write_json, atomic_write_text, read_json
from labkit.core.validate import require_positive, require_same_shape, require_tensor, require_token_ids


def test_atomic_write_round_trip_and_failure_keeps_old_file(tmp_path):
    p = atomic_write_json(tmp_path / "sub" / "r.json", {"b": 1, "a": "é"}, sort_keys=True, ensure_ascii=False)
    assert p.read_text(encoding="utf-8") == '{\n "a": "é",\n "b": 1\n}\n' and read_json(p) == {"b": 1, "a": "é"}
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert read_json(p) == {"b": 1, "a": "é"}                 # the old file is intact
    assert sorted(x.name for x in p.parent.iterdir()) == ["r.json"]   # and no temporary is left behind
    atomic_write_text(p, "x\n")
    assert p.read_bytes() == b"x\n"


def test_read_json_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing; regenerate it with `make data`"):
        read_json(tmp_path / "nope.json", regenerate="make data")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON \(line 1"):
        read_json(bad)


def test_validators_name_the_argument():
    with pytest.raises(TypeError, match="`logits` must be a torch.Tensor"):
        require_tensor([1.0], "logits")
    with pytest.raises(ValueError, match="`a` .* and `b` .* must have the same shape"):
        require_same_shape(torch.zeros(2), torch.zeros(3), "a", "b")
    with pytest.raises(ValueError, match="`beta` must be > 0"):
        require_positive(0.0, "beta", "try 0.1")
    with pytest.raises(TypeError, match="`beta` must be a number"):
        require_positive(True, "beta", "try 0.1")
    with pytest.raises(TypeError, match="integer"):
        require_token_ids(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="add a batch dimension"):
        require_token_ids(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch 1 but logits have batch 2"):
        require_token_ids(torch.zeros(1, 3, dtype=torch.long), batch=2)
    ids = torch.zeros(2, 3, dtype=torch.long)
    assert require_token_ids(ids, batch=2) is ids and require_positive(2, "x", "") == 2.0


def test_new_validators_name_the_argument_and_the_fix(tmp_path):
    from labkit.core.validate import (
        require_finite,
        require_float_tensor,
        require_ids_in_vocab,
        require_in_range,
        require_int,
        working_dtype,
    )

    with pytest.raises(TypeError, match="`x` must be a floating-point tensor, got dtype torch.int64"):
        require_float_tensor(torch.zeros(2, dtype=torch.long), "x")
    with pytest.raises(ValueError, match="`n` must be >= 1, got 0; count them"):
        require_int(0, "n", 1, "count them")
    with pytest.raises(TypeError, match="`n` must be an int, got bool"):
        require_int(True, "n", 1, "count them")
    with pytest.raises(ValueError, match=r"`gamma` must be in \[0, 1\], got nan"):
        require_in_range(float("nan"), "gamma", 0.0, 1.0, "a discount")
    with pytest.raises(ValueError, match="`w` holds 1 NaN and 2 inf value"):
        require_finite(torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]), "w", "clean it")
    with pytest.raises(ValueError, match=r"`ids` holds id 9 outside \[0, V=5\)"):
        require_ids_in_vocab(torch.tensor([[0, 9]]), "ids", 5)
    require_ids_in_vocab(torch.tensor([[0, -100]]), "ids", 5, ignore_index=-100)
    with pytest.raises(ValueError, match=r"-100 outside"):
        require_ids_in_vocab(torch.tensor([[0, -100]]), "ids", 5)
    with pytest.raises(TypeError, match="`a` must be a torch.Tensor"):
        require_same_shape([1.0], torch.zeros(1), "a", "b")
    assert working_dtype(torch.bfloat16) == working_dtype(torch.float16) == working_dtype(torch.int64) == torch.float32
    assert working_dtype(torch.float64) == working_dtype(torch.float32, torch.float64) == torch.float64
    with pytest.raises(ValueError, match="is not a file"):
        read_json(tmp_path)
