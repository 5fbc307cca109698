"""labkit.memory: the accountant against the digests' checked numbers, saved-tensor measurement against
hand counts, checkpointing and accumulation against plain autograd, the loss scaler against torch.amp.GradScaler."""
import pytest
import torch
from torch import nn

from labkit import memory as M
from labkit.model import Llama, LlamaConfig

LLAMA7B = 6_738_415_616
LORA_QV_R8 = 4_194_304


# ------------------------------------------------------------------ accountant
def test_bytes_per_param():
    for recipe, per in {"fp32_adam": 16, "mixed_adam": 16, "mixed_adam_hf": 18, "fp32_inference": 4,
                        "fp16_inference": 2, "bf16_inference": 2, "int8_inference": 1, "int4_inference": 0.5}.items():
        assert M.training_bytes(1, recipe).total == per
    b = M.training_bytes(10, "mixed_adam")
    assert (b.weights, b.grads, b.optimizer, b.master) == (20, 20, 80, 40)


def test_reference_numbers():
    assert M.training_bytes(7e9, "mixed_adam").total / M.GB == pytest.approx(112)
    assert 7e9 * (2 + 2 + 8) / M.GB == pytest.approx(84)  # the notes' "12n": master weights forgotten
    assert M.training_bytes(175e9, "fp16_inference").total / M.GB == pytest.approx(350)
    assert M.training_bytes(175e9, "fp32_inference").total / M.GB == pytest.approx(700)
    assert M.training_bytes(175e9, "mixed_adam").total / 1e12 == pytest.approx(2.8)
    table = [M.training_bytes(7e9, f"{p}_inference").total / M.GB for p in ("fp32", "fp16", "int8", "int4")]
    assert table == pytest.approx([28, 14, 7, 3.5])
    # PPO: two trained 7B models in mixed precision + two frozen fp16 ones
    ppo = 2 * M.training_bytes(7e9, "mixed_adam").total + 2 * M.training_bytes(7e9, "fp16_inference").total
    assert ppo / M.GB == pytest.approx(252)
    assert M.training_bytes(6e9, "fp16_inference").total / M.GiB == pytest.approx(11.18, abs=0.01)


def test_finetune_table_7b():
    full = M.finetune_bytes(LLAMA7B, "full")
    lora = M.finetune_bytes(LLAMA7B, "lora", LORA_QV_R8)
    qlora = M.finetune_bytes(LLAMA7B, "qlora", LORA_QV_R8)
    assert full.total == 16 * LLAMA7B
    assert lora.total == 2 * LLAMA7B + 16 * LORA_QV_R8
    assert qlora.total == pytest.approx(4.126953125 / 8 * LLAMA7B + 16 * LORA_QV_R8)
    assert qlora.total < lora.total < full.total
    assert full.total / M.GB == pytest.approx(107.81, abs=0.01)
    assert lora.total / M.GB == pytest.approx(13.54, abs=0.01)
    assert qlora.total / M.GB == pytest.approx(3.54, abs=0.01)
    keep = 2 * 32000 * 4096
    q2 = M.finetune_bytes(LLAMA7B, "qlora", LORA_QV_R8, n_unquantized=keep)
    assert q2.total - qlora.total == pytest.approx(keep * (2 - 4.126953125 / 8))


def test_activation_formulas():
    assert M.notes_activation_bytes(4096, 11008, 2048, 32) == 989_855_744
    per_layer = M.korthikanti_activation_bytes(2048, 1, 4096, 32, 1)
    assert per_layer == 2048 * 4096 * (34 + 80) and per_layer / M.GB == pytest.approx(0.956, abs=1e-3)


def test_accountant_bad_input():
    with pytest.raises(ValueError, match="unknown recipe"):
        M.training_bytes(1e9, "fp8_adam")
    with pytest.raises(ValueError, match="n_params"):
        M.training_bytes(-1, "mixed_adam")
    with pytest.raises(ValueError, match="unknown method"):
        M.finetune_bytes(1e9, "prefix")
    with pytest.raises(ValueError, match="n_trainable"):
        M.finetune_bytes(1e9, "lora")


# ------------------------------------------------------------------ measured activations
def test_saved_tensor_log_hand_count():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    for B in (1, 3, 7):
        x = torch.randn(B, 10)
        with M.SavedTensorLog(exclude=mlp.parameters()) as log:
            mlp(x).sum()
        # addmm saves its input x (B, 10); relu saves its output (B, 20), which the 2nd addmm saves again
        # (same storage: counted once); the weights are excluded
        assert log.total_bytes == 4 * (B * 10 + B * 20)
        assert log.n_tensors == 2
        assert M.saved_activation_bytes(mlp, x, exclude=mlp.parameters()) == 4 * B * 30
    with M.SavedTensorLog() as log:  # without the exclusion the 2nd weight counts too; the 1st is not
        mlp(torch.randn(2, 10))     # saved at all, since x needs no gradient
    assert log.total_bytes == 4 * (2 * 30 + 100)
    with torch.no_grad(), M.SavedTensorLog() as log:
        mlp(torch.randn(2, 10))
    assert log.total_bytes == 0


def _tiny_llama(seed=0, dim=96):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=128, dim=dim, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=160))


def _attn(T):
    return lambda r: r.shape[-2:] == (T, T) and (len(r.shape) >= 3 or r.dtype == torch.bool)


def test_activation_memory_linear_in_batch_quadratic_attention():
    m = _tiny_llama()
    by_b = []
    for B in (1, 2, 3, 5):
        with M.SavedTensorLog(exclude=m.parameters()) as log:
            m(torch.randint(0, 128, (B, 40))).sum()
        by_b.append(log.total_bytes)
    slope = by_b[1] - by_b[0]
    assert [b - by_b[0] for b in by_b] == [0, slope, 2 * slope, 4 * slope]  # exactly affine in B
    Ts, att = [16, 32, 48, 112], []  # avoid T == head_dim (24) or dim (96): same-shape tensors
    for T in Ts:
        with M.SavedTensorLog(exclude=m.parameters()) as log:
            m(torch.randint(0, 128, (2, T))).sum()
        att.append(log.bytes_where(_attn(T)))
    p, _ = M.fit_power_law(Ts, att)
    assert p == pytest.approx(2.0, abs=0.02)
    assert M.fit_power_law([1, 2, 4], [3, 12, 48]) == pytest.approx((2.0, 3.0))


def test_checkpointing_same_grads_fewer_bytes_twice_the_forwards():
    ids = torch.randint(0, 128, (2, 33), generator=torch.Generator().manual_seed(1))
    ref, ck = _tiny_llama(), _tiny_llama()
    calls = {"n": 0}
    for layer in ck.model.layers:
        layer.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    assert M.checkpoint_blocks(ck.model.layers) == 2
    assert M.checkpoint_blocks(ck.model.layers) == 0  # idempotent
    with M.SavedTensorLog(exclude=ref.parameters()) as log_ref:
        loss_ref = nn.functional.cross_entropy(ref(ids).flatten(0, 1), ids.flatten())
    with M.SavedTensorLog(exclude=ck.parameters()) as log_ck:
        loss_ck = nn.functional.cross_entropy(ck(ids).flatten(0, 1), ids.flatten())
    loss_ref.backward()
    loss_ck.backward()
    assert calls["n"] == 4  # 2 blocks × (forward + recompute)
    assert log_ck.total_bytes < 0.6 * log_ref.total_bytes
    g_ref = dict(ref.named_parameters())
    for name, p in ck.named_parameters():
        torch.testing.assert_close(p.grad, g_ref[name.replace(".block.", ".")].grad, rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="ModuleList"):
        M.checkpoint_blocks(ck.model)
    with pytest.raises(ValueError, match="every"):
        M.checkpoint_blocks(ck.model.layers, every=0)


# ------------------------------------------------------------------ gradient accumulation
def test_accumulation_equals_full_batch_mse():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(24, 6), torch.randn(24, 1)
    loss_fn = lambda mdl, b: nn.functional.mse_loss(mdl(b[0]), b[1])  # noqa: E731
    full = M.accumulate_gradients(net, loss_fn, [(x, y)])
    for k in (2, 3, 4):
        mbs = list(zip(x.chunk(k), y.chunk(k)))
        acc = M.accumulate_gradients(net, loss_fn, mbs)
        for n in full:
            torch.testing.assert_close(acc[n], full[n], rtol=0, atol=1e-6)
        wrong = M.accumulate_gradients(net, loss_fn, mbs, weights=[1.0] * k)  # forgot loss / k
        torch.testing.assert_close(wrong["0.weight"], k * full["0.weight"], rtol=1e-5, atol=1e-6)


def test_accumulation_traps_batchnorm_and_token_mean():
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    loss_fn = lambda mdl, b: nn.functional.mse_loss(mdl(b[0]), b[1])  # noqa: E731
    full = M.accumulate_gradients(bn, loss_fn, [(x, y)])
    acc = M.accumulate_gradients(bn, loss_fn, list(zip(x.chunk(4), y.chunk(4))))
    assert float((acc["0.weight"] - full["0.weight"]).abs().max()) > 1e-3  # BN statistics differ
    # token-level CE with padding: micro-batches with different numbers of real tokens
    emb = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 20))
    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, 20, (4, 10), generator=g)
    lengths = torch.tensor([10, 9, 3, 2])
    mask = torch.arange(10)[None] < lengths[:, None]
    tgt = seqs.masked_fill(~mask, -100)

    def token_mean(mdl, b):
        return nn.functional.cross_entropy(mdl(b[0]).flatten(0, 1), b[1].flatten(), ignore_index=-100)

    full = M.accumulate_gradients(emb, token_mean, [(seqs, tgt)])
    mbs = [(seqs[:2], tgt[:2]), (seqs[2:], tgt[2:])]
    naive = M.accumulate_gradients(emb, token_mean, mbs)
    assert float((naive["1.weight"] - full["1.weight"]).abs().max()) > 1e-3
    n_tok = [int(mask[:2].sum()), int(mask[2:].sum())]
    fixed = M.accumulate_gradients(emb, token_mean, mbs, weights=[n / sum(n_tok) for n in n_tok])
    for n in full:
        torch.testing.assert_close(fixed[n], full[n], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        M.accumulate_gradients(emb, token_mean, mbs, weights=[1.0])
    with pytest.raises(ValueError, match="empty"):
        M.accumulate_gradients(emb, token_mean, [])


# ------------------------------------------------------------------ autocast
def test_cpu_bf16_autocast_dtypes():
    """Autocast casts a Linear's *inputs* to bf16 on the fly (the fp32 weight is untouched, it is the master
    copy), runs cross-entropy in fp32, and backward delivers fp32 gradients to the fp32 leaves."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 7)
    x = torch.randn(5, 16, requires_grad=True)
    y = torch.randint(0, 7, (5,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(x)
        loss = nn.functional.cross_entropy(out, y)
    assert out.dtype == torch.bfloat16
    assert lin.weight.dtype == torch.float32 and lin.bias.dtype == torch.float32
    assert loss.dtype == torch.float32
    # out is exactly the bf16 product of bf16 copies; the fp32 product differs (autocast really was active)
    assert torch.equal(out, nn.functional.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()))
    assert (out.float() - lin(x)).abs().max() > 0
    loss.backward()
    assert lin.weight.grad.dtype == lin.bias.grad.dtype == x.grad.dtype == torch.float32
    assert lin.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ loss scaling
def test_loss_scaler_matches_torch_gradscaler():
    g = torch.Generator().manual_seed(0)
    overflows = (torch.rand(60, generator=g) < 0.15).tolist()
    p = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1)
    ref = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=4)
    ref_trace, ref_steps = [], []
    for ov in overflows:
        ref_trace.append(ref.get_scale())
        before = p.detach().clone()
        ref.scale(p.sum()).backward()
        if ov:
            p.grad.fill_(float("inf"))
        ref.step(opt)
        ref.update()
        opt.zero_grad()
        ref_steps.append(not torch.equal(before, p.detach()))
    ours = M.DynamicLossScaler(growth_interval=4).run_trace(overflows)
    assert [s for s, _ in ours] == ref_trace
    assert [st for _, st in ours] == ref_steps == [not o for o in overflows]


def test_loss_scaler_rules_and_step():
    s = M.DynamicLossScaler()
    assert (s.scale, s.backoff_factor, s.growth_factor, s.growth_interval) == (65536.0, 0.5, 2.0, 2000)
    trace = s.run_trace([False] * 1999 + [True] + [False] * 2000)
    assert trace[1999] == (65536.0, False) and trace[2000][0] == 32768.0
    assert s.scale == 65536.0  # doubled after exactly 2000 clean steps
    s2 = M.DynamicLossScaler()
    s2.run_trace([False] * 1999)
    assert s2.scale == 65536.0
    s2.update(False)
    assert s2.scale == 131072.0
    # a real step: the gradient 1e-8 survives in fp16 only when scaled
    assert float(torch.tensor(1e-8, dtype=torch.float16)) == 0.0
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sc = M.DynamicLossScaler()
    p.grad = (torch.tensor([1e-8]) * sc.scale).half().float()
    assert sc.step(opt, [p]) and float(p.detach()) == pytest.approx(-1e-8, rel=1e-3)
    p.grad = torch.tensor([float("inf")])
    assert not sc.step(opt, [p]) and sc.scale == 32768.0


def test_loss_scaler_bad_input():
    for kw, word in [({"init_scale": 0}, "init_scale"), ({"backoff_factor": 1.5}, "backoff_factor"),
                     ({"growth_factor": 1.0}, "growth_factor"), ({"growth_interval": 0}, "growth_interval")]:
        with pytest.raises(ValueError, match=word):
            M.DynamicLossScaler(**kw)


def test_fit_power_law_bad_input():
    """A zero, a negative or a NaN point has no logarithm: it used to give NaN (x = 0) or an internal assert
    (y < 0); now each names the argument. All x equal leaves the exponent undefined."""
    with pytest.raises(ValueError, match=r"every `x` must be finite and > 0 .* got 0\.0"):
        M.fit_power_law([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"every `y` must be finite and > 0 .* got -2\.0"):
        M.fit_power_law([1, 2, 3], [1, -2, 3])
    with pytest.raises(ValueError, match="every `y`"):
        M.fit_power_law([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(ValueError, match="all x are equal"):
        M.fit_power_law([2, 2], [1, 3])
    with pytest.raises(ValueError, match="at least two"):
        M.fit_power_law([1, 2], [1, 2, 3])
    with pytest.raises(TypeError, match="`fn` must be a callable"):
        M.peak_tensor_bytes(3)
    with pytest.raises(TypeError, match="`fn` must be a callable"):
        M.saved_activation_bytes(3)
    p, c = M.fit_power_law([1.5, 3.0, 6.0, 12.0], [0.5 * 1.5 ** 1.7, 0.5 * 3 ** 1.7, 0.5 * 6 ** 1.7, 0.5 * 12 ** 1.7])
    assert p == pytest.approx(1.7) and c == pytest.approx(0.5)
