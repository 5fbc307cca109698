"""Hidden tests of chapter 06's lab tasks: the SwiGLU feed-forward and LLaMA's parameter count.

References: transformers' ``LlamaMLP`` (outputs and weight gradients) and
``LlamaForCausalLM(config).num_parameters()`` on random configurations built on the ``meta`` device (no
memory), with GQA, tied and untied embeddings and odd sizes, plus the published LLaMA-7B count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _mlp(g: torch.Generator, d: int, f: int) -> LlamaMLP:
    mlp = LlamaMLP(LlamaConfig(hidden_size=d, intermediate_size=f, hidden_act="silu", num_attention_heads=1,
                                 head_dim=8))  # attention sizes do not matter to the MLP; they must be valid
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return mlp


def _weights(mlp: LlamaMLP) -> tuple[torch.Tensor, ...]:
    return mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight


# ---- 06.A swiglu ---------------------------------------------------------------------------------------
def _swiglu_2d(L: Learner, g: torch.Generator) -> None:
    d, f = _n(g, 5, 24), _n(g, 7, 50)
    mlp = _mlp(g, d, f)
    x = torch.randn(_n(g, 1, 6), d, generator=g) * 2
    with torch.no_grad():
        close(L.swiglu(x, *_weights(mlp)), mlp(x), atol=1e-5, quiet=True, name=f"swiglu on ({x.shape[0]}, {d}), inner {f}")


def _swiglu_shapes(L: Learner, g: torch.Generator) -> None:
    d, f = 12, 31
    mlp = _mlp(g, d, f)
    with torch.no_grad():
        for shape in [(d,), (2, 3, d), (2, 1, 4, d)]:
            x = torch.randn(*shape, generator=g)
            close(L.swiglu(x, *_weights(mlp)), mlp(x), atol=1e-5, quiet=True, name=f"swiglu on a {shape} input")


def _swiglu_grad(L: Learner, g: torch.Generator) -> None:
    d, f = 9, 20
    mlp = _mlp(g, d, f)
    x = torch.randn(4, d, generator=g)
    mlp(x).pow(2).sum().backward()
    mine = [w.detach().clone().requires_grad_() for w in _weights(mlp)]
    L.swiglu(x, *mine).pow(2).sum().backward()
    for name, w, ref in zip(("w_gate", "w_up", "w_down"), mine, _weights(mlp)):
        assert w.grad is not None, f"no gradient reached {name} (did you detach it?)"
        close(w.grad, ref.grad, atol=1e-5, quiet=True, name=f"d loss / d {name} == LlamaMLP's")


def _swiglu_extremes(L: Learner, g: torch.Generator) -> None:
    d = 6
    eye = torch.eye(d)
    x = torch.tensor([[-200.0, -50.0, 0.0, 50.0, 200.0, 1.0]])
    close(L.swiglu(x, eye, eye, eye), F.silu(x) * x, atol=1e-3, rtol=1e-5, quiet=True,
          name="identity weights: silu(x)·x for x in ±200 (no overflow in the sigmoid)")


# ---- 06.B llama_params ---------------------------------------------------------------------------------
def _hf_count(V: int, d: int, L_: int, h: int, kv: int, f: int, tied: bool) -> int:
    cfg = LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=f, num_hidden_layers=L_, num_attention_heads=h,
                      num_key_value_heads=kv, tie_word_embeddings=tied)
    with torch.device("meta"):
        return LlamaForCausalLM(cfg).num_parameters()


def _random_config(g: torch.Generator) -> tuple[int, int, int, int, int, int]:
    h = _n(g, 1, 4) * 2
    divisors = [k for k in range(1, h + 1) if h % k == 0]
    kv = divisors[_n(g, 0, len(divisors) - 1)]
    d = h * 2 * _n(g, 1, 5)  # RoPE needs an even head size
    return _n(g, 50, 999), d, _n(g, 1, 4), h, kv, _n(g, 3, 200)


def _count_7b(L: Learner, g: torch.Generator) -> None:
    exact(L.llama_params(32000, 4096, 32, 32, 32, 11008), 6_738_415_616, quiet=True, name="LLaMA-7B")


def _count_untied(L: Learner, g: torch.Generator) -> None:
    for _ in range(4):
        V, d, n, h, kv, f = _random_config(g)
        exact(L.llama_params(V, d, n, h, kv, f), _hf_count(V, d, n, h, kv, f, False), quiet=True,
              name=f"V={V}, d={d}, L={n}, heads={h}, kv_heads={kv}, ffn={f}, untied")


def _count_tied(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        V, d, n, h, kv, f = _random_config(g)
        exact(L.llama_params(V, d, n, h, kv, f, tie_embeddings=True), _hf_count(V, d, n, h, kv, f, True), quiet=True,
              name=f"V={V}, d={d}, L={n}, heads={h}, kv_heads={kv}, ffn={f}, tied")


def _count_int(L: Learner, g: torch.Generator) -> None:
    n = L.llama_params(1000, 96, 2, 6, 2, 256)
    assert type(n) is int, f"llama_params returned {type(n).__name__} {n!r}; a parameter count is an int (use //)"


_COUNT_FORBIDDEN = Forbidden(packages=("labkit", "transformers", "torch"),
                             methods=frozenset({"num_parameters", "numel", "parameters"}))

TASKS = (
    Task("06.A", "the SwiGLU feed-forward", ("swiglu",), (
        Check("(N, d) inputs == transformers LlamaMLP, random sizes", 1, _swiglu_2d),
        Check("any leading shape: (d,), (B, T, d), 4-D", 1, _swiglu_shapes),
        Check("gradients of the three weights == LlamaMLP's", 1, _swiglu_grad),
        Check("no overflow for inputs ±200", 1, _swiglu_extremes),
    ), Forbidden(patch=((F, "silu", "F.silu"),), objects=((torch.nn.SiLU, "torch.nn.SiLU"), (LlamaMLP, "LlamaMLP")),
                 packages=("labkit", "transformers"))),
    Task("06.B", "LLaMA's parameter count", ("llama_params",), (
        Check("LLaMA-7B: 6,738,415,616", 1, _count_7b),
        Check("random GQA configs, untied == LlamaForCausalLM.num_parameters()", 1, _count_untied),
        Check("tied embeddings == LlamaForCausalLM.num_parameters()", 1, _count_tied),
        Check("returns an int", 1, _count_int),
    ), _COUNT_FORBIDDEN),
)
