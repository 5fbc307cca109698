"""Checkpoints refuse corrupted bytes (issue 16, "no silent failures"): a shipped file that differs from its
sha256 in data/MANIFEST, a truncated file, and NaN/inf weights each raise an error naming the file and the
command that rebuilds it, instead of loading a model whose logits are 1e36 or NaN."""
from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from labkit.core import manifest as M
from labkit.core.manifest import verify_data_file
from labkit.model import PRETRAINED_DIR, Llama, LlamaConfig, load_checkpoint, load_pretrained, save_checkpoint
from labkit.model import checkpoint as C

PRETRAIN = "python -m labkit.experiments.pretrain"


def _tensor_span(file, name: str) -> tuple[int, int]:
    """Byte range [start, end) of tensor ``name`` inside a safetensors file."""
    raw = file.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    start, end = json.loads(raw[8:8 + n])[name]["data_offsets"]
    return 8 + n + start, 8 + n + end


def _flip(file, offset: int, mask: int) -> None:
    b = bytearray(file.read_bytes())
    b[offset] ^= mask
    file.write_bytes(bytes(b))


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """data/tiny_llama copied into a data/ folder whose MANIFEST lists the *shipped* sha256s."""
    root = tmp_path / "data"
    shutil.copytree(PRETRAINED_DIR, root / "tiny_llama")
    lines = [line for line in (M.DATA / "MANIFEST").read_text().splitlines() if "  tiny_llama/" in line]
    assert len(lines) == 4
    (root / "MANIFEST").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(M, "DATA", root)
    monkeypatch.setattr(C, "DATA", root)
    return root / "tiny_llama"


def test_shipped_checkpoint_is_checked_against_manifest() -> None:
    assert verify_data_file(PRETRAINED_DIR / "model.safetensors", PRETRAIN) is True   # really compared
    model, tok = load_pretrained()
    assert tok.vocab_size == model.config.vocab_size


def test_one_flipped_bit_in_a_shipped_checkpoint_is_refused(shipped_copy) -> None:
    clean, _ = load_checkpoint(shipped_copy)                          # the copy loads while intact
    assert torch.isfinite(clean.model.embed_tokens.weight).all()
    start, _ = _tensor_span(shipped_copy / "model.safetensors", "model.embed_tokens.weight")
    _flip(shipped_copy / "model.safetensors", start + 3, 0x40)       # top exponent bit of weight[0, 0]
    shutil.copytree(shipped_copy, shipped_copy.parent / "unlisted")  # the same bytes, not in MANIFEST
    bad, _ = load_checkpoint(shipped_copy.parent / "unlisted")       # what used to happen: loads silently
    assert bad.model.embed_tokens.weight.abs().max() > 1e30
    with pytest.raises(ValueError, match=rf"tiny_llama/model\.safetensors does not match its sha256.*{PRETRAIN}"):
        load_checkpoint(shipped_copy)


def test_truncated_checkpoint_names_the_file(shipped_copy, tmp_path) -> None:
    own = tmp_path / "own"
    shutil.copytree(shipped_copy, own)                                # outside data/: no MANIFEST to check
    f = own / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"own/model\.safetensors cannot be read .*truncated or corrupted"):
        load_checkpoint(own)
    g = shipped_copy / "model.safetensors"
    g.write_bytes(g.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"has \d+ bytes but data/MANIFEST lists 3678\d+"):
        load_checkpoint(shipped_copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_in_any_checkpoint(tmp_path, value) -> None:
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=61, dim=24, n_layers=1, n_heads=4, n_kv_heads=2, hidden_dim=40))
    path = save_checkpoint(model, None, tmp_path / "ck")
    start, _ = _tensor_span(path / "model.safetensors", "model.layers.0.mlp.down_proj.weight")
    b = bytearray((path / "model.safetensors").read_bytes())
    b[start + 4 * 7:start + 4 * 8] = struct.pack("<f", value)        # element 7 of one weight
    (path / "model.safetensors").write_bytes(bytes(b))
    with pytest.raises(ValueError, match=r"ck/model\.safetensors: tensor model\.layers\.0\.mlp\.down_proj\.weight "
                                         r"holds 1 non-finite"):
        load_checkpoint(path)
    with torch.no_grad():
        model.model.norm.weight[3] = value
    with pytest.raises(ValueError, match=r"non-finite .*model\.norm\.weight"):
        save_checkpoint(model, None, tmp_path / "nan")


def test_malformed_config_names_the_file(tmp_path) -> None:
    model = Llama(LlamaConfig(vocab_size=61, dim=24, n_layers=1, n_heads=4, hidden_dim=40))
    path = save_checkpoint(model, None, tmp_path / "ck")
    (path / "config.json").write_text('{"format": "labkit-llama", "config": ')
    with pytest.raises(ValueError, match=r"ck/config\.json is not valid JSON"):
        load_checkpoint(path)
    (path / "config.json").write_text('["not", "a", "checkpoint"]')
    with pytest.raises(ValueError, match=r"config\.json: format is 'list'"):
        load_checkpoint(path)
