"""Hidden tests of chapter 16's lab tasks: the sequence log-prob of a response (causal shift + response mask)
and the DPO loss with its implicit rewards.

References: a float64 loop over positions written here (independent of ``labkit.model.token_logprobs``),
``torch.nn.functional.cross_entropy`` with ``ignore_index`` and ``torch.nn.functional.softplus`` in float64
(``−log σ(z) = softplus(−z)``), autograd of those references for the gradients, and worked values (uniform
logits give ``−n·log V``; a pair worked by hand gives ``log(1 + e^−0.2)``). trl is not a dependency of the
course, so its ``DPOTrainer`` is not used; its loss is the formula checked here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


# ---- 16.A sequence_logprobs ----------------------------------------------------------------------------
def _batch(g: torch.Generator, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (B, T, V) logits, (B, T) labels and a ragged (B, T) bool response mask: row b marks the tokens
    from its own prompt length p_b on, minus a random padded tail; every row keeps ≥ 1 response token."""
    B, T, V = _n(g, 1, 5), _n(g, 3, 19), _n(g, 5, 61)
    logits = torch.randn(B, T, V, generator=g) * scale
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        p = _n(g, 1, T - 1)                                   # prompt length: tokens 0..p-1 are the prompt
        end = _n(g, p + 1, T)                                 # tokens end..T-1 are padding
        mask[b, p:end] = True
    return logits, labels, mask


def _loop(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    """The definition, one position at a time in float64: Σ_{t ≥ 1, mask[b, t]} log softmax(logits[b, t−1])[labels[b, t]]."""
    B, T, _ = logits.shape
    out = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        total, n = 0.0, 0
        for t in range(1, T):
            if bool(mask[b, t]):
                row = logits[b, t - 1].double()
                total += float(row[labels[b, t]] - torch.logsumexp(row, 0))
                n += 1
        out[b] = total / n if average else total
    return out


def _seq_loop(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        logits, labels, mask = _batch(g)
        for average in (False, True):
            got = L.sequence_logprobs(logits, labels, mask, average=average)
            exact(tuple(got.shape), (logits.shape[0],), quiet=True, name="output shape (B,)")
            close(got.double(), _loop(logits, labels, mask, average), atol=1e-4, rtol=1e-5, quiet=True,
                  name=f"{'mean' if average else 'sum'} over response tokens, logits {tuple(logits.shape)}, ragged "
                       "masks == a float64 loop over positions (position t predicts token t + 1)")
    logits, labels, mask = _batch(g)
    close(L.sequence_logprobs(logits, labels, mask).double(), _loop(logits, labels, mask, False), atol=1e-4,
          rtol=1e-5, quiet=True, name="average defaults to False (the sum, as in the DPO paper)")


def _seq_cross_entropy(L: Learner, g: torch.Generator) -> None:
    for _ in range(2):
        logits, labels, mask = _batch(g)
        B, T, V = logits.shape
        target = labels.masked_fill(~mask, -100)[:, 1:]
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), target.reshape(-1), ignore_index=-100,
                             reduction="none").view(B, T - 1).sum(-1)
        got = L.sequence_logprobs(logits, labels, mask.long(), average=False)   # a 0/1 integer mask
        close(got, -ce, atol=1e-4, rtol=1e-5, quiet=True,
              name="sum == −(F.cross_entropy with labels −100 outside the response), mask given as 0/1 integers")


def _seq_worked(L: Learner, g: torch.Generator) -> None:
    B, T, V = _n(g, 2, 4), _n(g, 4, 12), _n(g, 7, 40)
    labels = torch.randint(0, V, (B, T), generator=g)
    every = torch.ones(B, T, dtype=torch.bool)
    close(L.sequence_logprobs(torch.zeros(B, T, V), labels, every), torch.full((B,), -(T - 1) * math.log(V)),
          atol=1e-4, quiet=True, name=f"uniform logits, every token marked: −(T − 1)·log V = {-(T - 1) * math.log(V):.4f} "
                                      "(token 0 has no prediction, so only T − 1 tokens count)")
    close(L.sequence_logprobs(torch.zeros(B, T, V), labels, every, average=True), torch.full((B,), -math.log(V)),
          atol=1e-5, quiet=True, name="uniform logits, mean: −log V")
    peaked = torch.zeros(B, T, V)
    peaked[torch.arange(B)[:, None], torch.arange(T - 1)[None], labels[:, 1:]] = 50.0   # position t is sure of token t+1
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, T // 2:] = True
    close(L.sequence_logprobs(peaked, labels, mask), torch.zeros(B), atol=1e-4, quiet=True,
          name="logits at position t certain of token t + 1 give log-prob ≈ 0 (without the shift: ≈ −50 per token)")


def _seq_stable(L: Learner, g: torch.Generator) -> None:
    logits, labels, mask = _batch(g, scale=1e4)
    got = L.sequence_logprobs(logits, labels, mask)
    assert bool(torch.isfinite(got).all()), ("logits of size 1e4 gave a non-finite log-prob: use log_softmax "
                                             "(log of softmax underflows to log 0 = −inf)")
    close(got.double(), _loop(logits, labels, mask, False), atol=1e-2, rtol=1e-5, quiet=True,
          name="logits of size 1e4 == the float64 loop")


def _seq_grad(L: Learner, g: torch.Generator) -> None:
    logits, labels, mask = _batch(g)
    w = torch.randn(logits.shape[0], generator=g)
    ours = logits.clone().requires_grad_()
    out = L.sequence_logprobs(ours, labels, mask)
    assert out.requires_grad, "the result carries no gradient: no torch.no_grad or .detach() inside (the policy trains through it)"
    (out * w).sum().backward()
    ref = logits.double().requires_grad_()
    logp = torch.log_softmax(ref[:, :-1], -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    ((logp * mask[:, 1:]).sum(-1) * w.double()).sum().backward()
    close(ours.grad.double(), ref.grad, atol=1e-5, quiet=True, name="gradient w.r.t. the logits == autograd of the reference")


# ---- 16.B dpo_loss -------------------------------------------------------------------------------------
def _logps(g: torch.Generator, B: int) -> list[torch.Tensor]:
    return [-(torch.rand(B, generator=g) * 75 + 5) for _ in range(4)]        # sequence log-probs in [−80, −5]


def _softplus64(z: torch.Tensor) -> torch.Tensor:
    return F.softplus(-z.double())                                           # −log σ(z), exact in float64


def _dpo_formula(L: Learner, g: torch.Generator) -> None:
    for _ in range(4):
        B, beta = _n(g, 1, 40), _u(g, 0.02, 2.0)
        pc, pr, rc, rr = _logps(g, B)
        loss, cr, rjr = L.dpo_loss(pc, pr, rc, rr, beta=beta)
        z = beta * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
        exact(tuple(torch.as_tensor(loss).shape), (), quiet=True, name="the loss is a scalar (mean over the batch)")
        close(float(loss), float(_softplus64(z).mean()), atol=1e-5, rtol=1e-5, quiet=True,
              name=f"B = {B}, β = {beta:.3f}: loss == mean softplus(−z) in float64, z = β[(π_c − ref_c) − (π_r − ref_r)]")
        close(cr.double(), beta * (pc.double() - rc.double()), atol=1e-4, rtol=1e-5, quiet=True,
              name="chosen implicit rewards β(log π_c − log π_ref,c), one per pair")
        close(rjr.double(), beta * (pr.double() - rr.double()), atol=1e-4, rtol=1e-5, quiet=True,
              name="rejected implicit rewards β(log π_r − log π_ref,r), one per pair")


def _dpo_worked(L: Learner, g: torch.Generator) -> None:
    B = _n(g, 1, 17)
    pc, pr, _, _ = _logps(g, B)
    loss, cr, rjr = L.dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=_u(g, 0.05, 1.0))
    close(float(loss), math.log(2), atol=1e-6, quiet=True, name="policy = reference: loss = log 2 whatever the log-probs")
    close(cr, torch.zeros(B), atol=1e-6, quiet=True, name="policy = reference: every implicit reward is 0")
    loss, cr, rjr = L.dpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]),
                               torch.tensor([-11.0]), beta=0.1)
    close(float(loss), math.log1p(math.exp(-0.2)), atol=1e-6, quiet=True,
          name="hand pair: policy (−10, −12), reference (−11, −11), β = 0.1 → z = 0.2, loss = log(1 + e^−0.2) = 0.598139")
    close([float(cr), float(rjr)], [0.1, -0.1], atol=1e-6, quiet=True, name="hand pair: implicit rewards +0.1 / −0.1")
    loss, *_ = L.dpo_loss(torch.tensor([-12.0]), torch.tensor([-10.0]), torch.tensor([-11.0]), torch.tensor([-11.0]))
    close(float(loss), math.log1p(math.exp(0.1 * 2.0)), atol=1e-6, quiet=True,
          name="β defaults to 0.1: the hand pair swapped gives log(1 + e^0.2)")


def _dpo_extreme(L: Learner, g: torch.Generator) -> None:
    B = _n(g, 2, 9)
    big = torch.rand(B, generator=g) * 2700 + 300                          # |z| in [300, 3000]
    zero = torch.zeros(B)
    sign = torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0)
    loss, *_ = L.dpo_loss(sign * big, zero, zero.clone(), zero.clone(), beta=1.0)
    assert math.isfinite(float(loss)), ("margins of ±300..3000 gave a non-finite loss: −log σ(z) overflows as "
                                        "log(sigmoid(z)); use F.logsigmoid or softplus")
    close(float(loss), float(_softplus64(sign * big).mean()), atol=1e-3, rtol=1e-6, quiet=True,
          name="margins of ±300..3000: loss == float64 softplus(−z) (≈ |z| for the negative ones, 0 for the positive)")


def _dpo_grad(L: Learner, g: torch.Generator) -> None:
    B, beta = _n(g, 2, 23), _u(g, 0.05, 1.5)
    pc, pr, rc, rr = [x.requires_grad_() for x in _logps(g, B)]
    loss, cr, rjr = L.dpo_loss(pc, pr, rc, rr, beta=beta)
    assert not cr.requires_grad and not rjr.requires_grad, "return the implicit rewards detached (they are for logging)"
    loss.backward()
    z = beta * ((pc - rc) - (pr - rr)).detach().double()
    d = -beta * torch.sigmoid(-z) / B                                         # ∂L/∂ log π_c
    close(pc.grad.double(), d, atol=1e-6, rtol=1e-5, quiet=True, name="∂L/∂log π(y_c) = −β σ(−z) / B")
    close(pr.grad.double(), -d, atol=1e-6, rtol=1e-5, quiet=True, name="∂L/∂log π(y_r) = +β σ(−z) / B")
    for x, what in ((rc, "ref_chosen_logps"), (rr, "ref_rejected_logps")):
        assert x.grad is None or not bool(x.grad.any()), (f"a gradient reached {what}: the reference log-probs are "
                                                          "constants (detach them)")


_SEQ_FORBIDDEN = Forbidden(
    patch=((F, "cross_entropy", "torch.nn.functional.cross_entropy"), (F, "nll_loss", "torch.nn.functional.nll_loss")),
    objects=((torch.nn.CrossEntropyLoss, "torch.nn.CrossEntropyLoss"), (torch.nn.NLLLoss, "torch.nn.NLLLoss")),
    packages=("labkit", "transformers", "trl"))
_DPO_FORBIDDEN = Forbidden(packages=("labkit", "transformers", "trl"))

TASKS = (
    Task("16.A", "the sequence log-prob of a response (causal shift, response mask, sum or mean)",
         ("sequence_logprobs",), (
             Check("random shapes and ragged masks: sum and mean == a float64 loop over positions", 2, _seq_loop),
             Check("== −F.cross_entropy over the response tokens (0/1 integer mask)", 1, _seq_cross_entropy),
             Check("worked values: uniform logits give −n·log V; a model sure of token t + 1 gives 0", 1, _seq_worked),
             Check("logits of size 1e4: finite, == the float64 loop", 1, _seq_stable),
             Check("gradient w.r.t. the logits == autograd of the reference", 1, _seq_grad),
         ), _SEQ_FORBIDDEN),
    Task("16.B", "the DPO loss and its implicit rewards", ("dpo_loss",), (
        Check("random batches and β: loss and implicit rewards == the float64 formula", 2, _dpo_formula),
        Check("worked values: log 2 at policy = reference; a pair by hand; β defaults to 0.1", 1, _dpo_worked),
        Check("margins of ±300..3000: finite and exact", 1, _dpo_extreme),
        Check("gradients: −β σ(−z)/B to the policy, none to the reference; rewards detached", 1, _dpo_grad),
    ), _DPO_FORBIDDEN),
)
