"""labkit.train: batches, LR schedule, evaluation by hand, deterministic training that learns."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.core.check import close
from labkit.model import Llama, LlamaConfig
from labkit.tokenizer import BPETokenizer
from labkit.train import corpus_tokens, evaluate, get_batch, lr_at, param_groups, train_lm, train_step, unigram_loss


def _tiny(seed: int = 0, vocab: int = 17) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, n_kv_heads=2))


def _pattern_tokens(n: int = 3001, vocab: int = 17) -> torch.Tensor:
    """A learnable stream: a fixed random permutation cycle (each token determines the next)."""
    perm = torch.randperm(vocab, generator=torch.Generator().manual_seed(7))
    out = [0]
    for _ in range(n - 1):
        out.append(int(perm[out[-1]]))
    return torch.tensor(out)


# ------------------------------------------------------------------------------------------- schedule
def test_lr_schedule_shape() -> None:
    lrs = [lr_at(s, 1e-3, 10, 100, 1e-4) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)       # linear warmup to the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))                 # cosine decays monotonically
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * 9e-4)                           # halfway: mean of max and min
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)
    assert lr_at(0, 1.0, 0, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup"):
        lr_at(0, 1e-3, 20, 10)
    with pytest.raises(ValueError, match="min_lr"):
        lr_at(0, 1e-3, 1, 10, min_lr=1e-2)


# -------------------------------------------------------------------------------------------- batches
def test_get_batch_targets_are_shifted_inputs() -> None:
    tokens = torch.arange(1000)
    x, y = get_batch(tokens, 5, 33, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 33)
    assert torch.equal(y, x + 1)                                   # arange: target = next token
    assert int(x.min()) >= 0 and int(y.max()) <= 999
    x2, _ = get_batch(tokens, 5, 33, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(10), 2, 10)
    with pytest.raises(ValueError, match="batch_size"):
        get_batch(tokens, 0, 8)
    with pytest.raises(TypeError, match="1-D LongTensor"):
        get_batch(tokens.float(), 2, 8)


# ----------------------------------------------------------------------------------------- evaluation
def test_evaluate_equals_loss_by_hand() -> None:
    model = _tiny(1).eval()
    tokens = torch.randint(0, 17, (250,), generator=torch.Generator().manual_seed(1))
    block = 23                                                     # 249 // 23 = 10 windows, tail dropped
    losses = []
    with torch.no_grad():
        for i in range(10):
            w = tokens[i * block:i * block + block + 1]
            losses.append(F.cross_entropy(model(w[None, :-1])[0], w[1:], reduction="none"))
    by_hand = torch.cat(losses).mean()
    close(evaluate(model, tokens, block, batch_size=3), float(by_hand), atol=1e-5, quiet=True)
    first6 = torch.cat(losses[:6]).mean()
    close(evaluate(model, tokens, block, batch_size=3, max_batches=2), float(first6), atol=1e-5, quiet=True)
    model.train()
    evaluate(model, tokens, block, batch_size=4)
    assert model.training                                          # mode restored


def test_unigram_loss_by_hand() -> None:
    train = torch.tensor([0, 0, 1, 2])
    val = torch.tensor([0, 2])
    p = torch.tensor([3.0, 2.0, 2.0, 1.0]) / 8                     # add-one counts over a vocab of 4
    close(unigram_loss(train, val, 4), float(-(p[0].log() + p[2].log()) / 2), atol=1e-9, quiet=True)


# ------------------------------------------------------------------------------------------- training
def test_train_lm_learns_and_is_deterministic() -> None:
    tokens = _pattern_tokens()
    train, val = tokens[:2500], tokens[2500:]
    kw = dict(steps=40, batch_size=8, block_size=16, lr=1e-2, warmup=5, weight_decay=0.1, grad_clip=1.0,
              eval_every=20, seed=3, progress=False)
    m1 = _tiny(0)
    before = evaluate(m1, val, 16, 8)
    h1 = train_lm(m1, train, val, **kw)
    assert before > math.log(17) - 0.5                            # untrained ≈ uniform
    assert h1["val_loss"][-1] < 0.5 < before                       # the cycle is learned
    assert h1["val_step"] == [19, 39] and len(h1["train_loss"]) == 40 and not m1.training
    m2 = _tiny(0)
    h2 = train_lm(m2, train, val, **kw)
    assert h1 == h2                                                # bit-for-bit the same run
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    h3 = train_lm(_tiny(0), train, val, **dict(kw, seed=4))
    assert h3["train_loss"] != h1["train_loss"]                    # the seed matters (different batches)


def test_train_lm_equals_a_loop_with_torch_parts() -> None:
    """train_lm == the same loop built from torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ (bit for bit on
    CPU): the labkit optimizer, clipping, schedule and parameter groups are wired as documented."""
    tokens = _pattern_tokens()
    train, val = tokens[:2500], tokens[2500:]
    kw = dict(steps=15, batch_size=5, block_size=11, lr=2e-2, warmup=4, min_lr=1e-3, weight_decay=0.3,
              grad_clip=0.25, eval_every=100, seed=5, progress=False)
    ours = _tiny(2)
    hist = train_lm(ours, train, val, **kw)
    ref = _tiny(2)
    opt = torch.optim.AdamW(param_groups(ref, 0.3), lr=2e-2, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(5)
    losses = []
    for step in range(15):
        x, y = get_batch(train, 5, 11, gen)
        loss = F.cross_entropy(ref(x).reshape(-1, 17), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.25)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, 2e-2, 4, 15, 1e-3)
        opt.step()
        losses.append(loss.item())
    close(hist["train_loss"], losses, atol=1e-6, quiet=True)
    for a, b in zip(ours.parameters(), ref.parameters()):
        close(a, b, atol=1e-6, quiet=True)
    assert hist["lr"] == [lr_at(s, 2e-2, 4, 15, 1e-3) for s in range(15)]


def test_train_step_returns_the_loss_before_the_step() -> None:
    model = _tiny(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = get_batch(_pattern_tokens(200), 4, 9, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = F.cross_entropy(model(x).reshape(-1, 17), y.reshape(-1)).item()
    assert train_step(model, opt, x, y, lr=0.5, grad_clip=None) == before
    assert opt.param_groups[0]["lr"] == 0.5
    with torch.no_grad():
        assert F.cross_entropy(model(x).reshape(-1, 17), y.reshape(-1)).item() < before


def test_train_lm_bad_input() -> None:
    tokens = _pattern_tokens(200)
    with pytest.raises(ValueError, match="steps"):
        train_lm(_tiny(), tokens, tokens, steps=0, batch_size=2, block_size=8, lr=1e-3, warmup=0)
    with pytest.raises(ValueError, match="val_tokens"):
        train_lm(_tiny(), tokens, tokens[:5], steps=1, batch_size=2, block_size=8, lr=1e-3, warmup=0)
    with pytest.raises(ValueError, match="lr"):
        train_lm(_tiny(), tokens, tokens, steps=1, batch_size=2, block_size=8, lr=0.0, warmup=0)


# --------------------------------------------------------------------------------------------- corpus
def test_corpus_tokens_round_trip_and_cache() -> None:
    from labkit.datasets import load_shakespeare

    tok = BPETokenizer()                                           # bytes only: fast to encode
    val = corpus_tokens(tok, "val")
    assert val.dtype == torch.long and val.dim() == 1
    assert tok.decode(val[:500].tolist()) == load_shakespeare("val").encode()[:500].decode("utf-8", "replace")
    assert corpus_tokens(tok, "val") is val                        # cached
    with pytest.raises(ValueError, match="split"):
        corpus_tokens(tok, "test")
