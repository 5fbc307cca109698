"""labkit.train.optim and labkit.train.clip: AdamW == torch.optim.AdamW, the parameter groups of a LLaMA,
global-norm clipping == torch.nn.utils.clip_grad_norm_."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from labkit.core.check import close
from labkit.model import Llama, LlamaConfig
from labkit.train import AdamW, clip_grad_norm, param_groups

SHAPES = [(7,), (5, 3), (2, 3, 4), (1, 11), ()]          # awkward sizes, a 3-D tensor and a 0-dim scalar


def _params(seed: int) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _groups(params: list[nn.Parameter], torch_style: bool = False) -> list[dict]:
    """Three groups: default settings, own lr + weight decay, own betas + eps + no decay."""
    return [{"params": params[:2]},
            {"params": params[2:4], "lr": 3e-2, "weight_decay": 0.3},
            {"params": params[4:], "betas": (0.5, 0.9), "eps": 1e-3, "weight_decay": 0.0}]


def _run(opt: torch.optim.Optimizer, params: list[nn.Parameter], seed: int, steps: int, skip: int = 1) -> None:
    """``steps`` updates with random gradients; parameter ``skip`` has no gradient on every third step."""
    g = torch.Generator().manual_seed(seed + 100)
    for t in range(steps):
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g) * (10.0 if i == 3 else 1.0)
            p.grad = None if (i == skip and t % 3 == 1) else grad
        opt.step()


def _make(cls, params, **kw):
    return cls(_groups(params), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adamw_matches_torch_over_25_steps(seed: int) -> None:
    ours, ref = _params(seed), _params(seed)
    o_ours, o_ref = _make(AdamW, ours), _make(torch.optim.AdamW, ref)
    _run(o_ours, ours, seed, 25)
    _run(o_ref, ref, seed, 25)
    for p, q in zip(ours, ref):
        close(p, q, atol=1e-6, quiet=True)
        close(o_ours.state[p]["exp_avg"], o_ref.state[q]["exp_avg"], atol=1e-6, quiet=True)
        close(o_ours.state[p]["exp_avg_sq"], o_ref.state[q]["exp_avg_sq"], atol=1e-6, quiet=True)
        assert o_ours.state[p]["step"] == int(o_ref.state[q]["step"])
    assert o_ours.state[ours[1]]["step"] == 25 - 8                 # the skipped parameter's t did not advance
    start = _params(seed)
    moved = max(float((p.detach() - s.detach()).abs().max()) for p, s in zip(ours, start))
    assert moved > 0.05                                            # the weights really moved


def test_the_comparison_can_fail() -> None:
    """Adam with L2 regularisation (decay added to the gradient) is not AdamW: the same check catches it."""
    ours, coupled = _params(0), _params(0)
    _run(_make(AdamW, ours), ours, 0, 25)
    _run(_make(torch.optim.Adam, coupled), coupled, 0, 25)
    with pytest.raises(AssertionError):
        for p, q in zip(ours, coupled):
            close(p, q, atol=1e-6, quiet=True)


def test_adamw_state_dict_round_trip_and_torch_interop() -> None:
    a, b, ref = _params(3), _params(3), _params(3)
    oa, oref = _make(AdamW, a), _make(torch.optim.AdamW, ref)
    _run(oa, a, 3, 10)
    _run(oref, ref, 3, 10)
    with torch.no_grad():
        for p, q in zip(b, a):
            p.copy_(q)
    ob = _make(AdamW, b)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))            # a fresh optimizer continues the run
    oc = _make(AdamW, c := _params(3))
    with torch.no_grad():
        for p, q in zip(c, ref):
            p.copy_(q)
    oc.load_state_dict(copy.deepcopy(oref.state_dict()))          # torch's state (step as a tensor) loads too
    for opt, ps in ((oa, a), (ob, b), (oref, ref), (oc, c)):
        _run(opt, ps, 4, 10)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    for p, q in zip(c, ref):
        close(p, q, atol=1e-6, quiet=True)


def test_adamw_closure_and_add_param_group() -> None:
    w = nn.Parameter(torch.ones(3))
    opt = AdamW([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 3.0
    assert w[0].item() < 1.0
    opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.9, 0.999)


def test_adamw_bad_arguments() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    for kw, match in [(dict(lr=-1e-3), "lr"), (dict(lr=float("nan")), "lr"), (dict(betas=(0.9,)), "betas"),
                      (dict(betas=(0.9, 1.0)), r"betas\[1\]"), (dict(betas=(-0.1, 0.9)), r"betas\[0\]"),
                      (dict(eps=0.0), "eps"), (dict(weight_decay=-0.1), "weight_decay")]:
        with pytest.raises(ValueError, match=match):
            AdamW(p, **kw)
    with pytest.raises(TypeError, match="lr"):
        AdamW(p, lr="1e-3")
    with pytest.raises(ValueError, match="lr"):
        AdamW([{"params": p, "lr": -1.0}])                          # a group's own value is checked too
    opt = AdamW(p)
    with pytest.raises(ValueError, match="eps"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "eps": -1.0})
    assert len(opt.param_groups) == 1
    e = nn.Embedding(5, 3, sparse=True)
    e(torch.tensor([1])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        AdamW(e.parameters()).step()


# ----------------------------------------------------------------------------------------- param_groups
def _names(model: nn.Module, groups: list[dict]) -> list[set[str]]:
    name = {id(p): n for n, p in model.named_parameters()}
    return [{name[id(p)] for p in g["params"]} for g in groups]


@pytest.mark.parametrize("tied", [True, False])
def test_param_groups_on_the_course_model(tied: bool) -> None:
    model = Llama(LlamaConfig(vocab_size=29, dim=24, n_layers=3, n_heads=6, n_kv_heads=2, hidden_dim=40,
                              tie_embeddings=tied))
    groups = param_groups(model, 0.1)
    decay, no_decay = _names(model, groups)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    projections = {n for n, p in model.named_parameters() if n.endswith("_proj.weight")}
    assert len(projections) == 3 * 7
    assert decay == projections | (set() if tied else {"lm_head.weight"})
    assert "model.layers.0.self_attn.q_proj.weight" in decay and "model.layers.2.mlp.down_proj.weight" in decay
    norms = {n for n in dict(model.named_parameters()) if "norm" in n}
    assert len(norms) == 2 * 3 + 1
    assert no_decay == norms | {"model.embed_tokens.weight"}      # the embedding (and a tied head) not decayed
    all_params = [p for g in groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == len(list(model.parameters()))


def test_param_groups_biases_layernorm_frozen_and_errors() -> None:
    model = nn.Sequential(nn.Embedding(9, 4), nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 9, bias=False))
    model[1].weight.requires_grad_(False)                          # frozen: left out
    decay, no_decay = _names(model, param_groups(model, 0.05))
    assert decay == {"3.weight"}
    assert no_decay == {"0.weight", "1.bias", "2.weight", "2.bias"}
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(model, -0.1)
    with pytest.raises(TypeError, match="model"):
        param_groups([model[1].bias], 0.1)
    with pytest.raises(ValueError, match="trainable"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), 0.1)


# --------------------------------------------------------------------------------------------- clipping
def _grads(seed: int, scale: float) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    a, b = _params(seed), _params(seed)
    g = torch.Generator().manual_seed(seed + 7)
    for i, (p, q) in enumerate(zip(a, b)):
        if i != 2:                                                 # one parameter has no gradient
            p.grad = torch.randn(p.shape, generator=g) * scale
            q.grad = p.grad.clone()
    return a, b


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("max_norm", [0.37, 1e3])                # clipping active / inactive
def test_clip_grad_norm_matches_torch(seed: int, max_norm: float) -> None:
    ours, ref = _grads(seed, 3.0)
    before = torch.cat([p.grad.flatten() for p in ours if p.grad is not None]).norm()
    n_ours = clip_grad_norm(ours, max_norm)
    n_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    close(n_ours, n_ref, atol=1e-6, quiet=True)
    close(n_ours, before, atol=1e-5, quiet=True)                  # the norm *before* clipping
    assert ours[2].grad is None
    for p, q in zip(ours, ref):
        if p.grad is not None:
            close(p.grad, q.grad, atol=1e-7, quiet=True)
    after = torch.cat([p.grad.flatten() for p in ours if p.grad is not None]).norm()
    close(after, min(max_norm, float(before)), atol=1e-5, quiet=True)


def test_clip_grad_norm_single_tensor_and_no_grads() -> None:
    w = nn.Parameter(torch.zeros(4))
    w.grad = torch.tensor([3.0, 0.0, 4.0, 0.0])
    assert float(clip_grad_norm(w, 1.0)) == 5.0
    close(w.grad, torch.tensor([0.6, 0.0, 0.8, 0.0]), atol=1e-6, quiet=True)
    assert float(clip_grad_norm([nn.Parameter(torch.zeros(2))], 1.0)) == 0.0


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_clip_grad_norm_refuses_nonfinite_and_bad_max_norm(bad: float) -> None:
    ours, _ = _grads(1, 1.0)
    ours[0].grad[0] = bad
    saved = [p.grad.clone() for p in ours if p.grad is not None]
    with pytest.raises(ValueError, match="inf/NaN"):
        clip_grad_norm(ours, 1.0)
    for s, p in zip(saved, [p for p in ours if p.grad is not None]):
        torch.testing.assert_close(p.grad, s, atol=0, rtol=0, equal_nan=True)   # untouched, not scaled by NaN
    assert not torch.isnan(ours[1].grad).any()
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(ours, 0.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(ours, -1.0)
