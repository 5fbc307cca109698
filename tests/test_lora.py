"""LoRA / QLoRA from scratch vs peft, merge/unmerge, adapters on disk, parameter counts, bad input."""
import copy
import math
import warnings

import peft
import pytest
import torch
import transformers
from torch import nn

from labkit.core.check import close
from labkit.experiments import finetune as FT
from labkit.finetune import lora as L


def tiny_hf(seed=0, layers=2):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=layers,
                                   num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def peft_model(base, targets, r, alpha, dropout=0.0):
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(copy.deepcopy(base), cfg)


def copy_into_peft(ours, pm, randomize_b=True):
    """Give both models the same A and (non-zero) B, so the comparison tests the whole LoRA path."""
    with torch.no_grad():
        for name, m in L.lora_layers(ours).items():
            if randomize_b:
                m.lora_B.normal_(0, 0.5)
            theirs = pm.get_submodule("base_model.model." + name)
            theirs.lora_A["default"].weight.copy_(m.lora_A)
            theirs.lora_B["default"].weight.copy_(m.lora_B)


# ---------------------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("seed, d_in, d_out, r", [(0, 64, 64, 4), (1, 37, 23, 3), (2, 5, 130, 7)])
def test_identical_to_base_at_init(seed, d_in, d_out, r):
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out)
    layer = L.LoRALinear(base, r=r, alpha=2 * r + 1)
    x = torch.randn(3, 5, d_in)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(d_in)  # kaiming_uniform(a=√5) bound, as peft / nn.Linear
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.5 * bound
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == r * (d_in + d_out)


def test_only_a_and_b_train_and_b_gets_the_first_gradient():
    torch.manual_seed(0)
    layer = L.LoRALinear(nn.Linear(16, 12), r=4, alpha=8)
    w0, b0 = layer.base.weight.clone(), layer.base.bias.clone()
    x, y = torch.randn(32, 16), torch.randn(32, 12)
    loss = ((layer(x) - y) ** 2).mean()
    loss.backward()
    assert torch.count_nonzero(layer.lora_A.grad) == 0  # dL/dA = Bᵀ g xᵀ = 0 while B = 0
    assert torch.count_nonzero(layer.lora_B.grad) > 0
    opt = torch.optim.AdamW([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    a0 = layer.lora_A.detach().clone()
    for _ in range(20):
        opt.zero_grad()
        ((layer(x) - y) ** 2).mean().backward()
        opt.step()
    assert torch.equal(layer.base.weight, w0) and torch.equal(layer.base.bias, b0)
    assert not torch.equal(layer.lora_A, a0) and torch.count_nonzero(layer.lora_B) > 0
    assert torch.linalg.matrix_rank(layer.delta_weight()) <= 4


def test_scaling_and_formula():
    torch.manual_seed(0)
    layer = L.LoRALinear(nn.Linear(10, 6), r=2, alpha=5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 10)
    ref = layer.base(x) + (5 / 2) * x @ layer.lora_A.T @ layer.lora_B.T
    close(layer(x), ref, atol=1e-6, quiet=True)
    with pytest.raises(AssertionError):  # a wrong scale (α instead of α/r) is caught
        close(layer(x), layer.base(x) + 5 * x @ layer.lora_A.T @ layer.lora_B.T, atol=1e-6, quiet=True)


# ------------------------------------------------------------------------------------------ vs peft
@pytest.mark.parametrize("seed, targets, r, alpha", [
    (0, ["q_proj", "v_proj"], 4, 12),
    (1, list(L.LLAMA_TARGETS), 3, 7.5),
    (2, ["down_proj", "k_proj"], 8, 2),
])
def test_equal_to_peft(seed, targets, r, alpha):
    base = tiny_hf(seed)
    ours = copy.deepcopy(base)
    pm = peft_model(base, targets, r, alpha)
    L.add_lora(ours, targets, r=r, alpha=alpha)
    copy_into_peft(ours, pm)
    ids = torch.randint(0, 97, (3, 13))
    with torch.no_grad():
        ref_base = base(ids).logits
        a, b = ours(ids).logits, pm(ids).logits
    close(a, b, atol=1e-5, quiet=True)
    assert (a - ref_base).abs().max() > 1e-2  # the LoRA path really contributes
    trainable, _ = L.count_trainable(ours)
    assert trainable == sum(p.numel() for p in pm.parameters() if p.requires_grad)
    theirs_names = {n.replace("base_model.model.", "").replace(".default.weight", "")
                    for n, p in pm.named_parameters() if p.requires_grad}
    assert theirs_names == set(L.lora_state_dict(ours))


def test_regex_targets_match_peft():
    base = tiny_hf(3)
    regex = r".*layers\.1\.self_attn\.(q|o)_proj"
    ours = copy.deepcopy(base)
    names = L.add_lora(ours, regex, r=2, alpha=6)
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.o_proj"]
    pm = peft_model(base, regex, 2, 6)
    copy_into_peft(ours, pm)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        close(ours(ids).logits, pm(ids).logits, atol=1e-5, quiet=True)


def test_dropout_only_on_lora_path_matches_peft_in_train_mode():
    base = tiny_hf(4)
    ours = copy.deepcopy(base)
    pm = peft_model(base, ["q_proj", "v_proj"], 4, 8, dropout=0.3)
    L.add_lora(ours, ["q_proj", "v_proj"], r=4, alpha=8, dropout=0.3)
    copy_into_peft(ours, pm)
    ours.train(), pm.train()
    ids = torch.randint(0, 97, (2, 10))
    torch.manual_seed(123)
    a = ours(ids).logits
    torch.manual_seed(123)
    b = pm(ids).logits
    close(a, b, atol=1e-5, quiet=True)
    torch.manual_seed(7)
    assert (ours(ids).logits - a).abs().max() > 1e-4  # dropout is really active


def test_gradients_equal_peft():
    base = tiny_hf(5)
    ours = copy.deepcopy(base)
    pm = peft_model(base, ["q_proj", "up_proj"], 4, 16)
    L.add_lora(ours, ["q_proj", "up_proj"], r=4, alpha=16)
    copy_into_peft(ours, pm)
    ids = torch.randint(0, 97, (2, 12))
    ours(ids, labels=ids).loss.backward()
    pm(input_ids=ids, labels=ids).loss.backward()
    for name, m in L.lora_layers(ours).items():
        t = pm.get_submodule("base_model.model." + name)
        close(m.lora_A.grad, t.lora_A["default"].weight.grad, atol=1e-5, quiet=True)
        close(m.lora_B.grad, t.lora_B["default"].weight.grad, atol=1e-5, quiet=True)


# ------------------------------------------------------------------------------------- merge/unmerge
def test_merge_unmerge_and_unload_match_peft():
    base = tiny_hf(6)
    ours = copy.deepcopy(base)
    pm = peft_model(base, list(L.LLAMA_TARGETS), 4, 10)
    L.add_lora(ours, list(L.LLAMA_TARGETS), r=4, alpha=10)
    copy_into_peft(ours, pm)
    ids = torch.randint(0, 97, (2, 11))
    w0 = {n: m.base.weight.clone() for n, m in L.lora_layers(ours).items()}
    with torch.no_grad():
        unmerged = ours(ids).logits
        L.merge_lora(ours)
        close(ours(ids).logits, unmerged, atol=1e-5, quiet=True)
        with pytest.raises(ValueError, match="already merged"):
            L.merge_lora(ours)
        L.unmerge_lora(ours)
        with pytest.raises(ValueError, match="not merged"):
            L.unmerge_lora(ours)
        for n, m in L.lora_layers(ours).items():
            close(m.base.weight, w0[n], atol=1e-6, quiet=True)
        close(ours(ids).logits, unmerged, atol=1e-5, quiet=True)
        merged_ref = pm.merge_and_unload()
        L.unload_lora(ours, merge=True)
        assert not L.lora_layers(ours)
        for (n1, p1), (n2, p2) in zip(ours.named_parameters(), merged_ref.named_parameters()):
            assert n1 == n2
            close(p1, p2, atol=1e-6, quiet=True)


def test_merge_without_scaling_would_be_wrong():
    torch.manual_seed(0)
    layer = L.LoRALinear(nn.Linear(20, 20), r=4, alpha=16)
    with torch.no_grad():
        layer.lora_B.normal_()
        x = torch.randn(5, 20)
        y = layer(x)
        wrong = layer.base(x) + x @ (layer.lora_B @ layer.lora_A).T  # the notes' merge: no α/r
    assert (wrong - y).abs().max() > 1e-3


# ------------------------------------------------------------------------------ adapters and switching
def test_state_dict_save_load_and_switch(tmp_path):
    base = tiny_hf(7)
    ids = torch.randint(0, 97, (2, 8))
    model = copy.deepcopy(base)
    L.add_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    sd = L.lora_state_dict(model)
    assert all(k.endswith((".lora_A", ".lora_B")) for k in sd) and len(sd) == 2 * 2 * 2
    with torch.no_grad():
        with L.lora_disabled(model):
            y_base = model(ids).logits
        close(y_base, base(ids).logits, atol=0, quiet=True)
        adapters, outs = [], []
        for seed in (1, 2):
            torch.manual_seed(seed)
            for m in L.lora_layers(model).values():
                m.lora_A.normal_(), m.lora_B.normal_()
            adapters.append(L.save_lora(model, tmp_path / f"adapter{seed}.safetensors"))
            outs.append(model(ids).logits)
        assert (outs[0] - outs[1]).abs().max() > 1e-3
        sd_file, meta = L.read_lora(adapters[0])
        assert meta["r"] == 4 and meta["alpha"] == 8.0 and set(sd_file) == set(sd)
        n_lora = sum(v.numel() for v in sd_file.values())
        assert adapters[0].stat().st_size < 4 * n_lora + 2048  # only LoRA tensors on disk
        for path, ref in [(adapters[0], outs[0]), (adapters[1], outs[1]), (adapters[0], outs[0])]:
            L.load_lora(model, path)
            close(model(ids).logits, ref, atol=0, quiet=True)
        fresh = copy.deepcopy(base)
        L.add_lora(fresh, ["q_proj", "v_proj"], r=4, alpha=8)
        L.load_lora(fresh, sd_file)
        close(fresh(ids).logits, outs[0], atol=0, quiet=True)


def test_load_errors(tmp_path):
    base = tiny_hf(8)
    m4 = copy.deepcopy(base)
    L.add_lora(m4, ["q_proj", "v_proj"], r=4, alpha=8)
    path = L.save_lora(m4, tmp_path / "a.safetensors")
    m8 = copy.deepcopy(base)
    L.add_lora(m8, ["q_proj", "v_proj"], r=8, alpha=8)
    with pytest.raises(ValueError, match="r=4"):
        L.load_lora(m8, path)
    with pytest.raises(ValueError, match="shape"):
        L.load_lora(m8, L.lora_state_dict(m4))
    mk = copy.deepcopy(base)
    L.add_lora(mk, ["k_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match="missing"):
        L.load_lora(mk, L.lora_state_dict(m4))
    ma = copy.deepcopy(base)
    L.add_lora(ma, ["q_proj", "v_proj"], r=4, alpha=16)
    with pytest.raises(ValueError, match="alpha=8"):
        L.load_lora(ma, path)
    L.merge_lora(m4)
    with pytest.raises(ValueError, match="unmerge"):
        L.load_lora(m4, path)
    with pytest.raises(FileNotFoundError):
        L.read_lora(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------------- bad input
def test_bad_hyperparameters_and_targets():
    lin = nn.Linear(4, 4)
    for r in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="r "):
            L.LoRALinear(lin, r=r, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        L.LoRALinear(lin, r=2, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        L.LoRALinear(lin, r=2, alpha=2, dropout=1.0)
    with pytest.raises(TypeError, match="nn.Linear"):
        L.LoRALinear(nn.Conv1d(4, 4, 1), r=2, alpha=2)
    model = tiny_hf(9, layers=1)
    with pytest.raises(ValueError, match=r"matched no module.*'gate_proj'.*'q_proj'"):
        L.add_lora(model, ["query_key_value"], r=4, alpha=8)
    with pytest.raises(TypeError, match="Embedding"):
        L.add_lora(model, ["embed_tokens"], r=4, alpha=8)
    with pytest.raises(TypeError, match="target_modules"):
        L.add_lora(model, [], r=4, alpha=8)
    L.add_lora(model, ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match="already has LoRA"):
        L.add_lora(model, ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match="add_lora"):
        L.merge_lora(nn.Linear(3, 3))


def test_freezes_everything_else():
    model = tiny_hf(10)
    L.add_lora(model, ["v_proj"], r=2, alpha=4)
    train = [n for n, p in model.named_parameters() if p.requires_grad]
    assert train and all(".lora_" in n for n in train)
    assert len(train) == 2 * 2


# ------------------------------------------------------------------------------------------ counting
def test_param_counts_llama7b():
    cfg7b = transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32)
    assert L.lora_param_count(cfg7b, ["q_proj", "v_proj"], 8) == 4_194_304
    assert L.lora_param_count(cfg7b, L.LLAMA_TARGETS, 8) == 19_988_480
    d = dict(dim=4096, n_layers=32, n_heads=32, hidden_dim=11008)
    assert L.lora_param_count(d, ["q_proj", "v_proj"], 8) == 4_194_304
    with pytest.raises(ValueError, match="unknown target"):
        L.lora_param_count(cfg7b, ["qkv"], 8)
    with pytest.raises(ValueError, match="r "):
        L.lora_param_count(cfg7b, ["q_proj"], 0)


@pytest.mark.parametrize("targets, r", [(["q_proj", "v_proj"], 3), (list(L.LLAMA_TARGETS), 5)])
def test_param_count_formula_equals_a_real_model(targets, r):
    model = tiny_hf(11)
    L.add_lora(model, targets, r=r, alpha=1)
    assert L.count_trainable(model)[0] == L.lora_param_count(model.config, targets, r)


def test_param_count_with_labkit_config():
    import labkit.model as model_mod
    cfg = model_mod.LlamaConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, hidden_dim=11008)
    assert L.lora_param_count(cfg, L.LLAMA_TARGETS, 8) == 19_988_480


# --------------------------------------------------------------------------------------------- QLoRA
@pytest.mark.parametrize("seed, d_in, d_out, bias", [(0, 64, 32, True), (1, 37, 23, False), (2, 130, 7, True)])
def test_qlora_layer(seed, d_in, d_out, bias):
    import labkit.quant as quant
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out, bias=bias)
    q = L.QLoRALinear(base, r=3, alpha=6, block_size=64)
    codes, absmax = quant.nf4_quantize(base.weight.detach(), block_size=64)
    w_hat = quant.nf4_dequantize(codes, absmax, 64, base.weight.shape)
    close(q.dequantized_weight(), w_hat, atol=0, quiet=True)  # packing two codes per byte is lossless
    assert 0 < (w_hat - base.weight).abs().max() < 0.2 * base.weight.abs().max()
    x = torch.randn(4, 3, d_in, requires_grad=True)
    ref_base = x @ w_hat.T + (base.bias if bias else 0)
    close(q(x), ref_base, atol=1e-6, quiet=True)  # identical to the (dequantized) base at init
    with torch.no_grad():
        q.lora_B.normal_()
    a_ref = q.lora_A.detach().clone().requires_grad_(True)
    b_ref = q.lora_B.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y_ref = x2 @ w_hat.T + (base.bias.detach() if bias else 0) + 2.0 * x2 @ a_ref.T @ b_ref.T
    y = q(x)
    close(y, y_ref, atol=1e-5, quiet=True)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    close(x.grad, x2.grad, atol=1e-5, quiet=True)
    close(q.lora_A.grad, a_ref.grad, atol=1e-5, quiet=True)
    close(q.lora_B.grad, b_ref.grad, atol=1e-5, quiet=True)
    assert [n for n, p in q.named_parameters()] == ["lora_A", "lora_B"]
    n_blocks = math.ceil(d_in * d_out / 64)
    assert q.base_bytes() == n_blocks * 64 // 2 + 4 * n_blocks + (4 * d_out if bias else 0)
    close(q.merged_linear()(x), y, atol=1e-5, quiet=True)
    with pytest.raises(ValueError, match="cannot be merged"):
        q.merge()


def test_qlora_saves_codes_not_the_dequantized_weight():
    torch.manual_seed(0)
    d = 256
    x = torch.randn(2, d, requires_grad=True)
    saved = {}

    def nbytes(layer):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x).sum().backward()
        return total[0]
    base = nn.Linear(d, d, bias=False)
    saved["lora"] = nbytes(L.LoRALinear(base, r=4, alpha=8))
    saved["qlora"] = nbytes(L.QLoRALinear(nn.Linear(d, d, bias=False), r=4, alpha=8))
    assert saved["lora"] >= d * d * 4  # the fp32 weight is saved for dL/dx
    assert saved["qlora"] < d * d  # QLoRA keeps only activations + LoRA factors


def test_add_lora_qlora_on_a_model():
    base = tiny_hf(12)
    model = copy.deepcopy(base)
    L.add_lora(model, ["q_proj", "v_proj", "down_proj"], r=4, alpha=8, qlora=True)
    assert all(isinstance(m, L.QLoRALinear) for m in L.lora_layers(model).values())
    ids = torch.randint(0, 97, (2, 9))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        diff = (out.logits - base(ids).logits).abs().max()
    assert 0 < diff < 1.0  # NF4 rounding changes the logits a little, LoRA (B = 0) not at all
    with pytest.raises(ValueError, match="cannot be merged"):
        L.merge_lora(model)


def labkit_llama(seed=0):
    """A small labkit Llama with GQA (the model class FT.prepare works on), awkward widths."""
    import labkit.model as model_mod
    torch.manual_seed(seed)
    cfg = model_mod.LlamaConfig(vocab_size=97, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, hidden_dim=192)
    return model_mod.Llama(cfg).eval()


@pytest.mark.parametrize("seed", [0, 7])
def test_prepare_lora_methods(seed):
    """The experiment's LoRA/QLoRA methods: the seven projections, alpha = 2r, the formula's count, base at init."""
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(seed))
    for name in ("full", "lora_r2", "lora_r32", "qlora_r8"):
        model = labkit_llama(seed)
        with torch.no_grad():
            before = model(ids)
        n_total = sum(p.numel() for p in model.parameters())
        wrapped, forward = FT.prepare(model, name)
        assert wrapped is model  # LoRA and full fine-tuning change the model in place, no wrapper
        if name == "full":
            assert L.count_trainable(model) == (n_total, n_total)
            continue
        r = FT.METHODS[name]["r"]
        layers = L.lora_layers(model)
        assert len(layers) == 3 * len(L.LLAMA_TARGETS)
        assert all(isinstance(m, L.QLoRALinear) == (name == "qlora_r8") for m in layers.values())
        assert all(m.alpha == 2.0 * r and m.r == r for m in layers.values())
        assert L.count_trainable(model)[0] == L.lora_param_count(model.config, L.LLAMA_TARGETS, r)
        with torch.no_grad():
            after = model(ids)
        if name == "qlora_r8":   # B = 0, but the NF4 base rounds the weights: close, not equal
            assert 0 < float((after - before).abs().max()) < 1.0
        else:                    # B = 0: exactly the base model
            assert torch.equal(after, before)
    with pytest.raises(ValueError, match="unknown method 'lora'"):
        FT.prepare(labkit_llama(), "lora")
