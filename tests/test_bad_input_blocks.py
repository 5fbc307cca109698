"""labkit.blocks on bad input (issue 16, "no silent failures"): float64 stays float64, integers and
impossible sizes are refused with an error that names the argument."""
from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from labkit.blocks import (
    GroupedQueryAttention,
    KVCache,
    LayerNorm,
    RMSNorm,
    build_attention_mask,
    prefix_lm_mask,
    repeat_kv,
    scaled_dot_product_attention,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rmsnorm_keeps_float64(seed: int) -> None:
    """float64 in → computed and returned in float64 (it used to be normalized in float32: 3e-7 off)."""
    g = torch.Generator().manual_seed(seed)
    dim = 37
    x = torch.randn(3, 5, dim, generator=g, dtype=torch.float64) * 7
    ours = RMSNorm(dim, eps=1e-6).double()
    ref = torch.nn.RMSNorm(dim, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        w = torch.randn(dim, generator=g, dtype=torch.float64)
        ours.weight.copy_(w)
        ref.weight.copy_(w)
    out = ours(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref(x), atol=1e-13, rtol=0)
    # float64 input with the default float32 weight: still float64 math (the weight is exact in both)
    out32w = RMSNorm(dim)(x)
    assert out32w.dtype == torch.float64
    torch.testing.assert_close(out32w, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), atol=1e-13, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rmsnorm_half_precision_still_upcasts_like_hf(dtype: torch.dtype) -> None:
    """Lower precisions keep HF's numerics exactly: normalize in float32, cast back, then the weight."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 7, 24, generator=g) * 5).to(dtype)
    ours, hf = RMSNorm(24).to(dtype), LlamaRMSNorm(24, eps=1e-6).to(dtype)
    with torch.no_grad():
        w = torch.randn(24, generator=g).to(dtype)
        ours.weight.copy_(w)
        hf.weight.copy_(w)
    out = ours(x)
    assert out.dtype == dtype and torch.equal(out, hf(x))


def test_norms_refuse_integer_input() -> None:
    x = torch.tensor([[3, 4, 0, 0]])
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got dtype torch.int64"):
        RMSNorm(4)(x)                      # used to return [[1, 1, 0, 0]] silently
    with pytest.raises(TypeError, match="floating-point"):
        LayerNorm(4)(x)                    # used to fail inside torch with a dtype error
    with pytest.raises(TypeError, match="torch.Tensor"):
        RMSNorm(4)([3.0, 4.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="eps must be a number"):
        LayerNorm(4, eps="1e-5")
    torch.testing.assert_close(RMSNorm(4, eps=1e-12)(x.float()), torch.tensor([[1.2, 1.6, 0.0, 0.0]]))


def test_gqa_refuses_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="d_model"):
        GroupedQueryAttention(0, 1)        # used to build a module with head_dim 0
    with pytest.raises(TypeError, match="n_heads must be an int"):
        GroupedQueryAttention(8, 2.0)
    with pytest.raises(ValueError, match="rope_base"):
        GroupedQueryAttention(8, 2, rope_base=0)
    with pytest.raises(ValueError, match="rope_base"):
        GroupedQueryAttention(8, 2, rope_base=float("inf"))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        GroupedQueryAttention(8, 2)([[0.0] * 8])
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.zeros(1, 2, 3, 4), True)
    with pytest.raises(TypeError, match="k and v must be tensors"):
        KVCache().update([1.0], [2.0])


def test_attention_refuses_mixed_or_integer_dtypes_and_bad_batches() -> None:
    q = torch.randn(2, 3, 5, 8)
    with pytest.raises(TypeError, match="q must be a floating-point tensor"):
        scaled_dot_product_attention(q.long(), q.long(), q.long())
    with pytest.raises(TypeError, match="one dtype"):
        scaled_dot_product_attention(q, q.double(), q)
    with pytest.raises(ValueError, match="leading .* do not broadcast"):
        scaled_dot_product_attention(q, torch.randn(3, 3, 5, 8), torch.randn(3, 3, 5, 8))
    with pytest.raises(ValueError, match="scale"):
        scaled_dot_product_attention(q, q, q, scale=float("nan"))
    # float64 stays float64 and matches torch's SDPA in float64
    qd = q.double()
    out = scaled_dot_product_attention(qd, qd, qd, is_causal=True)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(qd, qd, qd, is_causal=True),
                               atol=1e-12, rtol=0)


def test_masks_refuse_negative_sizes() -> None:
    with pytest.raises(ValueError, match="T must be a non-negative int"):
        prefix_lm_mask(-1, 0)
    with pytest.raises(ValueError, match="past must be a non-negative int"):
        build_attention_mask(torch.ones(1, 3), 1, 3, -1)
