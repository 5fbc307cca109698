"""labkit.peft: adapters, BitFit, prompt tuning, prefix tuning / P-tuning v2 (chapter 14).

References: ``peft.PromptTuningConfig`` / ``peft.PrefixTuningConfig`` on the same weights (via
``labkit.model.to_hf``), an explicitly pre-filled KV cache, hand-written block formulas, per-document runs.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from labkit.blocks import KVCache
from labkit.experiments import finetune as FT
from labkit.finetune import peft as P
from labkit.finetune import sft
from labkit.finetune.lora import count_trainable
from labkit.model import Llama, LlamaConfig, to_hf

CFG = dict(vocab_size=97, dim=48, n_layers=3, n_heads=4, n_kv_heads=2, hidden_dim=80)


def make(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(**CFG)).eval()


def ids(B: int = 2, T: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CFG["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def trainable_names(m: torch.nn.Module) -> set[str]:
    return {n for n, p in m.named_parameters() if p.requires_grad}


def peft_model(hf, config):
    import peft

    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5 (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return peft.get_peft_model(hf, config)


def packed_batch(seed: int = 0, lengths=(5, 3, 6, 2, 4, 7)):
    g = torch.Generator().manual_seed(seed)
    ex = [torch.randint(0, CFG["vocab_size"], (n,), generator=g).tolist() for n in lengths]
    pk = sft.pack(ex, 13, "greedy")
    return ex, pk, {k: getattr(pk, k) for k in ("input_ids", "labels", "position_ids", "doc_ids")}


# ------------------------------------------------------------------------------------------- adapters
def test_adapter_param_count_and_identity():
    a = P.BottleneckAdapter(64, 16)
    assert sum(p.numel() for p in a.parameters()) == 2 * 64 * 16 + 64 + 16 == 2128 == P.adapter_param_count(64, 16, 1, 1)
    h = torch.randn(3, 5, 64)
    assert torch.equal(a(h), h)
    with torch.no_grad():
        a.up.weight.normal_()
    assert not torch.allclose(a(h), h)  # once U is non-zero the adapter acts


@pytest.mark.parametrize("where", [("attn", "mlp"), ("mlp",), ("attn",)])
def test_add_adapters_identity_trainable_and_formula(where):
    m = make(1)
    x = ids(3, 9)
    ref = m(x)
    names = P.add_adapters(m, 5, where=where)
    assert torch.equal(m(x), ref)  # identity at init, bitwise
    assert len(names) == CFG["n_layers"] * len(where)
    assert trainable_names(m) == {f"{n}.{p}.{w}" for n in names for p in ("down", "up") for w in ("weight", "bias")}
    assert count_trainable(m)[0] == P.adapter_param_count(48, 5, 3, len(where))
    # perturb the adapters and check against the Houlsby block written by hand
    torch.manual_seed(3)
    with torch.no_grad():
        for n in names:
            m.get_submodule(n).up.weight.normal_(0, 0.5)
    layer = m.model.layers[0]
    h0 = m.model.embed_tokens(x)
    ad = lambda sub, h: sub.adapter(h) if hasattr(sub, "adapter") else h  # noqa: E731
    attn_out = layer.self_attn.__class__.forward(layer.self_attn, layer.input_layernorm(h0), is_causal=True)
    h1 = h0 + ad(layer.self_attn, attn_out)
    mlp_out = layer.mlp.__class__.forward(layer.mlp, layer.post_attention_layernorm(h1))
    manual = h1 + ad(layer.mlp, mlp_out)
    got = layer(h0, mask=None, positions=None, kv_cache=None)
    assert torch.allclose(got, manual, atol=1e-6)
    assert not torch.allclose(m(x), ref, atol=1e-3)


def test_adapters_train_only_adapters():
    m = make(2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    P.add_adapters(m, 4)
    ex, pk, _ = packed_batch()
    data = [{"input_ids": e, "labels": e} for e in ex]
    losses = sft.train_sft(m, data, steps=15, batch_size=2, max_len=13, lr=1e-2, progress=False)
    assert losses[-1] < losses[0]
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # base weights bitwise unchanged
    assert float(m.model.layers[0].mlp.adapter.up.weight.detach().abs().sum()) > 0  # the adapters moved


def test_adapter_bad_input():
    with pytest.raises(ValueError, match="bottleneck"):
        P.BottleneckAdapter(16, 0)
    with pytest.raises(ValueError, match="bottleneck"):
        P.add_adapters(make(), 0)
    with pytest.raises(ValueError, match="where"):
        P.add_adapters(make(), 4, where=("ffn",))
    with pytest.raises(ValueError, match="where"):
        P.add_adapters(make(), 4, where=())
    m = make()
    P.add_adapters(m, 4)
    with pytest.raises(ValueError, match="already has adapters"):
        P.add_adapters(m, 4)
    with pytest.raises(TypeError, match="Llama"):
        P.add_adapters(torch.nn.Linear(3, 3), 2)


# --------------------------------------------------------------------------------------------- BitFit
def test_bitfit_identity_counts_and_training():
    m = make(4)
    x = ids(2, 6)
    ref = m(x)
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    names = P.apply_bitfit(m)
    assert torch.equal(m(x), ref)
    d, f, h, kv, hd, L = 48, 80, 4, 2, 12, 3
    assert count_trainable(m)[0] == L * (h * hd + 2 * kv * hd + d + 2 * f + d) == 1056
    assert trainable_names(m) == set(names) and all(n.endswith(".bias") for n in names)
    ex, _, _ = packed_batch(1)
    sft.train_sft(m, [{"input_ids": e, "labels": e} for e in ex], steps=5, batch_size=2, max_len=13, lr=1e-2,
                  progress=False)
    sd = m.state_dict()
    assert all(torch.equal(weights[k], sd[k]) for k in weights)  # every pretrained weight untouched
    assert float(m.model.layers[1].self_attn.q_proj.bias.detach().abs().sum()) > 0  # the biases moved
    # a bias is y = xWᵀ + b, as torch's biased Linear
    lin = m.model.layers[0].mlp.up_proj
    z = torch.randn(4, 48)
    assert torch.allclose(lin(z), F.linear(z, lin.weight) + lin.bias)


def test_bitfit_norms_and_bad_input():
    m = make()
    names = P.apply_bitfit(m, norms=True)
    assert sum(n.endswith("norm.weight") for n in names) == 2 * 3 + 1
    with pytest.raises(ValueError, match="already have biases"):
        P.apply_bitfit(m)


# --------------------------------------------------------------------------------------- prompt tuning
@pytest.mark.parametrize("n_virtual, init", [(4, "vocab"), (5, "random")])
def test_prompt_tuning_equals_peft(n_virtual, init):
    import peft

    m = make(5)
    hf = to_hf(m).eval()
    pt = P.PromptTuning(m, n_virtual, init=init)
    assert trainable_names(pt) == {"prompt"} and count_trainable(pt)[0] == n_virtual * 48
    pm = peft_model(hf, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_virtual))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(pt.prompt)
    x = ids(3, 7)
    out = pm(input_ids=x).logits                                  # peft returns (B, P + T, V)
    ours = pt(x)
    assert ours.shape == (3, 7, 97)
    assert torch.allclose(pt(x, return_prompt=True), out, atol=1e-5)
    assert torch.allclose(ours, out[:, n_virtual:], atol=1e-5)
    # labels line up: our loss on the stripped logits == peft's loss (which pads labels with -100)
    labels = x.clone()
    labels[:, :3] = -100
    assert torch.allclose(sft.sft_loss(ours, labels), pm(input_ids=x, labels=labels).loss, atol=1e-5)


def test_prompt_tuning_cache_padding_and_packing():
    pt = P.PromptTuning(make(6), 3)
    x = ids(2, 8)
    full = pt(x)
    cache = pt.new_cache()
    first = pt(x[:, :5], cache)
    assert cache.length == 3 + 5  # the prompt sits in the cache
    nxt = pt(x[:, 5:], cache)
    assert torch.allclose(torch.cat([first, nxt], 1), full, atol=1e-5)
    # generation with a padding mask that does not count the prompt (ones are prepended for it)
    c2 = pt.new_cache()
    pt(x[:, :5], c2, attention_mask=torch.ones(2, 5, dtype=torch.long))
    step = pt(x[:, 5:6], c2, attention_mask=torch.ones(2, 6, dtype=torch.long))
    assert torch.allclose(step, full[:, 5:6], atol=1e-5)
    # right padding does not change real tokens' logits
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0
    assert torch.allclose(pt(x, attention_mask=mask)[1, :6], pt(x[1:, :6])[0], atol=1e-5)
    ex, pk, batch = packed_batch(2)
    logits = pt.packed_forward(batch)
    assert logits.shape == (*pk.input_ids.shape, 97)
    for r, b in enumerate(pk.bins):
        s = 0
        for i in b:
            n = len(ex[i])
            assert torch.allclose(logits[r, s:s + n], pt(torch.tensor([ex[i]]))[0], atol=1e-5)
            s += n


def test_prompt_tuning_grads_and_bad_input():
    m = make(7)
    pt = P.PromptTuning(m, 2)
    pt(ids()).sum().backward()
    assert pt.prompt.grad is not None and all(p.grad is None for p in m.parameters())
    with pytest.raises(ValueError, match="n_virtual_tokens"):
        P.PromptTuning(make(), 0)
    with pytest.raises(ValueError, match="init"):
        P.PromptTuning(make(), 2, init="text")
    with pytest.raises(ValueError, match="already wrapped"):
        P.PromptTuning(pt, 2)
    with pytest.raises(ValueError, match="already wrapped"):
        P.PrefixTuning(pt, 2)


# --------------------------------------------------------------------------------------- prefix tuning
def manual_prefilled_cache(model: Llama, kv: torch.Tensor, B: int):
    cache = model.new_cache()
    for layer in range(model.config.n_layers):
        c = KVCache()
        c.update(kv[layer, 0][None].repeat(B, 1, 1, 1), kv[layer, 1][None].repeat(B, 1, 1, 1))
        cache[layer] = c
    return cache


@pytest.mark.parametrize("n_prefix, T", [(3, 7), (5, 1), (1, 11)])
def test_prefix_shape_and_explicit_cache(n_prefix, T):
    m = make(8)
    pf = P.PrefixTuning(m, n_prefix)
    assert trainable_names(pf) == {"prefix"}
    assert count_trainable(pf)[0] == 3 * 2 * n_prefix * 2 * 12  # L·2·P·n_kv·hd
    x = ids(2, T)
    out = pf(x)
    assert out.shape == (2, T, 97)  # the sequence length is unchanged
    ref = m(x, manual_prefilled_cache(m, pf.prefix.detach(), 2))
    assert torch.allclose(out, ref, atol=1e-6)
    assert not torch.allclose(out, m(x), atol=1e-3)  # the prefix does act


@pytest.mark.parametrize("reparam", [False, True])
def test_prefix_equals_peft(reparam):
    import peft

    m = make(9)
    hf = to_hf(m).eval()
    pf = P.PrefixTuning(m, 3, reparam=reparam, hidden=20 if reparam else None, init="random", seed=2)
    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=reparam,
                                  encoder_hidden_size=20)
    pm = peft_model(hf, cfg)
    enc = pm.prompt_encoder["default"]
    with torch.no_grad():
        if reparam:
            enc.embedding.weight.copy_(pf.embedding)
            for i in (0, 2):
                enc.transform[i].weight.copy_(pf.mlp[i].weight)
                enc.transform[i].bias.copy_(pf.mlp[i].bias)
        else:  # peft's row p holds [layer][k, v][kv head][head_dim]
            enc.embedding.weight.copy_(pf.prefix.permute(3, 0, 1, 2, 4).reshape(3, -1))
    x = ids(2, 6)
    assert torch.allclose(pf(x), pm(input_ids=x).logits, atol=1e-5)
    # with padding (peft prepends ones to the attention mask for the prefix)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, 4:] = 0
    assert torch.allclose(pf(x, attention_mask=mask)[0, :4], pm(input_ids=x, attention_mask=mask).logits[0, :4],
                          atol=1e-5)
    n = count_trainable(pf)[0]
    e = 2 * 12
    assert n == (3 * e + e * 20 + 20 + 20 * 3 * 2 * e + 3 * 2 * e if reparam else 3 * 2 * 3 * e)


def test_prefix_generation_packing_and_grads():
    m = make(10)
    pf = P.PrefixTuning(m, 4, reparam=True)
    x = ids(2, 9)
    full = pf(x)
    cache = pf.new_cache()
    a = pf(x[:, :6], cache)
    b = pf(x[:, 6:], cache)
    assert cache.length == 4 + 9
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)
    ex, pk, batch = packed_batch(3)
    logits = pf.packed_forward(batch)
    for r, bn in enumerate(pk.bins):
        s = 0
        for i in bn:
            k = len(ex[i])
            assert torch.allclose(logits[r, s:s + k], pf(torch.tensor([ex[i]]))[0], atol=1e-5)
            s += k
    mask4 = sft.document_causal_mask(batch["doc_ids"])[:, None]      # (B, 1, T, T) works as (B, T, T)
    assert torch.allclose(pf(batch["input_ids"], attention_mask=mask4, position_ids=batch["position_ids"] + 4),
                          logits, atol=1e-6)
    sft.sft_loss(logits, batch["labels"]).backward()
    assert pf.embedding.grad is not None and pf.mlp[0].weight.grad is not None
    assert all(p.grad is None for p in m.parameters())


def test_zero_prefix_is_not_identity_it_rescales_attention():
    """With zero prefix keys/values the scores of the prefix are 0 and its values 0: the attention output
    is the base output times S / (S + P), S = Σ_j exp(s_j) over the real keys (no max subtraction here)."""
    m = make(11)
    attn = m.model.layers[0].self_attn
    x = torch.randn(1, 5, 48) * 0.1
    Pn, n_kv, hd = 3, 2, 12
    base = attn(x, is_causal=True)
    c = KVCache()
    c.update(torch.zeros(1, n_kv, Pn, hd), torch.zeros(1, n_kv, Pn, hd))
    with_prefix = attn(x, is_causal=True, kv_cache=c)
    assert not torch.allclose(with_prefix, base, atol=1e-4)
    # rebuild by hand: per head, output = base_head * S / (S + P)
    from labkit.blocks import apply_rope, repeat_kv

    B, T = 1, 5
    q = apply_rope(attn.q_proj(x).view(B, T, 4, hd).transpose(1, 2), torch.arange(Pn, Pn + T))
    k = apply_rope(attn.k_proj(x).view(B, T, n_kv, hd).transpose(1, 2), torch.arange(Pn, Pn + T))
    v = attn.v_proj(x).view(B, T, n_kv, hd).transpose(1, 2)
    k, v = repeat_kv(k, 2), repeat_kv(v, 2)
    s = (q @ k.transpose(-1, -2)) / hd ** 0.5
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    S = s.exp().sum(-1, keepdim=True)
    heads = (s.softmax(-1) @ v) * S / (S + Pn)
    manual = attn.o_proj(heads.transpose(1, 2).reshape(B, T, 48))
    assert torch.allclose(with_prefix, manual, atol=1e-6)


def test_prefix_bad_input():
    with pytest.raises(ValueError, match="n_prefix"):
        P.PrefixTuning(make(), 0)
    with pytest.raises(ValueError, match="init"):
        P.PrefixTuning(make(), 2, init="zeros")
    with pytest.raises(TypeError, match="reparam"):
        P.PrefixTuning(make(), 2, reparam="yes")
    with pytest.raises(ValueError, match="already wrapped"):
        P.PromptTuning(P.PrefixTuning(make(), 2), 2)
    with pytest.raises(ValueError, match="unknown method"):
        FT.prepare(make(), "ia3")


def test_prompt_methods_train_through_train_sft():
    for build in (lambda m: P.PromptTuning(m, 3), lambda m: P.p_tuning_v2(m, 3)):
        m = make(12)
        before = {k: v.clone() for k, v in m.state_dict().items()}
        w = build(m)
        ex, _, _ = packed_batch(4)
        losses = sft.train_sft(w, [{"input_ids": e, "labels": e} for e in ex], steps=12, batch_size=2, max_len=13,
                               lr=5e-2, forward=lambda mdl, b: mdl.packed_forward(b), progress=False)
        assert losses[-1] < losses[0]
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
        st = P.trainable_state_dict(w)
        fresh = build(make(12))
        P.load_trainable(fresh, st)
        x = ids()
        assert torch.allclose(fresh(x), w(x), atol=1e-6)


@pytest.mark.parametrize("seed", [13, 4])
def test_answer_metrics_is_token_weighted_answer_nll(seed):
    """``sft.answer_metrics`` (the test loss of chapters 12-14) == the answer tokens' NLL summed over unpacked
    examples / their count; a prompt method's loss goes through its own packed forward."""
    from labkit.datasets import task as task_data
    from labkit.model import load_pretrained

    tok = load_pretrained()[1]
    torch.manual_seed(seed)
    m = Llama(LlamaConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64)).eval()
    recs = task_data.load_task("test")[:9]
    total, hits, count = 0.0, 0, 0
    for r in recs:  # one example at a time, no packing
        e = sft.encode_example(r, tok)
        with torch.no_grad():
            logits = m(torch.tensor([e["input_ids"]]))
        lab = torch.tensor(e["labels"][1:])
        total += float(F.cross_entropy(logits[0, :-1], lab, ignore_index=-100, reduction="sum"))
        keep = lab != -100
        hits += int((logits[0, :-1][keep].argmax(-1) == lab[keep]).sum())
        count += int(keep.sum())
    got = sft.answer_metrics(m, tok, recs)
    assert abs(got["loss"] - total / count) < 1e-5
    assert abs(got["token_acc"] - hits / count) < 1e-9
    # a prompt method goes through its packed_forward (FT.prepare returns it): a different loss than the base's
    w, forward = FT.prepare(m, "prompt")
    assert isinstance(w, P.PromptTuning)
    assert abs(sft.answer_metrics(w, tok, recs, forward=forward)["loss"] - got["loss"]) > 1e-4
