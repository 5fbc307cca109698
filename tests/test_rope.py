"""RoPE in both layouts (labkit.blocks.rope) and weights of either layout in the course model
(labkit.model.rope_layout, load_checkpoint(rope_layout=...)).

References:
* interleaved rotation: GPT-J's ``rotate_every_two`` / ``apply_rotary_pos_emb`` and Meta's complex form
  (``torch.view_as_complex`` · ``torch.polar``, as in transformers' Llama-4 ``apply_rotary_emb``), both
  installed with transformers;
* the weight permutation: the ``permute`` of transformers' ``convert_llama_weights_to_hf.py`` (not shipped in
  the installed transformers 5.x wheel, so its one-line formula is reproduced in :func:`hf_permute`).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers.models.gptj import modeling_gptj as gptj
from transformers.models.llama4 import modeling_llama4 as llama4

from labkit.blocks import (
    GroupedQueryAttention,
    apply_rope,
    half_to_interleaved,
    interleaved_to_half,
    repeat_kv,
    rope_cos_sin,
    rope_permutation,
    rotate_every_two,
    rotate_half,
    scaled_dot_product_attention,
)
from labkit.model import (
    PRETRAINED_DIR,
    Llama,
    LlamaConfig,
    convert_rope_layout,
    load_checkpoint,
    load_pretrained,
    load_state_dict_with_rope_layout,
    save_checkpoint,
    state_dict_with_rope_layout,
)

SEEDS = [0, 1, 2]
HEAD_DIMS = [2, 6, 10, 16]  # 6 and 10: not powers of two; 2: a single pair (the permutation is the identity)
# (n_heads, n_kv_heads, head_dim): GQA with 1 < n_kv < n_heads and odd-sized heads, MQA, MHA
MODEL_SHAPES = [(4, 2, 6), (6, 3, 10), (3, 1, 10), (2, 2, 8)]


def hf_permute(w: torch.Tensor, n_heads: int, dim1: int, dim2: int) -> torch.Tensor:
    """transformers ``convert_llama_weights_to_hf.py``: ``permute(w, n_heads, dim1, dim2)`` ("permute for
    sliced rotary"), applied there to Meta's ``wq`` (n_heads) and ``wk`` (n_kv_heads, dim1 = key_value_dim)."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def meta_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Meta's complex-number RoPE on ``x`` (B, T, H, d): ``(x_2i + i·x_2i+1) · e^{i·p·θ_i}`` via transformers'
    Llama-4 ``apply_rotary_emb`` (torch.view_as_complex) with ``freqs_cis = torch.polar(1, p·θ)``."""
    d = x.shape[-1]
    theta = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    freqs = positions.expand(x.shape[0], x.shape[1]).float()[..., None] * theta  # (B, T, d/2)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    out, _ = llama4.apply_rotary_emb(x, x, freqs_cis)
    return out


def gptj_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """GPT-J's RoPE (base 10000) on ``x`` (B, T, H, d) at ``positions`` (B, T)."""
    sincos = gptj.create_sinusoidal_positions(int(positions.max()) + 1, x.shape[-1])[positions]  # (B, T, d)
    sin, cos = torch.split(sincos, x.shape[-1] // 2, dim=-1)
    return gptj.apply_rotary_pos_emb(x, sin, cos)


# ------------------------------------------------------------------------------- the interleaved rotation
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_interleaved_rope_equals_gptj_and_meta(seed, d):
    g = torch.Generator().manual_seed(seed)
    B, T, H = 3, 7, 2
    x = torch.randn(B, T, H, d, generator=g)
    pos = torch.stack([torch.arange(T), torch.arange(5, 5 + T), torch.arange(100, 100 + T)])  # (B, T), offsets
    ours = apply_rope(x.transpose(1, 2), pos, interleaved=True).transpose(1, 2)
    torch.testing.assert_close(ours, gptj_rope(x, pos), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, meta_rope(x, pos), atol=1e-5, rtol=0)
    # and it is not the rotate-half layout (except for d = 2, a single pair)
    half = apply_rope(x.transpose(1, 2), pos).transpose(1, 2)
    assert torch.allclose(half, ours, atol=1e-5) == (d == 2)
    # another base, positions shared by the batch (T,)
    ours = apply_rope(x.transpose(1, 2), torch.arange(9, 9 + T), base=500.0, interleaved=True).transpose(1, 2)
    torch.testing.assert_close(ours, meta_rope(x, torch.arange(9, 9 + T), base=500.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("d", HEAD_DIMS)
def test_rotate_every_two_and_cos_sin_layouts(d):
    x = torch.randn(2, 1, 3, d)
    torch.testing.assert_close(rotate_every_two(x), gptj.rotate_every_two(x), atol=0, rtol=0)
    assert rotate_every_two(torch.arange(1.0, 7.0)).tolist() == [-2.0, 1.0, -4.0, 3.0, -6.0, 5.0]
    assert rotate_half(torch.arange(1.0, 7.0)).tolist() == [-4.0, -5.0, -6.0, 1.0, 2.0, 3.0]
    pos = torch.arange(4, 9)
    cos_h, sin_h = rope_cos_sin(pos, d)
    cos_i, sin_i = rope_cos_sin(pos, d, interleaved=True)
    torch.testing.assert_close(cos_i, cos_h[:, : d // 2].repeat_interleave(2, dim=-1), atol=0, rtol=0)
    torch.testing.assert_close(sin_i, sin_h[:, : d // 2].repeat_interleave(2, dim=-1), atol=0, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_default_layout_is_bit_identical_to_the_rotate_half_formula(seed):
    """interleaved=False must not change a bit of the rotate-half path the course model uses."""
    g = torch.Generator().manual_seed(seed)
    x, d = torch.randn(2, 3, 11, 10, generator=g), 10
    pos = torch.arange(3, 14)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    emb = torch.cat((pos[:, None].float() * inv_freq,) * 2, dim=-1)
    expected = x * emb.cos() + torch.cat((-x[..., d // 2:], x[..., : d // 2]), dim=-1) * emb.sin()
    assert torch.equal(apply_rope(x, pos), expected)
    assert torch.equal(apply_rope(x, pos, interleaved=False), expected)


# ---------------------------------------------------------------------------------- the permutation
@pytest.mark.parametrize("d", HEAD_DIMS + [64])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_layouts_are_one_rotation_up_to_a_permutation(d, scale):
    """RoPE_half(x[perm]) == RoPE_interleaved(x)[perm]: the same rotation, coordinates renamed."""
    perm = rope_permutation(d)
    assert sorted(perm.tolist()) == list(range(d))
    x = torch.randn(2, 3, 13, d)
    pos = torch.arange(7, 20)
    inter = apply_rope(x, pos, scale=scale, interleaved=True)
    torch.testing.assert_close(apply_rope(x[..., perm], pos, scale=scale), inter[..., perm], atol=1e-5, rtol=0)
    inv = torch.argsort(perm)
    torch.testing.assert_close(apply_rope(x[..., perm], pos, scale=scale)[..., inv], inter, atol=1e-5, rtol=0)


def test_rope_permutation_values():
    assert rope_permutation(6).tolist() == [0, 2, 4, 1, 3, 5]
    assert rope_permutation(10, n_heads=2).tolist() == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9,
                                                        10, 12, 14, 16, 18, 11, 13, 15, 17, 19]
    assert rope_permutation(2).tolist() == [0, 1]


@pytest.mark.parametrize("n_heads,head_dim,dim", [(4, 6, 24), (3, 10, 30), (2, 10, 7), (1, 16, 5), (5, 2, 9)])
def test_interleaved_to_half_equals_transformers_permute(n_heads, head_dim, dim):
    rows = n_heads * head_dim
    w = torch.randn(rows, dim)
    ours = interleaved_to_half(w, n_heads)
    torch.testing.assert_close(ours, hf_permute(w, n_heads, rows, dim), atol=0, rtol=0)
    torch.testing.assert_close(ours, w[rope_permutation(head_dim, n_heads)], atol=0, rtol=0)
    assert torch.equal(half_to_interleaved(ours, n_heads, head_dim), w)
    assert torch.equal(interleaved_to_half(half_to_interleaved(w, n_heads), n_heads), w)
    b = torch.randn(rows)  # a q/k bias is permuted like the rows of the weight
    torch.testing.assert_close(interleaved_to_half(b, n_heads), hf_permute(b[:, None], n_heads, rows, 1)[:, 0])


def _scores(x, wq, wk, n_heads, n_kv, pos, interleaved):
    """Attention scores q·k (B, n_heads, T, T) of x (B, T, dim) after RoPE in one layout (GQA: repeat_kv)."""
    B, T, _ = x.shape
    q = (x @ wq.T).view(B, T, n_heads, -1).transpose(1, 2)
    k = (x @ wk.T).view(B, T, n_kv, -1).transpose(1, 2)
    q, k = apply_rope(q, pos, interleaved=interleaved), apply_rope(k, pos, interleaved=interleaved)
    return q @ repeat_kv(k, n_heads // n_kv).transpose(-1, -2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_heads,n_kv,hd", MODEL_SHAPES)
def test_permuted_weights_give_identical_scores(seed, n_heads, n_kv, hd):
    g = torch.Generator().manual_seed(seed)
    dim, B, T = 20, 2, 9
    x = torch.randn(B, T, dim, generator=g)
    wq, wk = torch.randn(n_heads * hd, dim, generator=g), torch.randn(n_kv * hd, dim, generator=g)
    pos = torch.arange(4, 4 + T)  # as after 4 cached tokens
    ref = _scores(x, wq, wk, n_heads, n_kv, pos, interleaved=True)
    wq_h, wk_h = interleaved_to_half(wq, n_heads, hd), interleaved_to_half(wk, n_kv, hd)
    torch.testing.assert_close(_scores(x, wq_h, wk_h, n_heads, n_kv, pos, interleaved=False), ref,
                               atol=1e-4, rtol=1e-5)
    # the rotated q itself is the interleaved one with renamed coordinates
    q_i = apply_rope((x @ wq.T).view(B, T, n_heads, hd).transpose(1, 2), pos, interleaved=True)
    q_h = apply_rope((x @ wq_h.T).view(B, T, n_heads, hd).transpose(1, 2), pos)
    torch.testing.assert_close(q_h, q_i[..., rope_permutation(hd)], atol=1e-5, rtol=0)
    if hd > 2:  # without the permutation (or with it backwards) the scores change: the check can fail
        wrong = _scores(x, wq, wk, n_heads, n_kv, pos, interleaved=False)
        assert (wrong - ref).abs().max() > 0.1
    if hd > 4:  # for hd = 4, perm = [0, 2, 1, 3] is its own inverse
        backwards = _scores(x, half_to_interleaved(wq, n_heads), half_to_interleaved(wk, n_kv), n_heads, n_kv,
                            pos, interleaved=False)
        assert (backwards - ref).abs().max() > 0.1


# ------------------------------------------------------------------------- the course model, end to end
class InterleavedAttention(GroupedQueryAttention):
    """Test-local: GroupedQueryAttention with RoPE on interleaved pairs, as a GPT-J / Meta-style model applies
    it; ``rope="meta"`` computes it with complex numbers (independent of labkit's rotation)."""

    rope = "labkit"

    def forward(self, x, *, mask=None, is_causal=False, positions=None, kv_cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if positions is None:
            past = kv_cache.length if kv_cache is not None else 0
            positions = torch.arange(past, past + T)
        if self.rope == "meta":
            q, k = meta_rope(q, positions, self.rope_base), meta_rope(k, positions, self.rope_base)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        else:
            q = apply_rope(q.transpose(1, 2), positions, base=self.rope_base, interleaved=True)
            k = apply_rope(k.transpose(1, 2), positions, base=self.rope_base, interleaved=True)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
        out = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


def interleaved_llama(config: LlamaConfig, rope: str) -> Llama:
    """The course model with every attention layer replaced by :class:`InterleavedAttention`."""
    model = Llama(config)
    for layer in model.model.layers:
        attn = InterleavedAttention(config.dim, config.n_heads, config.n_kv_heads, rope_base=config.rope_base)
        attn.rope = rope
        layer.self_attn = attn
    return model.eval()


def _config(n_heads, n_kv, hd, **kw):
    return LlamaConfig(vocab_size=53, dim=n_heads * hd, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv,
                       hidden_dim=36, **kw)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_heads,n_kv,hd", MODEL_SHAPES)
@pytest.mark.parametrize("rope", ["labkit", "meta"])
def test_model_logits_equal_in_both_layouts(seed, n_heads, n_kv, hd, rope):
    torch.manual_seed(seed)
    cfg = _config(n_heads, n_kv, hd, rope_base=500.0 if seed == 2 else 10000.0, tie_embeddings=seed == 1)
    model = Llama(cfg).eval()
    model.reset_parameters(std=0.15)  # sharper attention than the N(0, 0.02) init, so positions matter
    ids = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        ref = model(ids)
        inter_sd = state_dict_with_rope_layout(model, "interleaved")      # export for interleaved code
        other = interleaved_llama(cfg, rope)
        other.load_state_dict(inter_sd)
        torch.testing.assert_close(other(ids), ref, atol=1e-5, rtol=0)
        back = Llama(cfg).eval()                                          # and load it back with the option
        load_state_dict_with_rope_layout(back, inter_sd, rope_layout="interleaved")
        torch.testing.assert_close(back(ids), ref, atol=1e-5, rtol=0)
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
        if hd > 2:  # the pitfall: loading interleaved weights as they are scrambles the logits
            naive = Llama(cfg).eval()
            naive.load_state_dict(inter_sd)
            assert (naive(ids) - ref).abs().max() > 0.05


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_heads,n_kv,hd", [(4, 2, 6), (6, 3, 10)])
def test_model_layouts_agree_with_a_kv_cache_and_position_ids(seed, n_heads, n_kv, hd):
    """Positions offset: a prefill of 5 tokens, then a chunk of 3 and one token from the KV cache."""
    torch.manual_seed(seed)
    cfg = _config(n_heads, n_kv, hd)
    inter = interleaved_llama(cfg, "meta")
    inter.reset_parameters(std=0.15)  # weights born interleaved
    model = Llama(cfg).eval()
    load_state_dict_with_rope_layout(model, inter.state_dict(), rope_layout="interleaved")
    ids = torch.randint(0, cfg.vocab_size, (3, 9))
    with torch.no_grad():
        caches = model.new_cache(), inter.new_cache()
        for chunk in (slice(0, 5), slice(5, 8), slice(8, 9)):
            a, b = model(ids[:, chunk], caches[0]), inter(ids[:, chunk], caches[1])
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert caches[0].length == 9
        pos = torch.arange(9)[None] + torch.tensor([[0], [7], [40]])  # per-sequence offsets
        torch.testing.assert_close(model(ids, position_ids=pos), inter(ids, position_ids=pos), atol=1e-5, rtol=0)


def test_checkpoint_loads_interleaved_weights(tmp_path):
    torch.manual_seed(3)
    cfg = _config(6, 3, 10, tie_embeddings=True)
    model = Llama(cfg).eval()
    model.reset_parameters(std=0.15)
    save_checkpoint(model, None, tmp_path)
    inter = state_dict_with_rope_layout(model, "interleaved")
    inter.pop("lm_head.weight")  # tied: stored once, as save_checkpoint does
    save_file({k: v.contiguous() for k, v in inter.items()}, str(tmp_path / "model.safetensors"))
    ids = torch.randint(0, cfg.vocab_size, (2, 8))
    with torch.no_grad():
        loaded, tok = load_checkpoint(tmp_path, rope_layout="interleaved")
        assert tok is None
        torch.testing.assert_close(loaded.eval()(ids), model(ids), atol=1e-5, rtol=0)
        as_stored, _ = load_checkpoint(tmp_path)  # the default loads the tensors as they are: wrong here
        assert (as_stored.eval()(ids) - model(ids)).abs().max() > 0.05


def test_shipped_checkpoint_unchanged_and_round_trips():
    """data/tiny_llama (no RoPE-layout field in config.json) loads as before; its weights exported in the
    interleaved layout give the same logits in an interleaved-RoPE model."""
    model, tok = load_pretrained()
    stored = load_file(str(PRETRAINED_DIR / "model.safetensors"))
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in stored.items())  # default "half": no permutation on load
    ids = torch.tensor([tok.encode("ROMEO: But soft, what light through yonder window breaks?")])
    inter = interleaved_llama(model.config, "meta")
    inter.load_state_dict(state_dict_with_rope_layout(model, "interleaved"))
    with torch.no_grad():
        torch.testing.assert_close(inter(ids), model(ids), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------- bad input
def test_rope_layout_errors():
    with pytest.raises(ValueError, match="head_dim .7. must be even"):
        rope_permutation(7)
    with pytest.raises(ValueError, match="head_dim"):
        rope_permutation(0)
    with pytest.raises(ValueError, match="n_heads"):
        rope_permutation(4, n_heads=0)
    with pytest.raises(ValueError, match="not a multiple of n_heads"):
        interleaved_to_half(torch.randn(25, 8), n_heads=4)
    with pytest.raises(ValueError, match="head_dim = rows / n_heads = 20 / 4 = 5 is odd"):
        interleaved_to_half(torch.randn(20, 8), n_heads=4)
    with pytest.raises(ValueError, match="n_kv_heads"):  # k_proj of a GQA model with n_heads by mistake
        interleaved_to_half(torch.randn(12, 24), n_heads=4, head_dim=6)
    with pytest.raises(ValueError, match="transpose"):  # (dim, rows) instead of (rows, dim)
        half_to_interleaved(torch.randn(20, 24), n_heads=4, head_dim=6)
    with pytest.raises(ValueError, match="weight"):
        interleaved_to_half(torch.randn(2, 12, 8), n_heads=2)
    with pytest.raises(TypeError, match="weight"):
        interleaved_to_half([[1.0, 2.0]], n_heads=1)


def test_model_rope_layout_errors(tmp_path):
    cfg = _config(4, 2, 6)
    model = Llama(cfg)
    sd = model.state_dict()
    with pytest.raises(ValueError, match="rope_layout"):
        load_state_dict_with_rope_layout(model, sd, rope_layout="meta")
    with pytest.raises(ValueError, match="rope_layout"):
        state_dict_with_rope_layout(model, "rotate_half")
    with pytest.raises(ValueError, match="src"):
        convert_rope_layout(sd, cfg, src="gptj")
    with pytest.raises(TypeError, match="config"):
        convert_rope_layout(sd, model, src="interleaved")
    with pytest.raises(TypeError, match="model"):
        load_state_dict_with_rope_layout(torch.nn.Linear(2, 2), sd, rope_layout="interleaved")
    mha = Llama(_config(4, 4, 6)).state_dict()  # k_proj with 4 KV heads into a config with 2
    with pytest.raises(ValueError, match="n_kv_heads=2"):
        convert_rope_layout(mha, cfg, src="interleaved")
    meta_names = {"layers.0.attention.wq.weight": torch.randn(24, 24)}
    with pytest.raises(ValueError, match="wq"):
        convert_rope_layout(meta_names, cfg, src="interleaved")
    assert convert_rope_layout(meta_names, cfg, src="half") == meta_names  # nothing to do: passed through
    save_checkpoint(model, None, tmp_path)
    with pytest.raises(ValueError, match="rope_layout"):
        load_checkpoint(tmp_path, rope_layout="interleave")
