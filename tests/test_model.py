"""labkit.model: config, parameter count, logits == transformers' LlamaForCausalLM, masks, cache, checkpoints."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from labkit.core.check import close, exact
from labkit.memory import kv_cache_bytes
from labkit.model import (
    PRETRAINED_DIR,
    Llama,
    LlamaConfig,
    ModelCache,
    count_parameters,
    from_hf,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
    to_hf,
)
from labkit.tokenizer import BPETokenizer

CONFIGS = {
    "gqa_untied": dict(vocab_size=97, dim=48, n_layers=2, n_heads=6, n_kv_heads=2),
    "mha_tied": dict(vocab_size=101, dim=32, n_layers=3, n_heads=4, tie_embeddings=True),
    "mqa_untied": dict(vocab_size=64, dim=40, n_layers=2, n_heads=4, n_kv_heads=1, hidden_dim=72, rope_base=500.0),
    # GQA + tied embeddings, the shipped model's layout; odd vocab, 3 KV heads each shared by 2 query heads
    "gqa_tied_odd": dict(vocab_size=131, dim=36, n_layers=1, n_heads=6, n_kv_heads=3, hidden_dim=50,
                         norm_eps=1e-5, tie_embeddings=True),
}


def test_configs_cover_gqa_with_tied_embeddings() -> None:
    """The parity tests below must include the shipped layout: 1 < n_kv_heads < n_heads and tied embeddings."""
    cfg = LlamaConfig(**CONFIGS["gqa_tied_odd"])
    assert 1 < cfg.n_kv_heads < cfg.n_heads and cfg.tie_embeddings


def _model(name: str, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(**CONFIGS[name])).eval()


# ----------------------------------------------------------------------------------------------- config
def test_llama7b_parameter_count() -> None:
    cfg = LlamaConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, multiple_of=256)
    assert cfg.hidden_dim == 11008
    assert count_parameters(cfg) == 6_738_415_616
    assert count_parameters(transformers.LlamaConfig()) == 6_738_415_616


@pytest.mark.parametrize("name", list(CONFIGS))
def test_count_parameters_matches_modules(name: str) -> None:
    model = _model(name)
    assert model.num_parameters() == count_parameters(model.config)
    hf = to_hf(model)
    assert sum(p.numel() for p in hf.parameters()) == count_parameters(hf.config) == count_parameters(model.config)


def test_config_json_round_trip(tmp_path) -> None:
    cfg = LlamaConfig(**CONFIGS["mqa_untied"])
    assert LlamaConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert LlamaConfig.from_json(tmp_path / "c.json") == cfg
    assert LlamaConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_kv_heads == 1 and LlamaConfig(**CONFIGS["mha_tied"]).n_kv_heads == 4


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        LlamaConfig(vocab_size=10, dim=48, n_layers=1, n_heads=6, n_kv_heads=4)
    with pytest.raises(ValueError, match="n_heads"):
        LlamaConfig(vocab_size=10, dim=50, n_layers=1, n_heads=4)
    with pytest.raises(ValueError, match="even"):
        LlamaConfig(vocab_size=10, dim=36, n_layers=1, n_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        LlamaConfig(vocab_size=0, dim=32, n_layers=1, n_heads=4)
    with pytest.raises(ValueError, match="unknown LlamaConfig field"):
        LlamaConfig.from_dict({"vocab_size": 10, "dim": 32, "n_layers": 1, "n_heads": 4, "d_model": 3})
    with pytest.raises(TypeError, match="transformers.LlamaConfig"):
        count_parameters({"dim": 3})


# --------------------------------------------------------------------------------------- vs transformers
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1])
def test_logits_match_transformers(name: str, seed: int) -> None:
    model = _model(name, seed)
    hf = to_hf(model).eval()
    assert list(model.state_dict()) == list(hf.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (3, 13), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = model(ids)
        out = hf(ids, output_hidden_states=True)
        close(ours, out.logits, atol=1e-5, quiet=True)
        close(model.hidden_states(ids), out.hidden_states[-1], atol=1e-5, quiet=True)
        close(model.lm_head(model.hidden_states(ids)), ours, atol=0.0, quiet=True)
        back = from_hf(hf).eval()
        close(back(ids), ours, atol=0.0, quiet=True)


def test_tied_embeddings_share_one_tensor() -> None:
    model = _model("mha_tied")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    hf = to_hf(model)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_padding_mask_matches_transformers() -> None:
    model = _model("gqa_untied", 3)
    hf = to_hf(model).eval()
    ids = torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(3))
    am = torch.ones(3, 10, dtype=torch.long)
    am[1, :4] = 0          # left padding
    am[2, 7:] = 0          # right padding
    with torch.no_grad():
        ours, ref = model(ids, attention_mask=am), hf(ids, attention_mask=am).logits
    real = am.bool()
    real[1, :4] = False
    close(ours[real], ref[real], atol=1e-5, quiet=True)
    # the real tokens of a right-padded row do not depend on the padding
    close(ours[2, :7], model(ids[2:3, :7])[0], atol=1e-5, quiet=True)


@pytest.mark.parametrize("lengths", [(4, 5), (1, 7, 3), (6, 6)])
def test_packed_documents_match_separate_runs(lengths: tuple[int, ...]) -> None:
    model = _model("mqa_untied", 1)
    T = sum(lengths)
    ids = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(T))
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    pos = torch.cat([torch.arange(n) for n in lengths])
    block = (doc[:, None] == doc[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    with torch.no_grad():
        packed_2d = model(ids, attention_mask=block, position_ids=pos.expand(2, T))
        packed_4d = model(ids, attention_mask=block.expand(2, 1, T, T), position_ids=pos.expand(2, T))
        separate = torch.cat([model(chunk) for chunk in ids.split(list(lengths), dim=1)], dim=1)
        hf = to_hf(model).eval()
        # transformers 5 takes a 4-D mask as *additive* floats (0 keep, -inf drop)
        additive = torch.zeros(2, 1, T, T).masked_fill(~block, float("-inf"))
        ref = hf(ids, attention_mask=additive, position_ids=pos.expand(2, T)).logits
    close(packed_2d, separate, atol=1e-5, quiet=True)
    close(packed_4d, packed_2d, atol=0.0, quiet=True)
    close(packed_2d, ref, atol=1e-5, quiet=True)
    with torch.no_grad():   # without the document mask the second document sees the first: different logits
        leaky = model(ids, position_ids=pos.expand(2, T))
    assert (leaky - separate).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- cache
@pytest.mark.parametrize("name", ["gqa_untied", "mha_tied", "mqa_untied"])
def test_kv_cache_matches_full_forward(name: str) -> None:
    model = _model(name)
    ids = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        parts = [model(ids[:, :4], cache), model(ids[:, 4:7], cache)]
        parts += [model(ids[:, t:t + 1], cache) for t in range(7, 11)]
    close(torch.cat(parts, dim=1), full, atol=1e-5, quiet=True)
    c = model.config
    assert isinstance(cache, ModelCache) and len(cache) == c.n_layers and cache.length == 11
    assert cache.nbytes == kv_cache_bytes(c.n_layers, c.n_kv_heads, c.head_dim, 11, batch=2, bytes_per_elem=4)
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache[0].k[0], cache[0].k[1])
    cache.reset()
    assert cache.length == 0 and cache.nbytes == 0


def test_cache_with_padding_mask_matches_full() -> None:
    model = _model("gqa_untied", 2)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    am = torch.ones(2, 9, dtype=torch.long)
    am[0, :3] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=am)
        cache = model.new_cache()
        a = model(ids[:, :6], cache, attention_mask=am[:, :6])
        b = model(ids[:, 6:], cache, attention_mask=am)
    got = torch.cat([a, b], dim=1)
    close(got[:, 3:], full[:, 3:], atol=1e-5, quiet=True)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input() -> None:
    model = _model("gqa_untied")
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="LongTensor"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="padding attention_mask"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="bool attention_mask"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="position_ids"):
        model(torch.tensor([[1, 2, 3]]), position_ids=torch.arange(4)[None])
    with pytest.raises(TypeError, match="new_cache"):
        model(torch.tensor([[1, 2]]), kv_cache=[None, None])
    with pytest.raises(TypeError, match="LlamaConfig"):
        Llama({"dim": 4})
    hf_bias = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        attention_bias=True))
    with pytest.raises(ValueError, match="attention_bias"):
        from_hf(hf_bias)


# ---------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def small_tok() -> BPETokenizer:
    return BPETokenizer.train("the quick brown fox jumps over the lazy dog " * 20, 256 + 6 + 12)


@pytest.mark.parametrize("name", ["gqa_untied", "mha_tied"])
def test_checkpoint_round_trip(tmp_path, small_tok: BPETokenizer, name: str) -> None:
    cfg = dict(CONFIGS[name], vocab_size=small_tok.vocab_size)
    torch.manual_seed(4)
    model = Llama(LlamaConfig(**cfg)).eval()
    save_checkpoint(model, small_tok, tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors",
                                                                    "tokenizer.json"]
    back, tok = load_checkpoint(tmp_path / "ck", config=model.config)
    ids = torch.tensor([small_tok.encode("the lazy fox")])
    exact(back.eval()(ids), model(ids), quiet=True)
    assert tok.encode("the lazy dog") == small_tok.encode("the lazy dog")
    assert back.config == model.config
    if model.config.tie_embeddings:
        assert back.lm_head.weight is back.model.embed_tokens.weight


def test_checkpoint_mismatch_errors(tmp_path, small_tok: BPETokenizer) -> None:
    cfg = LlamaConfig(**dict(CONFIGS["gqa_untied"], vocab_size=small_tok.vocab_size))
    model = Llama(cfg)
    path = save_checkpoint(model, small_tok, tmp_path / "ck")
    other = LlamaConfig(**dict(cfg.to_dict(), n_layers=3))
    with pytest.raises(ValueError, match="n_layers: requested 3, checkpoint 2"):
        load_checkpoint(path, config=other)
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["hidden_dim"] = 64
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match the weights"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="vocab_size"):
        save_checkpoint(Llama(LlamaConfig(**dict(cfg.to_dict(), vocab_size=300))), small_tok, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path / "nothing_here")


def test_load_pretrained() -> None:
    from labkit.train import corpus_tokens, evaluate

    model, tok = load_pretrained()
    assert not model.training and tok.vocab_size == model.config.vocab_size
    assert sum(f.stat().st_size for f in PRETRAINED_DIR.iterdir()) < 8 * 2**20
    log = json.loads((PRETRAINED_DIR / "train_log.json").read_text())
    assert log["config"] == model.config.to_dict()
    val = corpus_tokens(tok, "val")
    tr = log["training"]
    loss = evaluate(model, val, tr["block_size"], tr["batch_size"], max_batches=tr["eval_batches"])
    close(loss, log["history"]["val_loss"][-1], atol=1e-4, quiet=True)   # reproduces the logged evaluation
    assert loss < log["unigram_val_loss"] - 1.0          # far better than the context-free baseline


def test_shipped_whole_val_loss_matches_log() -> None:
    """The logged final ``val_loss`` is :func:`evaluate` over the *whole* validation split (``val_eval``)."""
    from labkit.train import corpus_tokens, evaluate

    model, tok = load_pretrained()
    log = json.loads((PRETRAINED_DIR / "train_log.json").read_text())
    ev = log["val_eval"]
    assert ev["max_batches"] is None                         # every window of the split, not a sample
    val = corpus_tokens(tok, "val")
    assert val.numel() == log["val_tokens"]
    loss = evaluate(model, val, ev["block_size"], ev["batch_size"], max_batches=ev["max_batches"])
    close(loss, log["val_loss"], atol=1e-4, quiet=True)
