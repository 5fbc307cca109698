"""labkit.ffn against torch.nn.functional and HF LlamaMLP."""
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from labkit.blocks import FeedForward, GeGLU, SwiGLU, gelu, glu, llama_hidden_dim, silu, swish

X = torch.linspace(-6, 6, 2001)


def test_activations_match_torch():
    torch.testing.assert_close(gelu(X), F.gelu(X), atol=1e-6, rtol=0)
    torch.testing.assert_close(gelu(X, "tanh"), F.gelu(X, approximate="tanh"), atol=1e-6, rtol=0)
    torch.testing.assert_close(silu(X), F.silu(X), atol=1e-6, rtol=0)
    torch.testing.assert_close(swish(X, 1.0), F.silu(X), atol=1e-6, rtol=0)
    y = torch.randn(3, 10)
    torch.testing.assert_close(glu(y), F.glu(y), atol=1e-6, rtol=0)
    torch.testing.assert_close(glu(y.T, dim=0), F.glu(y.T, dim=0), atol=1e-6, rtol=0)


def test_activation_facts():
    gap = float((gelu(X) - gelu(X, "tanh")).abs().max())
    assert 1e-4 < gap < 1e-3  # tanh GELU is close but not equal to erf GELU
    assert float((swish(X, 50.0) - F.relu(X)).abs().max()) < 0.01  # beta -> inf tends to ReLU
    assert float((swish(X, 1.0) - F.relu(X)).abs().max()) > 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dim,hidden", [(16, 40), (24, 64), (14, 19)])
def test_swiglu_equals_llama_mlp(seed, dim, hidden):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=dim, intermediate_size=hidden, hidden_act="silu", num_attention_heads=1,
                      num_key_value_heads=1)
    ref = LlamaMLP(cfg)
    ours = SwiGLU(dim, hidden)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, dim)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)
    wrong = SwiGLU(dim, hidden)
    wrong.load_state_dict({"gate_proj.weight": ref.up_proj.weight, "up_proj.weight": ref.gate_proj.weight,
                           "down_proj.weight": ref.down_proj.weight})
    assert (wrong(x) - ref(x)).abs().max() > 1e-4  # gate and up are not interchangeable


def test_geglu_and_feedforward_by_hand():
    torch.manual_seed(0)
    x = torch.randn(4, 12)
    g = GeGLU(12, 20)
    expected = F.linear(F.gelu(F.linear(x, g.gate_proj.weight)) * F.linear(x, g.up_proj.weight), g.down_proj.weight)
    torch.testing.assert_close(g(x), expected, atol=1e-6, rtol=0)
    f = FeedForward(12)
    assert f.fc1.out_features == 48
    torch.testing.assert_close(f(x), f.fc2(F.gelu(f.fc1(x))), atol=1e-6, rtol=0)


def test_llama_hidden_dim_and_budget():
    assert llama_hidden_dim(4096) == 11008
    assert llama_hidden_dim(5120) == 13824  # LLaMA-13B
    assert llama_hidden_dim(8192, multiple_of=4096, ffn_dim_multiplier=1.3) == 28672  # LLaMA-2-70B
    assert llama_hidden_dim(4096, multiple_of=1) == 10922
    d = 48  # 8d/3 = 128 exactly: 3 matrices of d x 8d/3 have the budget of 2 of d x 4d
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(SwiGLU(d, 8 * d // 3)) == n(FeedForward(d, bias=False)) == 8 * d * d


def test_ffn_bad_inputs():
    with pytest.raises(ValueError, match="approximate"):
        gelu(X, "fast")
    with pytest.raises(ValueError, match="even"):
        glu(torch.randn(3, 5))
    with pytest.raises(ValueError, match="hidden_dim"):
        SwiGLU(8, 0)
    with pytest.raises(ValueError, match="multiple_of"):
        llama_hidden_dim(4096, multiple_of=0)
    with pytest.raises(ValueError, match="ffn_dim_multiplier"):
        llama_hidden_dim(4096, ffn_dim_multiplier=-1.0)
