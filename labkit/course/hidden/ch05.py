"""Hidden tests of chapter 05's lab tasks: ``rms_norm`` with LLaMA's numerics, the pre-LN block and the
post-LN block (DeepNorm's α).

References: ``torch.nn.functional.rms_norm`` and transformers' ``LlamaRMSNorm`` (bit for bit in fp16 and
bf16), transformers' ``GPT2Block`` (a pre-LN block) and ``BertLayer`` (a post-LN block), each with its own
sub-layers passed to the learner's function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertConfig, GPT2Config
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _hf_norm(weight: torch.Tensor, eps: float) -> LlamaRMSNorm:
    norm = LlamaRMSNorm(weight.shape[0], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


# ---- 05.A rms_norm -------------------------------------------------------------------------------------
def _rms_fp32(L: Learner, g: torch.Generator) -> None:
    for shape in [(_n(g, 3, 40),), (2, _n(g, 2, 5), _n(g, 5, 33))]:
        x, w = torch.randn(*shape, generator=g) * 3 + 1, torch.randn(shape[-1], generator=g)
        close(L.rms_norm(x, w), F.rms_norm(x, (shape[-1],), w, 1e-6), atol=1e-5, quiet=True,
              name=f"rms_norm of a {tuple(shape)} tensor == F.rms_norm")


def _rms_half(L: Learner, g: torch.Generator) -> None:
    H = _n(g, 8, 48)
    w = torch.randn(H, generator=g)
    for dt in (torch.float16, torch.bfloat16):
        x = (torch.randn(3, H, generator=g) * 2).to(dt)
        ref = _hf_norm(w, 1e-6)(x).detach()
        out = L.rms_norm(x, w)
        exact(out.dtype, ref.dtype, quiet=True, name=f"output dtype for {dt} input and a float32 weight (HF)")
        exact(out.detach(), ref, quiet=True, name=f"{dt}: bit for bit == transformers LlamaRMSNorm")


def _rms_fp16_overflow(L: Learner, g: torch.Generator) -> None:
    x = (torch.randn(4, 32, generator=g) * 1000).half()
    w = torch.ones(32, dtype=torch.float16)
    out = L.rms_norm(x, w)
    assert bool(torch.isfinite(out).all()) and bool((out != 0).any()), \
        "fp16 inputs of size ~1000 give inf/0: x² overflows fp16 (max 65504); compute in float32"
    close(out.float(), F.rms_norm(x.float(), (32,), None, 1e-6), atol=2e-3, quiet=True,
          name="fp16 inputs ~1000, within fp16 precision of the float32 result")


def _rms_eps(L: Learner, g: torch.Generator) -> None:
    x, w = torch.randn(5, 12, generator=g) * 0.05, torch.randn(12, generator=g)
    close(L.rms_norm(x, w, eps=1e-2), F.rms_norm(x, (12,), w, 1e-2), atol=1e-5, quiet=True,
          name="eps=1e-2 (inside the square root)")
    exact(L.rms_norm(torch.zeros(2, 4), torch.ones(4)), torch.zeros(2, 4), quiet=True, name="a zero vector gives zeros, not NaN")


# ---- 05.B pre_ln_block, 05.C post_ln_block -------------------------------------------------------------
def _gpt2_block(g: torch.Generator, D: int) -> GPT2Block:
    cfg = GPT2Config(n_embd=D, n_head=4, n_layer=1, resid_pdrop=0.0, attn_pdrop=0.0, embd_pdrop=0.0,
                     attn_implementation="eager")
    block = GPT2Block(cfg).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] == D else 0.0))
    return block


def _pre_gpt2(L: Learner, g: torch.Generator) -> None:
    D = 4 * _n(g, 3, 6)
    block = _gpt2_block(g, D)
    x = torch.randn(2, _n(g, 3, 7), D, generator=g)
    with torch.no_grad():
        out = L.pre_ln_block(x, lambda h: block.attn(h)[0], block.mlp, block.ln_1, block.ln_2)
        close(out, block(x), atol=1e-4, quiet=True, name=f"pre_ln_block with GPT2Block's parts == GPT2Block (D={D})")


def _pre_residual(L: Learner, g: torch.Generator) -> None:
    x = torch.randn(3, 5, 8, generator=g)
    zero = lambda h: torch.zeros_like(h)  # noqa: E731
    exact(L.pre_ln_block(x, zero, zero, torch.tanh, torch.sigmoid), x, quiet=True,
          name="sub-layers that output 0: the block is the identity (the residual path carries x unchanged)")
    W1, W2 = torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    a, f = (lambda h: h @ W1), (lambda h: h @ W2)
    h = x + a(torch.tanh(x))
    close(L.pre_ln_block(x, a, f, torch.tanh, torch.sigmoid), h + f(torch.sigmoid(h)), atol=1e-5, quiet=True,
          name="norm1 goes before attn, norm2 before ffn, on the updated stream")


def _bert_layer(g: torch.Generator, D: int) -> BertLayer:
    cfg = BertConfig(hidden_size=D, num_attention_heads=4, intermediate_size=2 * D + 4, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, attn_implementation="eager")
    layer = BertLayer(cfg).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return layer


def _post_bert(L: Learner, g: torch.Generator) -> None:
    D = 4 * _n(g, 3, 6)
    layer = _bert_layer(g, D)
    x = torch.randn(2, _n(g, 3, 7), D, generator=g)
    attn = lambda h: layer.attention.output.dense(layer.attention.self(h)[0])  # noqa: E731
    ffn = lambda h: layer.output.dense(layer.intermediate(h))  # noqa: E731
    with torch.no_grad():
        out = L.post_ln_block(x, attn, ffn, layer.attention.output.LayerNorm, layer.output.LayerNorm)
        close(out, layer(x), atol=1e-4, quiet=True, name=f"post_ln_block with BertLayer's parts == BertLayer (D={D})")


def _post_alpha(L: Learner, g: torch.Generator) -> None:
    D, alpha = 16, 1 + float(torch.rand(1, generator=g)) * 3
    x = torch.randn(2, 5, D, generator=g)
    W1, W2 = torch.randn(D, D, generator=g) / 4, torch.randn(D, D, generator=g) / 4
    n1, n2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
    with torch.no_grad():
        h = n1(alpha * x + x @ W1)
        ref = n2(alpha * h + torch.relu(h @ W2))
        out = L.post_ln_block(x, lambda t: t @ W1, lambda t: torch.relu(t @ W2), n1, n2, alpha=alpha)
    close(out, ref, atol=1e-5, quiet=True, name=f"DeepNorm residual: norm(α·x + F(x)) with α = {alpha:.3f}")


_RMS_FORBIDDEN = Forbidden(
    patch=((F, "rms_norm", "F.rms_norm"), (torch, "rms_norm", "torch.rms_norm")),
    objects=((torch.nn.RMSNorm, "torch.nn.RMSNorm"), (LlamaRMSNorm, "transformers' LlamaRMSNorm")),
    packages=("labkit", "transformers"))
_BLOCK_FORBIDDEN = Forbidden(packages=("labkit", "transformers"))

TASKS = (
    Task("05.A", "RMSNorm with LLaMA's numerics", ("rms_norm",), (
        Check("float32, random shapes and weights == F.rms_norm", 1, _rms_fp32),
        Check("fp16 / bf16: dtype and bits == transformers LlamaRMSNorm", 1, _rms_half),
        Check("fp16 inputs ~1000 do not overflow", 1, _rms_fp16_overflow),
        Check("eps inside the root; zero vector -> zeros", 1, _rms_eps),
    ), _RMS_FORBIDDEN),
    Task("05.B", "the pre-LN block", ("pre_ln_block",), (
        Check("== transformers GPT2Block given its own parts", 1, _pre_gpt2),
        Check("identity residual path; which norm goes where", 1, _pre_residual),
    ), _BLOCK_FORBIDDEN),
    Task("05.C", "the post-LN block (DeepNorm's α)", ("post_ln_block",), (
        Check("alpha=1 == transformers BertLayer given its own parts", 1, _post_bert),
        Check("alpha > 1 up-weights the residual inside each norm", 1, _post_alpha),
    ), _BLOCK_FORBIDDEN),
)
