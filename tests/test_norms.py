"""labkit.norms against torch.nn and HF Llama, plus the properties chapter 05 teaches."""
import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from labkit.blocks import DeepNormResidual, LayerNorm, RMSNorm, deepnorm_constants, deepnorm_init_


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 33), (1, 1)])
def test_layernorm_matches_torch(seed, shape):
    torch.manual_seed(seed)
    dim = shape[-1]
    ours, ref = LayerNorm(dim), torch.nn.LayerNorm(dim)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    x = 3 * torch.randn(*shape) + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_layernorm_uses_biased_variance():
    x = torch.randn(4, 6)
    unbiased = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=True, keepdim=True) + 1e-5)
    assert (LayerNorm(6)(x) - unbiased).abs().max() > 1e-2
    y = LayerNorm(6)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rmsnorm_matches_torch_and_hf(seed, dtype):
    torch.manual_seed(seed)
    dim = 37
    ours, hf = RMSNorm(dim), LlamaRMSNorm(dim)
    with torch.no_grad():
        ours.weight.normal_()
    hf.load_state_dict(ours.state_dict())
    x = (torch.randn(2, 5, dim) * 4).to(dtype)
    torch.testing.assert_close(ours(x), hf(x), atol=0, rtol=0)  # same numerics, bit for bit
    if dtype == torch.float32:
        ref = torch.nn.RMSNorm(dim, eps=1e-6)
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_rmsnorm_properties():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    n = RMSNorm(16)
    torch.testing.assert_close(n(7.5 * x), n(x), atol=1e-5, rtol=0)  # scale invariant
    assert (n(x + 3) - n(x)).abs().max() > 1e-2  # but not shift invariant (LayerNorm is)
    torch.testing.assert_close(LayerNorm(16)(x + 3), LayerNorm(16)(x), atol=1e-5, rtol=0)
    xc = x - x.mean(-1, keepdim=True)  # zero mean: RMSNorm == LayerNorm
    torch.testing.assert_close(RMSNorm(16, eps=1e-5)(xc), LayerNorm(16)(xc), atol=1e-5, rtol=0)
    torch.testing.assert_close(n(x).pow(2).mean(-1), torch.ones(8), atol=1e-4, rtol=0)


def test_deepnorm_constants():
    c = deepnorm_constants(0, 28)
    assert c["encoder"] is None
    alpha, beta = c["decoder"]
    assert round(alpha, 4) == 2.7356 and abs(beta - 224 ** -0.25) < 1e-12 and alpha > 1 > beta
    a, b = deepnorm_constants(12, 0)["encoder"]
    assert abs(a - 24 ** 0.25) < 1e-12 and abs(b - 96 ** -0.25) < 1e-12
    ed = deepnorm_constants(6, 6)
    assert abs(ed["encoder"][0] - 0.81 * (6**4 * 6) ** (1 / 16)) < 1e-12
    assert abs(ed["encoder"][1] - 0.87 * (6**4 * 6) ** (-1 / 16)) < 1e-12
    assert abs(ed["decoder"][0] - 18 ** 0.25) < 1e-12 and abs(ed["decoder"][1] - 72 ** -0.25) < 1e-12


def test_deepnorm_residual_and_init():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16, bias=False)
    block = DeepNormResidual(16, lin, alpha=2.0)
    x = torch.randn(3, 16)
    torch.testing.assert_close(block(x), torch.nn.functional.layer_norm(2 * x + lin(x), (16,)), atol=1e-5, rtol=0)
    w = torch.empty(512, 512)
    deepnorm_init_(w, 0.25)
    expected_std = 0.25 * (2 / (512 + 512)) ** 0.5
    assert abs(float(w.std()) / expected_std - 1) < 0.02


def test_norm_bad_inputs():
    with pytest.raises(ValueError, match="dim"):
        RMSNorm(0)
    with pytest.raises(ValueError, match="eps"):
        LayerNorm(4, eps=0.0)
    with pytest.raises(ValueError, match="last dim"):
        RMSNorm(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="n_decoder_layers"):
        deepnorm_constants(0, -1)
    with pytest.raises(ValueError, match="both 0"):
        deepnorm_constants(0, 0)
    with pytest.raises(ValueError, match="alpha"):
        DeepNormResidual(4, torch.nn.Identity(), alpha=0.0)
    with pytest.raises(ValueError, match="beta"):
        deepnorm_init_(torch.empty(2, 2), 0.0)
