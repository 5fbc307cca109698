"""Hidden tests of chapter 04's lab tasks: grouped-query attention (``repeat_kv``, ``gqa_attention``), the
online-softmax tile update, and RoPE in the rotate-half layout (``rotate_half``, ``rope``).

References: transformers' ``repeat_kv``, ``F.scaled_dot_product_attention(..., enable_gqa=True)`` (given the
bottom-right causal mask explicitly), ``torch.softmax`` over all the keys at once for the streamed update, and
transformers' ``LlamaRotaryEmbedding`` + ``apply_rotary_pos_emb`` for RoPE; on random batch, head, length and
head sizes (GQA with ``1 < n_kv < n_heads``, ``Tq != Tk``, ``dv != d``, odd head sizes, other RoPE bases,
positions that do not start at 0, float64).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as hf_llama

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _tril(Tq: int, Tk: int) -> torch.Tensor:
    return torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=Tk - Tq)


def _heads(g: torch.Generator) -> tuple[int, int]:
    """(n_heads, n_kv) with n_kv a divisor of n_heads strictly between 1 and n_heads when possible."""
    h = [4, 6, 8, 12][_n(g, 0, 3)]
    kv = [d for d in range(2, h) if h % d == 0]
    return h, kv[_n(g, 0, len(kv) - 1)]


# ---- 04.A repeat_kv / gqa_attention ---------------------------------------------------------------------
def _repeat_vs_hf(L: Learner, g: torch.Generator) -> None:
    for n_rep in (1, 2, _n(g, 3, 5)):
        x = torch.randn(_n(g, 1, 3), _n(g, 1, 4), _n(g, 1, 7), _n(g, 1, 6), generator=g)
        exact(L.repeat_kv(x, n_rep), hf_llama.repeat_kv(x, n_rep), quiet=True,
              name=f"repeat_kv of a {tuple(x.shape)} tensor, n_rep={n_rep} == transformers' repeat_kv")


def _repeat_grouping(L: Learner, g: torch.Generator) -> None:
    n_kv, n_rep = 3, 4
    x = torch.randn(2, n_kv, 5, 4, generator=g)
    out = L.repeat_kv(x, n_rep)
    assert tuple(out.shape) == (2, n_kv * n_rep, 5, 4), f"repeat_kv gave shape {tuple(out.shape)}"
    for head in (0, 5, 11):
        exact(out[:, head], x[:, head // n_rep], quiet=True,
              name=f"query head {head} reads KV head {head // n_rep} (consecutive heads share one KV head, "
                   "not a tiled copy)")


def _qkv(g: torch.Generator, B: int, h: int, kv: int, Tq: int, Tk: int, d: int, dv: int):
    return (torch.randn(B, h, Tq, d, generator=g), torch.randn(B, kv, Tk, d, generator=g),
            torch.randn(B, kv, Tk, dv, generator=g))


def _gqa_plain(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        h, kv = _heads(g)
        q, k, v = _qkv(g, _n(g, 1, 3), h, kv, _n(g, 1, 6), _n(g, 2, 9), _n(g, 2, 16), _n(g, 1, 7))
        close(L.gqa_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, enable_gqa=True), atol=1e-5,
              quiet=True, name=f"gqa_attention, {h} query heads over {kv} KV heads, q {tuple(q.shape)}, "
                               f"v {tuple(v.shape)}")


def _gqa_ends_and_causal(L: Learner, g: torch.Generator) -> None:
    h = 6
    for kv in (6, 1, 3):
        for Tq, Tk in [(5, 5), (2, _n(g, 3, 9))]:
            q, k, v = _qkv(g, 2, h, kv, Tq, Tk, 8, 5)
            ref = F.scaled_dot_product_attention(q, k, v, attn_mask=_tril(Tq, Tk), enable_gqa=True)
            close(L.gqa_attention(q, k, v, is_causal=True), ref, atol=1e-5, quiet=True,
                  name=f"is_causal (bottom-right), {h} heads, n_kv={kv} ({'MHA' if kv == h else 'MQA' if kv == 1 else 'GQA'}), "
                       f"Tq={Tq}, Tk={Tk}")


def _gqa_grads(L: Learner, g: torch.Generator) -> None:
    h, kv = 8, 2
    q, k, v = _qkv(g, 2, h, kv, 4, 7, 6, 6)
    w = torch.randn(2, h, 4, 6, generator=g)
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    (F.scaled_dot_product_attention(*ref, enable_gqa=True) * w).sum().backward()
    mine = [t.clone().requires_grad_() for t in (q, k, v)]
    (L.gqa_attention(*mine) * w).sum().backward()
    for name, a, b in zip("qkv", mine, ref):
        assert a.grad is not None, f"no gradient reached {name}"
        close(a.grad, b.grad, atol=1e-5, quiet=True,
              name=f"d loss / d {name} (a shared KV head gathers the gradients of its {h // kv} query heads)")


# ---- 04.B online_softmax_update -------------------------------------------------------------------------
def _blocks(n: int, g: torch.Generator) -> list[tuple[int, int]]:
    """Uneven key blocks covering 0..n."""
    out, j = [], 0
    while j < n:
        step = _n(g, 1, 5)
        out.append((j, min(j + step, n)))
        j += step
    return out


def _state(lead: tuple[int, ...], dv: int) -> tuple[torch.Tensor, ...]:
    return torch.full(lead, float("-inf")), torch.zeros(lead), torch.zeros(*lead, dv)


def _stream(L: Learner, s: torch.Tensor, v: torch.Tensor, blocks, check_state: bool, what: str) -> torch.Tensor:
    m, l, acc = _state(s.shape[:-1], v.shape[-1])
    for j0, j1 in blocks:
        m, l, acc = L.online_softmax_update(m, l, acc, s[..., j0:j1], v[..., j0:j1, :])
        if check_state:
            seen = s[..., :j1]
            m_ref = seen.amax(-1)
            safe = torch.where(torch.isneginf(m_ref), torch.zeros_like(m_ref), m_ref)
            p = torch.exp(seen - safe[..., None])
            close(m, m_ref, atol=1e-6, quiet=True, name=f"{what}: m after keys 0..{j1 - 1} (the running max)")
            close(l, p.sum(-1), atol=1e-5, rtol=1e-5, quiet=True,
                  name=f"{what}: l after keys 0..{j1 - 1} (Σ exp(s - m) over the keys seen)")
            close(acc, p @ v[..., :j1, :], atol=1e-5, rtol=1e-5, quiet=True,
                  name=f"{what}: acc after keys 0..{j1 - 1} (Σ exp(s - m) v over the keys seen)")
    return acc / l[..., None]


def _online_one_row(L: Learner, g: torch.Generator) -> None:
    n, dv = _n(g, 7, 19), _n(g, 1, 5)
    s, v = torch.randn(n, generator=g) * 4, torch.randn(n, dv, generator=g)
    out = _stream(L, s, v, _blocks(n, g), check_state=True, what="one row of scores")
    close(out, torch.softmax(s, 0) @ v, atol=1e-5, quiet=True,
          name=f"one row of {n} scores in uneven blocks: acc / l == softmax(s) @ v")


def _online_batched(L: Learner, g: torch.Generator) -> None:
    B, H, Tq, Tk, dv = 2, _n(g, 1, 3), _n(g, 1, 6), _n(g, 5, 17), _n(g, 1, 6)
    s, v = torch.randn(B, H, Tq, Tk, generator=g) * 3, torch.randn(B, H, Tk, dv, generator=g)
    out = _stream(L, s, v, _blocks(Tk, g), check_state=False, what="batched")
    close(out, torch.softmax(s, -1) @ v, atol=1e-5, quiet=True,
          name=f"scores (B, H, Tq, Tk) = {tuple(s.shape)} in key blocks: acc / l == softmax @ v")


def _online_large(L: Learner, g: torch.Generator) -> None:
    s = torch.randn(3, 12, generator=g) * 3 + torch.tensor([[1000.0], [-1000.0], [0.0]])
    s[2, 7] = 200.0  # a late, much larger maximum: everything before must be rescaled
    v = torch.randn(3, 12, 4, generator=g)
    out = _stream(L, s, v, [(0, 4), (4, 8), (8, 12)], check_state=False, what="large scores")
    assert bool(torch.isfinite(out).all()), "scores near ±1000 gave inf or NaN: subtract the running max"
    close(out, torch.softmax(s, -1) @ v, atol=1e-5, quiet=True,
          name="scores near +1000 and -1000 and a late maximum of 200: no overflow, == softmax @ v")


def _online_masked(L: Learner, g: torch.Generator) -> None:
    Tq, Tk, dv = 4, 10, 3
    s, v = torch.randn(Tq, Tk, generator=g), torch.randn(Tk, dv, generator=g)
    s[0, :6] = float("-inf")   # row 0: the first two blocks are fully masked (m is still -inf afterwards)
    s[1, 3:] = float("-inf")   # row 1: later blocks fully masked
    s[2, ::2] = float("-inf")
    out = _stream(L, s, v, [(0, 3), (3, 6), (6, 10)], check_state=True, what="masked scores")
    assert not bool(torch.isnan(out).any()), \
        "NaN: a block whose scores are all -inf, while m is still -inf, gives exp(-inf - (-inf)) = NaN"
    close(out, torch.softmax(s, -1) @ v, atol=1e-5, quiet=True,
          name="-inf (masked) scores, whole blocks of them: == softmax @ v, no NaN")


# ---- 04.C rotate_half / rope ----------------------------------------------------------------------------
def _hf_rope(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    hd = x.shape[-1]
    cfg = LlamaConfig(hidden_size=2 * hd, num_attention_heads=2, head_dim=hd,
                      rope_parameters={"rope_type": "default", "rope_theta": float(base)})
    cos, sin = hf_llama.LlamaRotaryEmbedding(cfg)(x, pos[None])  # (1, T, hd)
    out, _ = hf_llama.apply_rotary_pos_emb(x, x, cos[0], sin[0], unsqueeze_dim=0)  # (1, T, hd) broadcasts
    return out.reshape(x.shape)  # a 2-D x broadcast to (1, T, hd)


def _rotate_half(L: Learner, g: torch.Generator) -> None:
    for shape in [(6,), (2, 3, 10), (2, 2, 4, 34)]:
        x = torch.randn(*shape, generator=g)
        exact(L.rotate_half(x), hf_llama.rotate_half(x), quiet=True,
              name=f"rotate_half of a {shape} tensor == transformers' rotate_half ([x1, x2] -> [-x2, x1])")


def _rope_llama(L: Learner, g: torch.Generator) -> None:
    B, H, T, hd = _n(g, 1, 3), _n(g, 1, 4), _n(g, 2, 11), 2 * _n(g, 2, 17)
    x = torch.randn(B, H, T, hd, generator=g)
    start = _n(g, 0, 50)
    pos = torch.arange(start, start + T)
    close(L.rope(x, pos), _hf_rope(x, pos, 10000.0), atol=5e-5, quiet=True,
          name=f"rope of a {tuple(x.shape)} tensor at positions {start}..{start + T - 1} == transformers "
               "(LlamaRotaryEmbedding + apply_rotary_pos_emb)")


def _rope_bases_and_shapes(L: Learner, g: torch.Generator) -> None:
    for base, shape in [(500000.0, (3, 7, 6)), (10.0, (2, 1, 5, 10)), (10000.0, (9, 34))]:
        x = torch.randn(*shape, generator=g)
        T = shape[-2]
        pos = torch.randperm(120, generator=g)[:T]  # any positions, not only 0..T-1
        # atol: float32 angles (as transformers computes them) are off by ~1e-7 relative, i.e. ~1e-5 at p ~ 100
        close(L.rope(x, pos, base=base), _hf_rope(x, pos, base), atol=5e-5, quiet=True,
              name=f"rope with base={base:g} on a {shape} tensor, shuffled positions")


def _rope_float64_and_relative(L: Learner, g: torch.Generator) -> None:
    x = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    out = L.rope(x, torch.arange(5))
    exact(out.dtype, torch.float64, quiet=True, name="a float64 input gives a float64 output")
    close(out, _hf_rope(x, torch.arange(5), 10000.0), atol=1e-6, quiet=True, name="rope in float64 == transformers")
    close(out.norm(dim=-1), x.norm(dim=-1), atol=1e-6, quiet=True, name="rope preserves each vector's norm")
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    P = torch.arange(12)
    scores = L.rope(q.expand(12, 16), P) @ L.rope(k.expand(12, 16), P).T
    for off in (-5, 0, 3):
        diag = scores.diagonal(off)
        close(diag, diag[:1].expand_as(diag), atol=1e-4, quiet=True,
              name=f"⟨rope(q, m), rope(k, n)⟩ depends only on m - n (diagonal {off} is constant)")


_SDPA = ((F, "scaled_dot_product_attention", "F.scaled_dot_product_attention"),)
_ROPE_OBJECTS = ((hf_llama.apply_rotary_pos_emb, "transformers' apply_rotary_pos_emb"),
                 (hf_llama.rotate_half, "transformers' rotate_half"),
                 (hf_llama.LlamaRotaryEmbedding, "transformers' LlamaRotaryEmbedding"))

TASKS = (
    Task("04.A", "grouped-query attention", ("repeat_kv", "gqa_attention"), (
        Check("repeat_kv == transformers' repeat_kv, random shapes and n_rep", 1, _repeat_vs_hf),
        Check("repeat_kv: consecutive query heads share a KV head", 1, _repeat_grouping),
        Check("gqa_attention == SDPA(enable_gqa=True), 1 < n_kv < n_heads, Tq != Tk, dv != d", 1, _gqa_plain),
        Check("is_causal bottom-right, MHA / GQA / MQA", 1, _gqa_ends_and_causal),
        Check("gradients of q, k, v == SDPA's", 1, _gqa_grads),
    ), Forbidden(patch=_SDPA, objects=((hf_llama.repeat_kv, "transformers' repeat_kv"),
                                       (torch.nn.MultiheadAttention, "torch.nn.MultiheadAttention")),
                 packages=("labkit", "transformers"))),
    Task("04.B", "the online-softmax tile update", ("online_softmax_update",), (
        Check("one row in uneven blocks: state after each block, final == softmax @ v", 1, _online_one_row),
        Check("batched (B, H, Tq, block) tiles", 1, _online_batched),
        Check("scores near ±1000 and a late maximum: no overflow", 1, _online_large),
        Check("-inf scores, whole blocks of them: no NaN", 1, _online_masked),
    ), Forbidden(patch=_SDPA)),
    Task("04.C", "RoPE, rotate-half layout", ("rotate_half", "rope"), (
        Check("rotate_half == transformers' rotate_half", 1, _rotate_half),
        Check("rope == transformers' LLaMA RoPE, random sizes and positions", 1, _rope_llama),
        Check("other bases, odd head sizes, 2-D to 4-D inputs, shuffled positions", 1, _rope_bases_and_shapes),
        Check("float64 kept, norm preserved, scores depend only on m - n", 1, _rope_float64_and_relative),
    ), Forbidden(objects=_ROPE_OBJECTS, packages=("labkit", "transformers"))),
)
