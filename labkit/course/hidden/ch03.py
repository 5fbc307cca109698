"""Hidden tests of chapter 03's lab tasks: the bottom-right causal mask, scaled dot-product attention with
masks, and split/merge heads.

References: ``torch.ones(Tq, Tk).tril(Tk - Tq)``, ``F.scaled_dot_product_attention`` (given explicit masks,
since its own ``is_causal`` is top-left aligned) and ``nn.MultiheadAttention``, on random batch, head,
length and head sizes with ``Tq != Tk`` and ``dv != d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.blocks import causal_mask as labkit_causal_mask
from labkit.core.check import close, exact
from labkit.course import fallbacks
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _tril(Tq: int, Tk: int) -> torch.Tensor:
    return torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=Tk - Tq)


# ---- 03.A causal_mask ----------------------------------------------------------------------------------
def _mask_square_and_wide(L: Learner, g: torch.Generator) -> None:
    for Tq, Tk in [(1, 1), (5, 5), (2, 7), (1, 4), (_n(g, 2, 6), _n(g, 7, 12))]:
        exact(L.causal_mask(Tq, Tk), _tril(Tq, Tk), quiet=True, name=f"causal_mask({Tq}, {Tk})")


def _mask_tall(L: Learner, g: torch.Generator) -> None:
    exact(L.causal_mask(6, 2), _tril(6, 2), quiet=True,
          name="causal_mask(6, 2): Tq > Tk, the first 4 queries see no key")


# ---- 03.B attention ------------------------------------------------------------------------------------
def _qkv(g: torch.Generator, lead: tuple[int, ...], Tq: int, Tk: int, d: int, dv: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(*lead, Tq, d, generator=g), torch.randn(*lead, Tk, d, generator=g),
            torch.randn(*lead, Tk, dv, generator=g))


def _attn_plain(L: Learner, g: torch.Generator) -> None:
    for lead in [(), (3,), (2, _n(g, 1, 4))]:
        q, k, v = _qkv(g, lead, _n(g, 1, 6), _n(g, 1, 9), _n(g, 2, 16), _n(g, 1, 7))
        close(L.attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-5, quiet=True,
              name=f"attention, q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, no mask")


def _attn_masks(L: Learner, g: torch.Generator) -> None:
    B, H, T, d = 2, 3, _n(g, 4, 9), 8
    q, k, v = _qkv(g, (B, H), T, T, d, d)
    prefix = _tril(T, T)
    prefix[:, :2] = True
    pad = torch.ones(B, 1, 1, T, dtype=torch.bool)
    pad[1, ..., T - 2:] = False
    additive = torch.randn(T, T, generator=g)
    for mask, what in [(prefix, "a bool prefix-LM mask (T, T)"), (pad, "a bool padding mask (B, 1, 1, T)"),
                       (additive, "an additive float mask")]:
        close(L.attention(q, k, v, mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5,
              quiet=True, name=f"attention with {what}")


def _attn_causal(L: Learner, g: torch.Generator) -> None:
    for Tq, Tk in [(5, 5), (2, 7), (1, _n(g, 3, 9))]:
        q, k, v = _qkv(g, (2, 2), Tq, Tk, 8, 5)
        close(L.attention(q, k, v, is_causal=True), F.scaled_dot_product_attention(q, k, v, attn_mask=_tril(Tq, Tk)),
              atol=1e-5, quiet=True, name=f"is_causal with Tq={Tq}, Tk={Tk} (bottom-right aligned)")
    q, k, v = _qkv(g, (2, 1), 6, 6, 8, 8)
    pad = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    pad[0, ..., 4:] = False
    close(L.attention(q, k, v, mask=pad, is_causal=True),
          F.scaled_dot_product_attention(q, k, v, attn_mask=pad & _tril(6, 6)), atol=1e-5, quiet=True,
          name="padding mask AND is_causal")


def _attn_empty_rows(L: Learner, g: torch.Generator) -> None:
    q, k, v = _qkv(g, (1, 2), 4, 4, 8, 3)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1] = False
    out = L.attention(q, k, v, mask=mask)
    exact(out[..., 1, :], torch.zeros(1, 2, 3), quiet=True, name="a query row with every key masked gives zeros")
    keep = torch.tensor([0, 2, 3])
    close(out[..., keep, :], F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[..., keep, :], atol=1e-5,
          quiet=True, name="the other rows are unaffected")
    q, k, v = _qkv(g, (1,), 5, 2, 4, 4)
    exact(L.attention(q, k, v, is_causal=True)[:, :3], torch.zeros(1, 3, 4), quiet=True,
          name="is_causal with Tq=5 > Tk=2: the first 3 rows see nothing and give zeros")


# ---- 03.C split_heads / merge_heads --------------------------------------------------------------------
def _split_layout(L: Learner, g: torch.Generator) -> None:
    B, T, h, hd = _n(g, 1, 3), _n(g, 2, 7), _n(g, 2, 5), _n(g, 1, 4)
    x = torch.randn(B, T, h * hd, generator=g)
    out = L.split_heads(x, h)
    assert tuple(out.shape) == (B, h, T, hd), f"split_heads gave shape {tuple(out.shape)}, expected {(B, h, T, hd)}"
    for i in range(h):
        exact(out[:, i], x[..., i * hd:(i + 1) * hd], quiet=True, name=f"head {i} holds features {i * hd}..{(i + 1) * hd - 1}")


def _merge_inverse(L: Learner, g: torch.Generator) -> None:
    x = torch.randn(2, _n(g, 3, 8), 12, generator=g)
    exact(L.merge_heads(L.split_heads(x, 4)), x, quiet=True, name="merge_heads(split_heads(x)) == x")
    y = torch.randn(3, 5, 2, 4, generator=g).transpose(1, 2)  # a non-contiguous (B, h, T, hd), as after attention
    exact(L.merge_heads(y), y.transpose(1, 2).reshape(3, 5, 8), quiet=True,
          name="merge_heads of a non-contiguous tensor (the output of attention after transpose)")


def _mha_reference(L: Learner, g: torch.Generator) -> None:
    D, h, T = 24, _n(g, 2, 4) * 2, _n(g, 3, 8)
    mha = torch.nn.MultiheadAttention(D, h, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.randn(3 * D, D, generator=g) / D ** 0.5)
        mha.out_proj.weight.copy_(torch.randn(D, D, generator=g) / D ** 0.5)
    Wq, Wk, Wv = mha.in_proj_weight.detach().chunk(3)
    x = torch.randn(2, T, D, generator=g)
    with torch.no_grad():
        ref, _ = mha(x, x, x, need_weights=False)
        q, k, v = (L.split_heads(x @ W.T, h) for W in (Wq, Wk, Wv))
        out = L.merge_heads(F.scaled_dot_product_attention(q, k, v)) @ mha.out_proj.weight.T
    close(out, ref, atol=1e-5, quiet=True, name=f"multi-head attention built on your split/merge == nn.MultiheadAttention ({h} heads)")


_ATTN_PATCH = ((F, "scaled_dot_product_attention", "F.scaled_dot_product_attention"),
               (F, "multi_head_attention_forward", "F.multi_head_attention_forward"))
_ATTN_OBJECTS = ((torch.nn.MultiheadAttention, "torch.nn.MultiheadAttention"),)

TASKS = (
    Task("03.A", "the bottom-right causal mask", ("causal_mask",), (
        Check("Tq <= Tk, bool, == tril(Tk - Tq)", 1, _mask_square_and_wide),
        Check("Tq > Tk: the first rows see nothing", 1, _mask_tall),
    ), Forbidden()),
    Task("03.B", "scaled dot-product attention with masks", ("attention",), (
        Check("no mask: random shapes, Tq != Tk, dv != d, 2-D to 4-D", 1, _attn_plain),
        Check("bool prefix and padding masks, additive float mask", 1, _attn_masks),
        Check("is_causal bottom-right aligned, and with a padding mask", 1, _attn_causal),
        Check("fully masked rows give zeros, not NaN", 1, _attn_empty_rows),
    ), Forbidden(patch=_ATTN_PATCH, objects=_ATTN_OBJECTS,
                 allowed=(fallbacks.causal_mask, labkit_causal_mask))),
    Task("03.C", "split and merge heads", ("split_heads", "merge_heads"), (
        Check("split_heads: shape and which features each head holds", 1, _split_layout),
        Check("merge_heads inverts split_heads, also on non-contiguous input", 1, _merge_inverse),
        Check("multi-head attention on them == nn.MultiheadAttention", 1, _mha_reference),
    ), Forbidden(patch=_ATTN_PATCH, objects=_ATTN_OBJECTS)),
)
