"""Hidden tests of chapter 01's lab tasks: ``stable_softmax`` and ``cross_entropy``.

References: ``torch.softmax`` and ``F.cross_entropy`` (values and gradients), on random shapes, dims,
``ignore_index`` values (including one that is a valid class id), label smoothing, the (B, T, V) layout,
huge and ``-inf`` logits and half precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.core.check import close
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ---- stable_softmax ------------------------------------------------------------------------------------
def _softmax_random_shapes(L: Learner, g: torch.Generator) -> None:
    for shape in [(_randint(g, 2, 13),), (_randint(g, 1, 5), _randint(g, 2, 11)), (2, _randint(g, 2, 4), 7)]:
        z = torch.randn(*shape, generator=g) * 3
        close(L.stable_softmax(z), torch.softmax(z, dim=-1), atol=1e-6, quiet=True,
              name=f"softmax of a random {tuple(shape)} tensor (last dim)")


def _softmax_dim(L: Learner, g: torch.Generator) -> None:
    z = torch.randn(3, _randint(g, 2, 6), 5, generator=g)
    for dim in (0, 1, -2, 2):
        close(L.stable_softmax(z, dim=dim), torch.softmax(z, dim=dim), atol=1e-6, quiet=True,
              name=f"softmax over dim={dim} of a {tuple(z.shape)} tensor")


def _softmax_extremes(L: Learner, g: torch.Generator) -> None:
    z = torch.randn(4, 9, generator=g) * 1e4
    z[1, :4] = float("-inf")  # masked entries get probability 0
    z[2] = 3e38               # all equal and huge: uniform
    close(L.stable_softmax(z), torch.softmax(z, dim=-1), atol=1e-6, quiet=True,
          name="softmax of logits ±1e4, 3e38 and -inf (no NaN, no inf)")


def _softmax_dtypes(L: Learner, g: torch.Generator) -> None:
    z = torch.randn(5, 17, generator=g, dtype=torch.float64) * 5
    out = L.stable_softmax(z)
    assert out.dtype == torch.float64, f"float64 input gave {out.dtype}; keep the input dtype"
    close(out, torch.softmax(z, -1), atol=1e-12, quiet=True, name="float64 softmax")
    for dt in (torch.float16, torch.bfloat16):
        zh = (torch.randn(3, 8, generator=g) * 20).to(dt)
        out = L.stable_softmax(zh)
        assert out.dtype == dt, f"{dt} input gave {out.dtype}; keep the input dtype"
        close(out.float(), torch.softmax(zh.float(), -1), atol=1e-2, quiet=True, name=f"{dt} softmax of logits ~ ±60")


# ---- cross_entropy -------------------------------------------------------------------------------------
def _targets(g: torch.Generator, shape: tuple[int, ...], C: int, ignore: int, n_ignored: int) -> torch.Tensor:
    y = torch.randint(0, C, shape, generator=g)
    flat = y.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:n_ignored]] = ignore
    return y


def _ce_plain(L: Learner, g: torch.Generator) -> None:
    N, C = _randint(g, 3, 9), _randint(g, 2, 13)
    z, y = torch.randn(N, C, generator=g) * 3, torch.randint(0, C, (N,), generator=g)
    close(L.cross_entropy(z, y), F.cross_entropy(z, y), atol=1e-5, quiet=True, name=f"CE of ({N}, {C}) logits")


def _ce_ignore(L: Learner, g: torch.Generator) -> None:
    N, C = 11, 7
    z = torch.randn(N, C, generator=g) * 2
    y = _targets(g, (N,), C, -100, 4)
    close(L.cross_entropy(z, y), F.cross_entropy(z, y), atol=1e-5, quiet=True,
          name="CE with 4 of 11 targets = -100 (mean over the 7 kept)")
    y3 = _targets(g, (N,), C, 3, 3)
    close(L.cross_entropy(z, y3, ignore_index=3), F.cross_entropy(z, y3, ignore_index=3), atol=1e-5, quiet=True,
          name="CE with ignore_index=3 (a valid class id)")


def _ce_smoothing(L: Learner, g: torch.Generator) -> None:
    z = torch.randn(9, 6, generator=g) * 3
    y = _targets(g, (9,), 6, -100, 2)
    for eps in (0.1, 0.35):
        close(L.cross_entropy(z, y, label_smoothing=eps), F.cross_entropy(z, y, label_smoothing=eps),
              atol=1e-5, quiet=True, name=f"CE with label_smoothing={eps} and 2 ignored targets")


def _ce_lm_layout(L: Learner, g: torch.Generator) -> None:
    B, T, V = 2, _randint(g, 3, 7), 19
    z = torch.randn(B, T, V, generator=g)
    y = _targets(g, (B, T), V, -100, 3)
    close(L.cross_entropy(z, y), F.cross_entropy(z.reshape(-1, V), y.reshape(-1)), atol=1e-5, quiet=True,
          name=f"CE of LM logits ({B}, {T}, {V}) with targets ({B}, {T})")


def _ce_huge_and_grad(L: Learner, g: torch.Generator) -> None:
    z = (torch.randn(6, 5, generator=g) * 1e4).requires_grad_()
    y = _targets(g, (6,), 5, -100, 1)
    ours = L.cross_entropy(z, y)
    ref = F.cross_entropy(z.detach(), y)
    close(ours.detach(), ref, atol=1e-2, quiet=True, name="CE of logits ~ ±1e4 (finite)")
    z2 = (torch.randn(6, 5, generator=g) * 2).requires_grad_()
    L.cross_entropy(z2, y, label_smoothing=0.2).backward()
    z3 = z2.detach().clone().requires_grad_()
    F.cross_entropy(z3, y, label_smoothing=0.2).backward()
    assert z2.grad is not None, "no gradient reached the logits (did you detach or use .item()?)"
    close(z2.grad, z3.grad, atol=1e-6, quiet=True, name="dCE/dlogits")


_SOFTMAX_FORBIDDEN = Forbidden(
    patch=((torch, "softmax", "torch.softmax"), (F, "softmax", "F.softmax"), (torch, "log_softmax", "torch.log_softmax"),
           (F, "log_softmax", "F.log_softmax"), (torch, "logsumexp", "torch.logsumexp"),
           (torch.special, "softmax", "torch.special.softmax"), (torch.special, "log_softmax", "torch.special.log_softmax"),
           (torch.special, "logsumexp", "torch.special.logsumexp")),
    objects=((torch.nn.Softmax, "torch.nn.Softmax"), (torch.nn.LogSoftmax, "torch.nn.LogSoftmax")),
    methods=frozenset({"softmax", "log_softmax", "logsumexp"}),
)
_CE_FORBIDDEN = Forbidden(
    patch=((F, "cross_entropy", "F.cross_entropy"), (F, "nll_loss", "F.nll_loss"),
           (F, "binary_cross_entropy_with_logits", "F.binary_cross_entropy_with_logits")),
    objects=((torch.nn.CrossEntropyLoss, "torch.nn.CrossEntropyLoss"), (torch.nn.NLLLoss, "torch.nn.NLLLoss")),
    methods=frozenset({"cross_entropy", "nll_loss"}),
)

TASKS = (
    Task("01.A", "stable softmax", ("stable_softmax",), (
        Check("random shapes, last dim == torch.softmax", 1, _softmax_random_shapes),
        Check("the dim argument (0, 1, -2, 2)", 1, _softmax_dim),
        Check("huge and -inf logits: no overflow, no NaN", 1, _softmax_extremes),
        Check("float64, float16 and bfloat16 in, same dtype out", 1, _softmax_dtypes),
    ), _SOFTMAX_FORBIDDEN),
    Task("01.B", "cross-entropy with ignore_index", ("cross_entropy",), (
        Check("(N, C) logits == F.cross_entropy", 1, _ce_plain),
        Check("ignore_index: -100 and a valid class id", 1, _ce_ignore),
        Check("label smoothing with ignored targets", 1, _ce_smoothing),
        Check("(B, T, V) logits with (B, T) targets", 1, _ce_lm_layout),
        Check("huge logits stay finite; the gradient == F.cross_entropy's", 1, _ce_huge_and_grad),
    ), _CE_FORBIDDEN),
)
