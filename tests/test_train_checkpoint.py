"""labkit.train.checkpoint: a resumed run is bit for bit the uninterrupted one; the files are safetensors + JSON;
bad or missing files give clear errors. Also train_lm's periodic checkpoints and resume after a crash."""
from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import labkit.train.loop as loop_module
from labkit.model import Llama, LlamaConfig, save_checkpoint
from labkit.train import (AdamW, get_batch, load_training_state, lr_at, param_groups, save_training_state,
                          train_lm, train_step)
from labkit.train.checkpoint import TENSORS_FILE

VOCAB = 23


class NoisyLM(nn.Module):
    """A tiny LLaMA with dropout on its logits: the run uses the global torch RNG, so resuming must restore it."""

    def __init__(self, seed: int, tie: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lm = Llama(LlamaConfig(vocab_size=VOCAB, dim=24, n_layers=2, n_heads=6, n_kv_heads=2, hidden_dim=40,
                                    tie_embeddings=tie))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.lm(x), p=0.2, training=self.training)


def _tokens(n: int = 997) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(11))


def _fresh(seed: int, tie: bool = True) -> tuple[nn.Module, AdamW, torch.Generator]:
    model = NoisyLM(seed, tie)
    opt = AdamW(param_groups(model, 0.1), lr=3e-3, betas=(0.9, 0.95))
    return model, opt, torch.Generator().manual_seed(seed + 1)


def _steps(model, opt, gen, tokens, start: int, stop: int, total: int = 12) -> list[float]:
    """Steps start..stop-1 of a 12-step run; Python's `random` jitters the lr, so it must be restored too."""
    losses = []
    for step in range(start, stop):
        x, y = get_batch(tokens, 3, 13, gen)
        lr = lr_at(step, 3e-3, 3, total, 3e-4) * (1 + 0.1 * random.random())
        losses.append(train_step(model, opt, x, y, lr=lr, grad_clip=0.5))
    return losses


@pytest.mark.parametrize("seed, tie", [(0, True), (1, False)])
def test_resumed_run_is_bitwise_identical(tmp_path, seed: int, tie: bool) -> None:
    tokens = _tokens()
    random.seed(seed)
    a, opt_a, gen_a = _fresh(seed, tie)
    straight = _steps(a, opt_a, gen_a, tokens, 0, 12)

    random.seed(seed)
    b, opt_b, gen_b = _fresh(seed, tie)
    first = _steps(b, opt_b, gen_b, tokens, 0, 5)
    save_training_state(tmp_path / "ck", b, opt_b, 5, gen_b, extra={"losses": first})
    _steps(b, opt_b, gen_b, tokens, 5, 7)                          # the interrupted process goes on a bit, then dies
    random.seed(999)
    torch.manual_seed(999)
    c, opt_c, gen_c = _fresh(seed + 50, tie)                       # another init: everything must come from the file
    step, extra = load_training_state(tmp_path / "ck", c, opt_c, gen_c)
    assert step == 5 and extra == {"losses": first}
    resumed = extra["losses"] + _steps(c, opt_c, gen_c, tokens, step, 12)
    assert resumed == straight                                     # the loss history, bit for bit
    for p, q in zip(a.parameters(), c.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(a.parameters(), c.parameters()):
        assert opt_a.state[p]["step"] == opt_c.state[q]["step"]
        assert torch.equal(opt_a.state[p]["exp_avg_sq"], opt_c.state[q]["exp_avg_sq"])


def test_resume_without_the_rng_state_differs(tmp_path) -> None:
    """The test above can fail: restoring weights + optimizer but not the RNGs gives another run."""
    tokens = _tokens()
    random.seed(0)
    a, opt_a, gen_a = _fresh(0)
    straight = _steps(a, opt_a, gen_a, tokens, 0, 12)
    random.seed(0)
    b, opt_b, gen_b = _fresh(0)
    first = _steps(b, opt_b, gen_b, tokens, 0, 5)
    save_training_state(tmp_path, b, opt_b, 5, gen_b)
    c, opt_c, gen_c = _fresh(0)
    load_training_state(tmp_path, c, opt_c, gen_c)
    torch.manual_seed(1)                                           # the dropout masks are no longer the same
    assert first + _steps(c, opt_c, gen_c, tokens, 5, 12) != straight


def test_files_are_safetensors_and_json(tmp_path) -> None:
    model, opt, gen = _fresh(0)
    _steps(model, opt, gen, _tokens(), 0, 2)
    save_training_state(tmp_path, model, opt, 2, gen, extra={"lr": 3e-3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_state.json", TENSORS_FILE]
    meta = json.loads((tmp_path / "training_state.json").read_text())
    tensors = load_file(str(tmp_path / TENSORS_FILE))
    assert meta["step"] == 2 and meta["extra"] == {"lr": 3e-3} and meta["optimizer"]["class"] == "AdamW"
    assert meta["aliases"] == {"lm.lm_head.weight": "lm.model.embed_tokens.weight"}   # tied: stored once
    assert "model.lm.lm_head.weight" not in tensors
    assert tensors["rng.torch_cpu"].dtype == tensors["rng.batch_generator"].dtype == torch.uint8
    n = len(list(model.parameters()))
    assert {k for k in tensors if k.startswith("optim.")} == {f"optim.{i}.{k}" for i in range(n)
                                                             for k in ("exp_avg", "exp_avg_sq")}
    assert meta["optimizer"]["state"]["0"] == {"step": 2}        # scalar state in JSON
    assert [g["weight_decay"] for g in meta["optimizer"]["param_groups"]] == [0.1, 0.0]


def test_torch_adamw_checkpoints_too(tmp_path) -> None:
    """Any torch optimizer: torch.optim.AdamW keeps its step as a tensor, which goes to safetensors."""
    tokens = _tokens()
    runs = []
    for resume in (False, True):
        model = NoisyLM(0)
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3)
        gen = torch.Generator().manual_seed(1)
        random.seed(0)
        losses = _steps(model, opt, gen, tokens, 0, 4)
        if resume:
            save_training_state(tmp_path, model, opt, 4, gen)
            model = NoisyLM(3)
            opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3)
            load_training_state(tmp_path, model, opt, gen)
        runs.append((losses + _steps(model, opt, gen, tokens, 4, 8), list(model.parameters())))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1], runs[1][1]))


def test_bad_and_missing_files(tmp_path) -> None:
    model, opt, gen = _fresh(0)
    _steps(model, opt, gen, _tokens(), 0, 1)
    with pytest.raises(FileNotFoundError, match="training_state.json"):
        load_training_state(tmp_path / "nothing", model, opt, gen)
    save_training_state(tmp_path / "a", model, opt, 1, gen)
    save_training_state(tmp_path / "b", model, opt, 1, gen, extra={"other": 1})
    (tmp_path / "b" / TENSORS_FILE).write_bytes((tmp_path / "a" / TENSORS_FILE).read_bytes() + b" ")
    with pytest.raises(ValueError, match="sha256"):
        load_training_state(tmp_path / "b", model, opt, gen)
    (tmp_path / "a" / "training_state.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_training_state(tmp_path / "a", model, opt, gen)
    save_checkpoint(Llama(LlamaConfig(vocab_size=VOCAB, dim=24, n_layers=1, n_heads=6)), None, tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        load_training_state(tmp_path / "m", model, opt, gen)
    (tmp_path / "m" / "training_state.json").write_text('{"format": "labkit-llama"}')
    (tmp_path / "m" / TENSORS_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match="format"):
        load_training_state(tmp_path / "m", model, opt, gen)


def test_state_that_does_not_fit(tmp_path) -> None:
    model, opt, gen = _fresh(0)
    _steps(model, opt, gen, _tokens(), 0, 1)
    save_training_state(tmp_path, model, opt, 1, gen)
    for cfg, match in [(dict(n_layers=3), "missing"), (dict(vocab_size=VOCAB + 1), "shape")]:
        other = nn.Module()
        other.lm = Llama(LlamaConfig(**{**dict(vocab_size=VOCAB, dim=24, n_layers=2, n_heads=6, n_kv_heads=2,
                                               hidden_dim=40), **cfg}))
        with pytest.raises(ValueError, match=match):
            load_training_state(tmp_path, other, AdamW(param_groups(other, 0.1)), gen)
    fresh, _, _ = _fresh(1)
    with pytest.raises(ValueError, match="parameter groups"):
        load_training_state(tmp_path, fresh, AdamW(fresh.parameters()), gen)
    with pytest.raises(ValueError, match="optimizer is AdamW"):
        load_training_state(tmp_path, fresh, torch.optim.SGD(param_groups(fresh, 0.1), lr=0.1), gen)
    before = [p.clone() for p in fresh.parameters()]
    with pytest.raises(ValueError, match="generator"):
        load_training_state(tmp_path, fresh, AdamW(param_groups(fresh, 0.1)), None)
    assert all(torch.equal(p, q) for p, q in zip(before, fresh.parameters()))   # nothing changed on error
    with pytest.raises(ValueError, match="step"):
        save_training_state(tmp_path, model, opt, -1, gen)
    with pytest.raises(TypeError, match="extra"):
        save_training_state(tmp_path, model, opt, 1, gen, extra={"model": model})
    with pytest.raises(TypeError, match="optimizer"):
        save_training_state(tmp_path, model, None, 1, gen)


# ------------------------------------------------------------------------------------- train_lm + resume
def _pattern(n: int = 1500) -> torch.Tensor:
    perm = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(7))
    out = [0]
    for _ in range(n - 1):
        out.append(int(perm[out[-1]]))
    return torch.tensor(out)


KW = dict(steps=12, batch_size=4, block_size=16, lr=1e-2, warmup=3, weight_decay=0.1, grad_clip=1.0,
          eval_every=4, seed=3, progress=False)


def _llama(seed: int) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, n_kv_heads=2))


def test_train_lm_resumes_after_a_crash(tmp_path, monkeypatch) -> None:
    tokens = _pattern()
    train, val = tokens[:1200], tokens[1200:]
    straight_model = _llama(0)
    straight = train_lm(straight_model, train, val, **KW)

    calls = {"n": 0}
    real_get_batch = loop_module.get_batch

    def dies_at_step_8(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("the machine was preempted")
        return real_get_batch(*args, **kwargs)

    monkeypatch.setattr(loop_module, "get_batch", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train_lm(_llama(0), train, val, **KW, checkpoint_path=tmp_path, checkpoint_every=5)
    monkeypatch.setattr(loop_module, "get_batch", real_get_batch)
    assert json.loads((tmp_path / "training_state.json").read_text())["step"] == 5
    resumed_model = _llama(42)                                     # a new process: other init, other RNG
    resumed = train_lm(resumed_model, train, val, **KW, checkpoint_path=tmp_path, checkpoint_every=5, resume=True)
    assert resumed == straight
    assert all(torch.equal(p, q) for p, q in zip(straight_model.parameters(), resumed_model.parameters()))
    assert json.loads((tmp_path / "training_state.json").read_text())["step"] == 12   # saved at the end too


def test_train_lm_checkpoint_arguments(tmp_path) -> None:
    tokens = _pattern(400)
    with pytest.raises(ValueError, match="checkpoint_path"):
        train_lm(_llama(0), tokens, tokens, **dict(KW, steps=2, warmup=1), resume=True)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_lm(_llama(0), tokens, tokens, **dict(KW, steps=2, warmup=1), checkpoint_path=tmp_path, checkpoint_every=0)
    with pytest.raises(FileNotFoundError, match="training_state"):
        train_lm(_llama(0), tokens, tokens, **dict(KW, steps=2, warmup=1), checkpoint_path=tmp_path, resume=True)
    train_lm(_llama(0), tokens, tokens, **dict(KW, steps=2, warmup=1), checkpoint_path=tmp_path)
    untouched = _llama(5)
    before = [p.clone() for p in untouched.parameters()]
    with pytest.raises(ValueError, match="lr: now 0.02, saved 0.01"):
        train_lm(untouched, tokens, tokens, **dict(KW, steps=2, warmup=1, lr=2e-2), checkpoint_path=tmp_path,
                 resume=True)
    assert all(torch.equal(p, q) for p, q in zip(before, untouched.parameters()))   # checked before loading
    model = _llama(0)
    save_training_state(tmp_path / "by_hand", model, AdamW(param_groups(model, 0.1)), 0, torch.Generator())
    with pytest.raises(ValueError, match="train_lm did not write"):
        train_lm(model, tokens, tokens, **dict(KW, steps=2, warmup=1), checkpoint_path=tmp_path / "by_hand",
                 resume=True)
