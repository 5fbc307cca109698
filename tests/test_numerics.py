import math

import pytest
import torch
import torch.nn.functional as F

from labkit.core import numerics as N


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape,dim", [((7,), -1), ((3, 5), -1), ((4, 6, 9), 1), ((2, 3, 4), 0)])
def test_softmax_and_logsumexp_match_torch(seed, shape, dim):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 5
    torch.testing.assert_close(N.stable_softmax(x, dim), torch.softmax(x, dim), rtol=0, atol=1e-12)
    torch.testing.assert_close(N.logsumexp(x, dim), torch.logsumexp(x, dim), rtol=0, atol=1e-12)
    torch.testing.assert_close(N.log_softmax(x, dim), torch.log_softmax(x, dim), rtol=0, atol=1e-12)


def test_naive_softmax_overflows_and_stable_does_not():
    x = torch.tensor([1000.0, 1001.0, 1002.0])
    assert torch.isnan(N.naive_softmax(x)).all()
    assert [round(v, 4) for v in N.stable_softmax(x.double()).tolist()] == [0.09, 0.2447, 0.6652]


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_huge_logits_stay_finite(scale):
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]]) * scale
    for out in (N.stable_softmax(x), N.logsumexp(x), N.cross_entropy(x, torch.tensor([0, 2])),
                N.kl_divergence(x, x.flip(-1)), N.entropy(x)):
        assert torch.isfinite(out).all()
    torch.testing.assert_close(N.cross_entropy(x, torch.tensor([0, 2])), F.cross_entropy(x, torch.tensor([0, 2])))


def test_fully_masked_row_is_not_nan():
    x = torch.tensor([[-math.inf, -math.inf], [0.0, -math.inf]])
    assert N.logsumexp(x).tolist() == [-math.inf, 0.0]
    assert N.stable_softmax(x)[1].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.37])
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_torch(seed, smoothing):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 11, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, 11, (6,), generator=g)
    targets[[1, 4]] = -100
    ours = N.cross_entropy(logits, targets, label_smoothing=smoothing)
    ref = F.cross_entropy(logits, targets, label_smoothing=smoothing)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_cross_entropy_layouts():
    g = torch.Generator().manual_seed(3)
    lm = torch.randn(2, 5, 13, generator=g)  # (B, T, V)
    y = torch.randint(0, 13, (2, 5), generator=g)
    ref = F.cross_entropy(lm.reshape(-1, 13), y.reshape(-1))
    torch.testing.assert_close(N.cross_entropy(lm, y), ref)
    nchw = lm.permute(0, 2, 1)  # (N, C, d1) as PyTorch
    torch.testing.assert_close(N.cross_entropy(nchw, y), F.cross_entropy(nchw, y))
    torch.testing.assert_close(N.cross_entropy(nchw, y, ignore_index=3), F.cross_entropy(nchw, y, ignore_index=3))


def test_cross_entropy_bad_input():
    with pytest.raises(ValueError, match="ignore_index"):
        N.cross_entropy(torch.randn(3, 4), torch.full((3,), -100))
    with pytest.raises(ValueError, match="shape mismatch"):
        N.cross_entropy(torch.randn(3, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        N.cross_entropy(torch.randn(3, 4), torch.zeros(3))
    with pytest.raises(TypeError, match=r"`targets` must be a torch.Tensor.*got list.*torch.tensor"):
        N.cross_entropy(torch.randn(3, 4), [0, 1, 2])
    with pytest.raises(ValueError, match="label_smoothing"):
        N.cross_entropy(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        N.cross_entropy(torch.randn(3, 4), torch.tensor([0, 4, 1]))
    with pytest.raises(TypeError, match="floating-point"):
        N.stable_softmax(torch.arange(3))


def test_kl_matches_torch_and_identities():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(4, 9, generator=g, dtype=torch.float64), torch.randn(4, 9, generator=g, dtype=torch.float64)
    ref = F.kl_div(torch.log_softmax(q, -1), torch.log_softmax(p, -1), reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(N.kl_divergence(p, q), ref, rtol=0, atol=1e-12)
    assert torch.all(N.kl_divergence(p, q) >= 0)
    assert torch.allclose(N.kl_divergence(p, p), torch.zeros(4, dtype=torch.float64), atol=1e-15)
    assert not torch.allclose(N.kl_divergence(p, q), N.kl_divergence(q, p))  # asymmetric
    # soft-target cross-entropy H(P, Q) = H(P) + KL(P‖Q)
    ce = -(torch.softmax(p, -1) * torch.log_softmax(q, -1)).sum(-1)
    torch.testing.assert_close(ce, N.entropy(p) + N.kl_divergence(p, q), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        N.kl_divergence(p, q[:, :3])
    # integer logits (e.g. token ids passed by mistake) are rejected, for either argument
    with pytest.raises(TypeError, match=r"`p_logits` must be a floating-point tensor.*\.float\(\)"):
        N.kl_divergence(torch.arange(9).expand(4, 9), q)
    with pytest.raises(TypeError, match=r"`q_logits` must be a floating-point tensor.*\.float\(\)"):
        N.kl_divergence(p, torch.arange(9).expand(4, 9))


def test_ce_gradient_is_softmax_minus_onehot():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 6, 2])
    N.cross_entropy(z, y).backward()
    expected = (torch.softmax(z.detach(), -1) - F.one_hot(y, 7)) / 3
    torch.testing.assert_close(z.grad, expected, rtol=0, atol=1e-12)


def test_softmax_over_an_empty_dim_is_an_error():
    """An empty slice has no maximum: torch's amax raised an IndexError from deep inside; now a ValueError."""
    for fn in (N.stable_softmax, N.logsumexp, N.log_softmax):
        with pytest.raises(ValueError, match="size 0 along dim -1"):
            fn(torch.zeros(3, 0))
        with pytest.raises(ValueError, match=r"`dim` \(2\) is out of range"):
            fn(torch.zeros(3, 4), dim=2)
    assert N.stable_softmax(torch.zeros(0, 4)).shape == (0, 4)          # no rows is fine: nothing to do
    torch.testing.assert_close(N.stable_softmax(torch.tensor(3.0)), torch.softmax(torch.tensor(3.0), -1))
