"""Hidden tests of chapter 11's lab tasks: the activation-memory meter (bytes saved for backward) and one step
of a dynamic loss scaler.

References: hand-counted cases (what ``exp``, ``sin``, ``mul`` and a linear layer save, in float32 and bf16,
views and repeated saves of one storage) and labkit's ``SavedTensorLog`` on random small LLaMA forwards;
``torch.amp.GradScaler`` step by step on random overflow traces (scale, growth tracker, skipped steps and the
unscaled gradients), with default and other growth / backoff factors.
"""
from __future__ import annotations

import torch

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.memory import SavedTensorLog
from labkit.model import Llama, LlamaConfig

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ---- 11.A saved_bytes ----------------------------------------------------------------------------------
def _saved_hand(L: Learner, g: torch.Generator) -> None:
    n, m = _n(g, 5, 40), _n(g, 3, 9)
    x = torch.randn(n, m, generator=g, requires_grad=True)
    exact(L.saved_bytes(lambda: x.exp(), []), 4 * n * m, quiet=True,
          name=f"exp of a float32 ({n}, {m}) tensor saves its output: 4·{n * m} bytes")
    exact(L.saved_bytes(lambda: x.sin(), [x]), 0, quiet=True,
          name="sin saves its input; when that input is one of params it is excluded: 0 bytes")
    exact(L.saved_bytes(lambda: x * x, []), 4 * n * m, quiet=True,
          name="x * x saves x twice: one storage, counted once")
    xb = torch.randn(n, m, generator=g).bfloat16().requires_grad_()
    exact(L.saved_bytes(lambda: xb.exp(), []), 2 * n * m, quiet=True, name="a bf16 tensor takes 2 bytes per element")
    lin = torch.nn.Linear(m, 3)
    inp = torch.randn(n, m, generator=g)
    exact(L.saved_bytes(lambda: lin(inp), lin.parameters()), 4 * n * m, quiet=True,
          name="nn.Linear saves its input and its weight: with params = lin.parameters() only the input counts")


def _saved_views(L: Learner, g: torch.Generator) -> None:
    n = _n(g, 6, 30)
    x = torch.randn(n, 8, generator=g, requires_grad=True)

    def fn() -> torch.Tensor:
        y = x.exp()                      # saves y (its output)
        return y[:, :3].sin()            # saves a view of y: the same storage

    exact(L.saved_bytes(fn, []), 4 * n * 8, quiet=True,
          name="a view of an already saved tensor adds nothing (its storage is counted once, whole)")


def _random_llama(g: torch.Generator) -> Llama:
    heads = _n(g, 1, 2) * 2
    cfg = LlamaConfig(vocab_size=_n(g, 30, 90), dim=8 * heads * _n(g, 1, 2), n_layers=_n(g, 1, 3), n_heads=heads,
                      n_kv_heads=heads // 2, hidden_dim=_n(g, 20, 70), max_seq_len=64)
    return Llama(cfg)


def _saved_llama(L: Learner, g: torch.Generator) -> None:
    for _ in range(2):
        model = _random_llama(g)
        B, T = _n(g, 1, 3), _n(g, 3, 23)
        ids = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
        with SavedTensorLog(exclude=model.parameters()) as log:
            model(ids)
        got = L.saved_bytes(lambda: model(ids), model.parameters())     # a generator, as in the chapter
        exact(got, log.total_bytes, quiet=True,
              name=f"a random LLaMA ({model.config.n_layers} layers, dim {model.config.dim}), B={B}, T={T}: "
                   "activation bytes, weights excluded")


# ---- 11.B loss_scaler_step ------------------------------------------------------------------------------
def _run_trace(L: Learner, g: torch.Generator, steps: int, init: float, interval: int, backoff: float,
               growth: float, p_overflow: float) -> None:
    shapes = [(_n(g, 2, 6), _n(g, 1, 5)), (_n(g, 1, 9),)]
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    opt = torch.optim.SGD(params, lr=0.0)
    ref = torch.amp.GradScaler("cpu", init_scale=init, growth_factor=growth, backoff_factor=backoff,
                               growth_interval=interval)
    ref.scale(torch.ones(()))                                          # creates its scale and growth tracker
    scale, good = init, 0
    for step in range(steps):
        grads = [torch.randn(s, generator=g) * scale * 1e-3 for s in shapes]   # gradients of scale · loss
        if float(torch.rand(1, generator=g)) < p_overflow:
            bad = [float("inf"), float("nan"), float("-inf")][_n(g, 0, 2)]
            grads[_n(g, 0, 1)].view(-1)[0] = bad
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        ours = [gr.clone() for gr in grads]
        stepped, scale, good = L.loss_scaler_step(ours, scale, good, interval, backoff, growth)
        ref.step(opt)                                                  # unscales p.grad, skips on inf/NaN
        ref_stepped = all(bool(torch.isfinite(p.grad).all()) for p in params)
        ref.update()
        where = f"step {step} (growth_interval {interval}, backoff {backoff}, growth {growth})"
        exact(bool(stepped), ref_stepped, quiet=True, name=f"{where}: stepped (False on inf/NaN)")
        exact(float(scale), float(ref.get_scale()), quiet=True, name=f"{where}: the scale after the step")
        exact(int(good), int(ref._get_growth_tracker()), quiet=True, name=f"{where}: clean steps in a row")
        if ref_stepped:
            for ours_g, p in zip(ours, params):
                close(ours_g, p.grad, atol=0, rtol=1e-6, quiet=True, name=f"{where}: gradients divided by the scale")


def _scaler_default(L: Learner, g: torch.Generator) -> None:
    _run_trace(L, g, 60, 2.0 ** _n(g, 8, 16), _n(g, 2, 6), 0.5, 2.0, 0.15)


def _scaler_factors(L: Learner, g: torch.Generator) -> None:
    _run_trace(L, g, 40, 2.0 ** 10, _n(g, 2, 4), 0.25, 4.0, 0.2)


def _scaler_growth(L: Learner, g: torch.Generator) -> None:
    stepped, scale, good = L.loss_scaler_step([torch.ones(3) * 8.0], 8.0, 4, 5)
    exact((bool(stepped), float(scale), int(good)), (True, 16.0, 0), quiet=True,
          name="the 5th clean step of growth_interval 5 doubles the scale and resets the count")
    grads = [torch.ones(2) * 4.0, torch.tensor([1.0, float("nan")])]
    stepped, scale, good = L.loss_scaler_step(grads, 4.0, 3, 5)
    exact((bool(stepped), float(scale), int(good)), (False, 2.0, 0), quiet=True,
          name="a NaN in any gradient: skip, halve the scale, reset the count")


_SAVED_FORBIDDEN = Forbidden(packages=("labkit",))
_SCALER_FORBIDDEN = Forbidden(
    patch=((torch.amp, "GradScaler", "torch.amp.GradScaler"), (torch, "_amp_update_scale_", "torch._amp_update_scale_"),
           (torch, "_amp_foreach_non_finite_check_and_unscale_", "torch._amp_foreach_non_finite_check_and_unscale_")),
    packages=("labkit",))

TASKS = (
    Task("11.A", "the activation-memory meter (bytes saved for backward)", ("saved_bytes",), (
        Check("hand-counted cases: exp, sin, x·x, bf16, nn.Linear with excluded weights", 2, _saved_hand),
        Check("a view of a saved tensor: its storage counted once", 1, _saved_views),
        Check("random small LLaMA forwards == labkit SavedTensorLog (params from a generator)", 1, _saved_llama),
    ), _SAVED_FORBIDDEN),
    Task("11.B", "one step of a dynamic loss scaler", ("loss_scaler_step",), (
        Check("a random overflow trace == torch.amp.GradScaler step by step (scale, count, gradients)", 2,
              _scaler_default),
        Check("other backoff and growth factors == GradScaler", 1, _scaler_factors),
        Check("growth on the interval's last clean step; NaN skips and backs off", 1, _scaler_growth),
    ), _SCALER_FORBIDDEN),
)
