"""labkit.blocks attention (masks, SDPA, GQA, RoPE, flash) against PyTorch and transformers, with awkward shapes and every bad input."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as hf

from labkit.blocks import (
    GroupedQueryAttention,
    KVCache,
    apply_rope,
    attention_weights,
    causal_mask,
    flash_attention,
    padding_mask,
    prefix_lm_mask,
    repeat_kv,
)
from labkit.blocks import scaled_dot_product_attention as sdpa
from labkit.memory import kv_cache_bytes, peak_tensor_bytes

SEEDS = [0, 1, 2]
# (batch, heads): single row and head, the default, and odd sizes that broadcast differently
BH = [(1, 1), (2, 3), (3, 5)]


def _qkv(seed, B=2, H=3, Tq=5, Tk=7, d=8, dv=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, d, generator=g, dtype=dtype)
    k = torch.randn(B, H, Tk, d, generator=g, dtype=dtype)
    v = torch.randn(B, H, Tk, dv or d, generator=g, dtype=dtype)
    return q, k, v


# ------------------------------------------------------------------------------------------ SDPA
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("B,H", BH)
@pytest.mark.parametrize("Tq,Tk,d,dv", [(5, 5, 8, 8), (5, 9, 8, 3), (1, 13, 16, 16), (7, 7, 1, 5), (9, 4, 8, 8)])
def test_sdpa_matches_torch_no_mask(seed, B, H, Tq, Tk, d, dv):
    q, k, v = _qkv(seed, B=B, H=H, Tq=Tq, Tk=Tk, d=d, dv=dv)
    torch.testing.assert_close(sdpa(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("B,H", BH)
def test_sdpa_matches_torch_with_masks_and_scale(seed, B, H):
    g = torch.Generator().manual_seed(100 + seed)
    q, k, v = _qkv(seed, B=B, H=H, Tq=6, Tk=9)
    bool_mask = torch.rand(B, 1, 6, 9, generator=g) > 0.3
    bool_mask[..., 0] = True  # no fully masked rows (torch gives NaN there)
    float_mask = torch.randn(6, 9, generator=g)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask)
    torch.testing.assert_close(sdpa(q, k, v, mask=bool_mask), ref, atol=1e-6, rtol=0)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask, scale=0.3)
    torch.testing.assert_close(sdpa(q, k, v, mask=float_mask, scale=0.3), ref, atol=1e-6, rtol=0)


def test_default_scale_is_one_over_sqrt_d():
    q, k, v = _qkv(3, d=16)
    wrong = sdpa(q, k, v, scale=1.0)
    assert (wrong - F.scaled_dot_product_attention(q, k, v)).abs().max() > 1e-3
    torch.testing.assert_close(sdpa(q, k, v, scale=1 / math.sqrt(16)), sdpa(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("B,H", BH)
def test_causal_square_equals_torch(seed, B, H):
    q, k, v = _qkv(seed, B=B, H=H, Tq=11, Tk=11)
    torch.testing.assert_close(sdpa(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("B,H", BH)
@pytest.mark.parametrize("Tq,Tk", [(3, 10), (1, 6), (4, 5)])
def test_causal_rectangular_is_bottom_right(seed, B, H, Tq, Tk):
    q, k, v = _qkv(seed, B=B, H=H, Tq=Tq, Tk=Tk)
    ours = sdpa(q, k, v, is_causal=True)
    explicit = torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=Tk - Tq)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=explicit),
                               atol=1e-6, rtol=0)
    # torch's is_causal is top-left aligned, so it differs when Tq != Tk
    assert (ours - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max() > 1e-3


def test_causal_mask_and_combination_with_mask():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(causal_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    q, k, v = _qkv(0, Tq=6, Tk=6)
    pad = padding_mask(torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]))
    ours = sdpa(q, k, v, mask=pad, is_causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=pad & causal_mask(6))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_prefix_lm_mask():
    m = prefix_lm_mask(8, 3)
    assert m[:3, :3].all() and not m[:3, 3:].any()
    assert torch.equal(m[3:, 3:], causal_mask(5)) and m[3:, :3].all()
    assert torch.equal(prefix_lm_mask(5, 0), causal_mask(5))
    assert prefix_lm_mask(5, 5).all()


def test_padding_mask_shape_and_effect():
    am = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pm = padding_mask(am)
    assert pm.shape == (2, 1, 1, 3) and pm.dtype == torch.bool
    q, k, v = _qkv(1, Tq=3, Tk=3)
    w = attention_weights(q, k, mask=pm)
    assert torch.equal(w[0, :, :, 2], torch.zeros(3, 3)) and torch.equal(w[1, :, :, 1:], torch.zeros(3, 3, 2))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 3))


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = _qkv(0, Tq=4, Tk=4)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    out = sdpa(q, k, v, mask=mask)
    assert not out.isnan().any()
    assert torch.equal(out[..., 2, :], torch.zeros(2, 3, 8))
    # Tq > Tk with bottom-right causal: the first Tq - Tk queries see nothing
    q, k, v = _qkv(0, Tq=5, Tk=3)
    out = sdpa(q, k, v, is_causal=True)
    assert torch.equal(out[..., :2, :], torch.zeros(2, 3, 2, 8)) and not out.isnan().any()


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_future_tokens_do_not_change_the_past(seed):
    q, k, v = _qkv(seed, Tq=9, Tk=9)
    t = 4
    k2, v2 = k.clone(), v.clone()
    k2[..., t + 1:, :] += 5.0
    v2[..., t + 1:, :] -= 3.0
    a, b = sdpa(q, k, v, is_causal=True), sdpa(q, k2, v2, is_causal=True)
    assert torch.equal(a[..., : t + 1, :], b[..., : t + 1, :])
    assert (a[..., t + 1:, :] - b[..., t + 1:, :]).abs().max() > 1e-2


def test_sdpa_bad_inputs():
    q, k, v = _qkv(0, Tq=4, Tk=6)
    with pytest.raises(ValueError, match="mask"):
        sdpa(q, k, v, mask=torch.ones(6, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        sdpa(q, k, v, mask=torch.ones(3, 1, 4, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        sdpa(q, k, v, mask=torch.ones(4, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="q and k"):
        sdpa(q, k[..., :5], v)
    with pytest.raises(ValueError, match="k and v"):
        sdpa(q, k, v[..., :5, :])
    with pytest.raises(ValueError, match="prefix_len"):
        prefix_lm_mask(4, 5)
    with pytest.raises(ValueError, match="attention_mask"):
        padding_mask(torch.ones(4))
    with pytest.raises(ValueError, match="attention_mask"):
        padding_mask(torch.tensor([[1, 2]]))


# ------------------------------------------------------------------------------------------- GQA
def _reference_gqa(m, x, is_causal):
    """Independent reference: torch SDPA with enable_gqa on labkit's projections."""
    B, T, _ = x.shape
    q = m.q_proj(x).view(B, T, m.n_heads, m.head_dim).transpose(1, 2)
    k = m.k_proj(x).view(B, T, m.n_kv_heads, m.head_dim).transpose(1, 2)
    v = m.v_proj(x).view(B, T, m.n_kv_heads, m.head_dim).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
    return m.o_proj(o.transpose(1, 2).reshape(B, T, -1))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_heads,n_kv", [(6, 6), (6, 3), (6, 2), (6, 1), (4, 2)])
def test_gqa_matches_torch_enable_gqa(seed, n_heads, n_kv):
    torch.manual_seed(seed)
    m = GroupedQueryAttention(24, n_heads, n_kv, bias=seed == 1)
    x = torch.randn(3, 7, 24)
    with torch.no_grad():
        for causal in (False, True):
            torch.testing.assert_close(m(x, is_causal=causal), _reference_gqa(m, x, causal), atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("causal", [False, True])
def test_mha_case_equals_nn_multihead_attention(seed, causal):
    torch.manual_seed(seed)
    d, H = 20, 4
    m = GroupedQueryAttention(d, H, bias=True)
    ref = nn_mha = torch.nn.MultiheadAttention(d, H, bias=True, batch_first=True)
    with torch.no_grad():
        nn_mha.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
        nn_mha.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
        nn_mha.out_proj.weight.copy_(m.o_proj.weight)
        nn_mha.out_proj.bias.copy_(m.o_proj.bias)
        x = torch.randn(2, 9, d)
        # nn.MultiheadAttention's float attn_mask is added to the scores: -inf above the diagonal is causal
        attn_mask = torch.nn.Transformer.generate_square_subsequent_mask(9) if causal else None
        expected, _ = ref(x, x, x, need_weights=False, attn_mask=attn_mask)
        torch.testing.assert_close(m(x, is_causal=causal), expected, atol=1e-5, rtol=0)
        if causal:  # the mask really matters here: the unmasked output is different
            assert (m(x) - expected).abs().max() > 1e-3


def test_repeat_kv_equals_repeat_interleave_and_hf():
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(repeat_kv(x, 4), x.repeat_interleave(4, dim=1))
    assert torch.equal(repeat_kv(x, 4), hf.repeat_kv(x, 4))
    assert repeat_kv(x, 1) is x
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(x, 0)
    with pytest.raises(ValueError, match="x must"):
        repeat_kv(x[0], 2)


def test_gqa_parameter_count_scales_with_n_kv():
    def kv_params(n_kv):
        m = GroupedQueryAttention(64, 8, n_kv)
        return m.k_proj.weight.numel() + m.v_proj.weight.numel()
    assert kv_params(8) == 2 * 64 * 64 and kv_params(2) == kv_params(8) // 4 and kv_params(1) == kv_params(8) // 8


def test_gqa_bad_inputs():
    with pytest.raises(ValueError, match="n_heads"):
        GroupedQueryAttention(30, 4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        GroupedQueryAttention(24, 6, 4)
    with pytest.raises(ValueError, match="head_dim"):
        GroupedQueryAttention(20, 4, rope_base=10000.0)  # head_dim 5
    m = GroupedQueryAttention(16, 4)
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 3, 8))
    # positions without rope_base would be silently ignored
    with pytest.raises(ValueError, match=r"positions.*rope_base"):
        m(torch.randn(2, 3, 16), positions=torch.arange(3))
    m(torch.randn(2, 3, 16), positions=None)  # explicit None is fine
    GroupedQueryAttention(16, 4, rope_base=10000.0)(torch.randn(2, 3, 16), positions=torch.arange(3))


def test_gqa_copies_weights_from_hf_llama_attention():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=48, num_attention_heads=6, num_key_value_heads=2, rope_theta=500.0,
                      max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    ref = hf.LlamaAttention(cfg, layer_idx=0).eval()
    rot = hf.LlamaRotaryEmbedding(cfg)
    m = GroupedQueryAttention(48, 6, 2, rope_base=500.0)
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 10, 48)
    pos = torch.arange(10)[None].expand(2, 10)
    cos, sin = rot(x, pos)
    mask = torch.zeros(1, 1, 10, 10).masked_fill(~causal_mask(10), float("-inf"))
    with torch.no_grad():
        expected, _ = ref(x, position_embeddings=(cos, sin), attention_mask=mask)
        torch.testing.assert_close(m(x, is_causal=True), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("seed", SEEDS)
def test_kv_cache_decoding_equals_full_causal_pass(seed):
    torch.manual_seed(seed)
    m = GroupedQueryAttention(32, 4, 2, rope_base=10000.0)
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        full = m(x, is_causal=True)
        cache = KVCache()
        parts = [m(x[:, :4], is_causal=True, kv_cache=cache)]  # prefill 4 tokens
        for t in range(4, 9):  # decode one at a time
            parts.append(m(x[:, t:t + 1], is_causal=True, kv_cache=cache))
        parts.append(m(x[:, 9:], is_causal=True, kv_cache=cache))  # a chunk of 2
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 11
    assert cache.nbytes == 2 * 2 * 2 * 11 * 8 * 4  # K and V, B=2, n_kv=2, T=11, hd=8, fp32


def test_kv_cache_api_and_grad():
    c = KVCache()
    assert c.length == 0 and c.nbytes == 0
    pk = torch.randn(1, 2, 3, 4, requires_grad=True)
    pv = torch.randn(1, 2, 3, 4, requires_grad=True)
    c.update(pk, pv)
    k, v = c.update(torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4))
    assert k.shape == (1, 2, 5, 4) and c.length == 5
    (k.sum() + 2 * v.sum()).backward()
    assert torch.equal(pk.grad, torch.ones_like(pk)) and torch.equal(pv.grad, 2 * torch.ones_like(pv))
    with pytest.raises(ValueError, match="reset"):
        c.update(torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))
    with pytest.raises(ValueError, match="k and v"):
        c.update(torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    c.reset()
    assert c.length == 0 and c.k is None


def test_kv_cache_bytes():
    assert kv_cache_bytes(32, 32, 128, 2048) == 2**30
    assert kv_cache_bytes(32, 1, 128, 2048) == 32 * 2**20
    assert kv_cache_bytes(32, 8, 128, 32768, batch=2) == 2 * 4 * 2**30
    with pytest.raises(ValueError, match="seq_len"):
        kv_cache_bytes(32, 32, 128, -1)


# ------------------------------------------------------------------------------------------- flash
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("Tq,Tk,block", [(70, 70, 16), (37, 37, 64), (23, 23, 7), (13, 70, 16), (1, 33, 8),
                                         (64, 64, 64), (9, 9, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_equals_naive(seed, Tq, Tk, block, causal):
    q, k, v = _qkv(seed, B=1, H=2, Tq=Tq, Tk=Tk, d=16, dv=12)
    torch.testing.assert_close(flash_attention(q, k, v, block_size=block, is_causal=causal),
                               sdpa(q, k, v, is_causal=causal), atol=1e-5, rtol=0)


def test_flash_handles_large_scores_and_3d_input():
    q, k, v = _qkv(0, B=1, H=1, Tq=40, Tk=40, d=8)
    q, k, v = 30 * q[0], 30 * k[0], v[0]  # scores of several hundred: naive exp would overflow
    out = flash_attention(q, k, v, block_size=16)
    assert out.shape == (1, 40, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=0)


def test_flash_never_builds_the_full_matrix():
    T = 256
    q, k, v = _qkv(0, B=1, H=1, Tq=T, Tk=T, d=16)
    _, naive = peak_tensor_bytes(sdpa, q, k, v)
    _, flash = peak_tensor_bytes(flash_attention, q, k, v, 32)
    assert naive >= T * T * 4  # at least one T x T fp32 matrix
    assert flash < T * T * 4 / 4  # output (T x 16) plus a few 32 x 32 tiles


def test_flash_bad_inputs():
    q, k, v = _qkv(0)
    with pytest.raises(ValueError, match="block_size"):
        flash_attention(q, k, v, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        flash_attention(q, k, v, block_size=2.5)


def test_peak_tensor_bytes_counts_live_tensors():
    def f():
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(500)  # 2000 bytes, a still alive
        del a, b
        return torch.empty(250)
    out, peak = peak_tensor_bytes(f)
    assert peak == 6000 and out.shape == (250,)


# -------------------------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("base,d", [(10000.0, 16), (500000.0, 64), (10.0, 6)])
def test_rope_equals_hf(seed, base, d):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=d * 2, num_attention_heads=2, rope_theta=base, max_position_embeddings=256)
    rot = hf.LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(3, 2, 9, d), torch.randn(3, 2, 9, d)
    pos = torch.stack([torch.arange(9), torch.arange(5, 14), torch.arange(100, 109)])  # (B, T)
    cos, sin = rot(q, pos)
    eq, ek = hf.apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(apply_rope(q, pos, base=base), eq, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply_rope(k, pos, base=base), ek, atol=1e-6, rtol=0)
    # (T,) positions shared by the batch
    cos, sin = rot(q, torch.arange(9)[None])
    eq, _ = hf.apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(apply_rope(q, torch.arange(9), base=base), eq, atol=1e-6, rtol=0)


def test_rope_linear_interpolation_equals_hf_linear():
    cfg = LlamaConfig(hidden_size=32, num_attention_heads=2, max_position_embeddings=64,
                      rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    rot = hf.LlamaRotaryEmbedding(cfg)
    x = torch.randn(1, 2, 12, 16)
    pos = torch.arange(12)[None] * 20
    cos, sin = rot(x, pos)
    ref, _ = hf.apply_rotary_pos_emb(x, x, cos, sin)
    torch.testing.assert_close(apply_rope(x, pos[0], scale=4.0), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_rope(x, pos[0], scale=4.0), apply_rope(x, pos[0] / 4.0), atol=1e-5, rtol=0)


def test_rope_relative_position_property_and_norm():
    torch.manual_seed(0)
    q, k = torch.randn(32), torch.randn(32)
    def dot(m, n):
        return float(apply_rope(q[None], torch.tensor([m])) @ apply_rope(k[None], torch.tensor([n]))[0])
    assert abs(dot(7, 3) - dot(104, 100)) < 1e-4 and abs(dot(0, 5) - dot(20, 25)) < 1e-4
    assert abs(dot(7, 3) - dot(7, 4)) > 1e-3
    x = torch.randn(4, 10, 32)
    torch.testing.assert_close(apply_rope(x, torch.arange(10)).norm(dim=-1), x.norm(dim=-1))


def test_rope_bad_inputs():
    with pytest.raises(ValueError, match="even"):
        apply_rope(torch.randn(2, 5, 7), torch.arange(5))
    with pytest.raises(ValueError, match="positions"):
        apply_rope(torch.randn(2, 5, 8), torch.arange(4))
    with pytest.raises(ValueError, match="scale"):
        apply_rope(torch.randn(2, 5, 8), torch.arange(5), scale=0.0)
