"""Hidden tests of chapter 14's lab task: prompt tuning's forward pass (virtual tokens prepended to the input
embeddings, the padding mask extended over them, the logits of the real tokens returned).

Reference: ``peft.PromptTuningConfig`` (peft 0.21) on the transformers ``LlamaForCausalLM`` that
:func:`labkit.model.to_hf` builds from a random labkit ``Llama`` of awkward sizes (GQA with ``1 < n_kv <
n_heads``, head_dim 10 or 8, odd vocabulary), with the same soft prompt copied into peft's prompt encoder.
peft returns ``P + T`` rows; the task returns the last ``T``. Padding (left and right) goes through
``attention_mask``; the gradient with respect to the prompt is compared with the one through peft's logits.
"""
from __future__ import annotations

import warnings
from typing import Any

import peft
import torch
import torch.nn.functional as F

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.model import Llama, LlamaConfig, to_hf

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _model(g: torch.Generator) -> Llama:
    """A random labkit Llama with awkward sizes (its weights from ``g``; the global RNG is restored by the grader)."""
    n_heads, n_kv, hd = ((6, 2, 10), (6, 3, 8), (4, 2, 12))[_n(g, 0, 2)]
    cfg = LlamaConfig(vocab_size=_n(g, 61, 131), dim=n_heads * hd, n_layers=_n(g, 1, 3), n_heads=n_heads,
                      n_kv_heads=n_kv, hidden_dim=_n(g, 50, 110))
    torch.manual_seed(_n(g, 0, 10_000))
    return Llama(cfg).eval()


def _peft(model: Llama, prompt: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """peft's prompt-tuning model of ``model`` with ``prompt`` as its soft prompt, and peft's prompt weight."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(to_hf(model).eval(), peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=prompt.shape[0]))
    weight = pm.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.copy_(prompt)
    return pm, weight


def _peft_logits(model: Llama, prompt: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None,
                 grad: bool = False, pm: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """peft's logits ``(B, P + T, V)`` for ``ids`` with ``prompt`` as its soft prompt, and peft's prompt weight."""
    pm, weight = _peft(model, prompt) if pm is None else pm
    with warnings.catch_warnings(), torch.set_grad_enabled(grad):
        warnings.simplefilter("ignore")
        return pm(input_ids=ids, attention_mask=mask).logits, weight


def _inputs(g: torch.Generator, model: Llama, B: int, T: int, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    prompt = torch.randn(P, model.config.dim, generator=g) * 0.5
    return ids, prompt


def _padding(g: torch.Generator, B: int, T: int) -> torch.Tensor:
    """0/1 ``(B, T)``: row 0 unpadded, then left- and right-padded rows (at least one real token each)."""
    mask = torch.ones(B, T, dtype=torch.long)
    for b in range(1, B):
        k = _n(g, 1, T - 1)
        if b % 2:
            mask[b, :k] = 0          # left padding
        else:
            mask[b, T - k:] = 0      # right padding
    return mask


def _check_rows(ours: Any, ref: torch.Tensor, P: int, what: str, real: torch.Tensor | None = None) -> None:
    B, PT, V = ref.shape
    if not isinstance(ours, torch.Tensor):
        raise AssertionError(f"return a tensor of logits (B, T, V), got {type(ours).__name__}")
    exact(tuple(ours.shape), (B, PT - P, V), quiet=True,
          name=f"logits shape (B, T, V): only the rows of the real tokens ({what})")
    ref = ref[:, P:]
    if real is not None:                                   # compare the real tokens' rows only
        ours, ref = ours[real.bool()], ref[real.bool()]
    close(ours.detach(), ref, atol=2e-5, rtol=1e-4, quiet=True,
          name=f"logits == peft PromptTuning's last T rows ({what})")


def _no_padding(L: Learner, g: torch.Generator) -> None:
    for _ in range(2):
        model = _model(g)
        B, T, P = _n(g, 1, 3), _n(g, 3, 13), _n(g, 2, 9)
        ids, prompt = _inputs(g, model, B, T, P)
        ref, _ = _peft_logits(model, prompt, ids, None)
        with torch.no_grad():
            ours = L.prompt_tuning_forward(model, ids, prompt)
        _check_rows(ours, ref, P, f"B={B}, T={T}, P={P}, n_heads={model.config.n_heads}, "
                                  f"n_kv={model.config.n_kv_heads}, no attention_mask")


def _with_padding(L: Learner, g: torch.Generator) -> None:
    model = _model(g)
    B, T, P = _n(g, 3, 4), _n(g, 5, 12), _n(g, 2, 7)
    ids, prompt = _inputs(g, model, B, T, P)
    mask = _padding(g, B, T)
    ref, _ = _peft_logits(model, prompt, ids, mask)
    with torch.no_grad():
        ours = L.prompt_tuning_forward(model, ids, prompt, attention_mask=mask)
    _check_rows(ours, ref, P, f"left- and right-padded rows, P={P}: padded keys are never attended to, the "
                              f"virtual tokens always are", real=mask)


def _edges(L: Learner, g: torch.Generator) -> None:
    model = _model(g)
    one = _peft(model, torch.randn(1, model.config.dim, generator=g))
    for B, T, P in ((1, 1, 1), (2, _n(g, 2, 6), 1), (1, 1, _n(g, 3, 8))):
        ids, prompt = _inputs(g, model, B, T, P)
        if P == 1:
            prompt = one[1].detach().clone()
        ones = torch.ones(B, T, dtype=torch.long)
        ref, _ = _peft_logits(model, prompt, ids, ones, pm=one if P == 1 else None)
        with torch.no_grad():
            ours = L.prompt_tuning_forward(model, ids, prompt, attention_mask=ones)
        _check_rows(ours, ref, P, f"edge sizes B={B}, T={T}, P={P}, an all-ones attention_mask")


def _gradient(L: Learner, g: torch.Generator) -> None:
    model = _model(g)
    B, T, P = 2, _n(g, 4, 10), _n(g, 2, 6)
    ids, prompt = _inputs(g, model, B, T, P)
    mask = _padding(g, B, T)
    labels = ids.masked_fill(mask == 0, -100)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:   # next-token loss of the real tokens' rows
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)

    ref, weight = _peft_logits(model, prompt, ids, mask, grad=True)
    loss_of(ref[:, P:]).backward()
    ours_prompt = prompt.clone().requires_grad_(True)
    ours = L.prompt_tuning_forward(model, ids, ours_prompt, attention_mask=mask)
    if not isinstance(ours, torch.Tensor) or ours.shape != ref[:, P:].shape:
        raise AssertionError("return the logits of the real tokens, (B, T, V)")
    loss_of(ours).backward()
    if ours_prompt.grad is None:
        raise AssertionError("no gradient reached the prompt: build the input from `prompt` itself (no .detach(), "
                             "no copy into a new tensor without autograd)")
    close(ours_prompt.grad, weight.grad, atol=1e-5, rtol=1e-4, quiet=True,
          name="d loss / d prompt == the gradient through peft's logits (what training updates)")
    exact(torch.equal(ours_prompt.detach(), prompt), True, quiet=True, name="the prompt is not modified")


TASKS = (
    Task("14.A", "prompt tuning's forward: virtual tokens prepended to the input embeddings",
         ("prompt_tuning_forward",), (
        Check("random sizes, no padding: logits == peft PromptTuning's last T rows", 2, _no_padding),
        Check("left- and right-padded batch: the mask gets P ones for the virtual tokens", 2, _with_padding),
        Check("edge sizes: P = 1, T = 1, a batch of one", 1, _edges),
        Check("the gradient with respect to the prompt == the one through peft's logits", 1, _gradient),
    ), Forbidden(packages=("labkit", "peft", "transformers"))),
)
