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
