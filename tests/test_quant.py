"""labkit.quant against references: PyTorch's observers and fake-quant ops, torch float8 dtypes,
bitsandbytes' published NF4/FP4 tables and error budgets, and the notes' worked example."""
import math
import struct

import pytest
import torch
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

from labkit import quant as Q
from labkit.quant.floats import _TORCH_DTYPES, _struct_fp32_bits
from labkit.quant.int8 import _ungroup_scale

# bitsandbytes/functional.py get_4bit_type("nf4"): the oracle (bitsandbytes itself is not installed)
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
           0.7229568362236023, 1.0]
# bitsandbytes tests/test_functional.py::test_4bit_quant expected mean |error| on randn(1024, 1024)
BNB_ERR = {("nf4", 32): 0.067746, ("nf4", 64): 0.072798, ("nf4", 128): 0.076831, ("fp4", 64): 0.096543}


# ------------------------------------------------------------------ absmax / zero-point
def test_worked_example_from_the_notes():
    x = torch.tensor([1.2, 0.5, -4.3, 1.2, -3.1, 0.8, 2.4, 5.4])
    q, s = Q.absmax_quantize(x)
    assert q.tolist() == [28, 12, -101, 28, -73, 19, 56, 127]
    assert q.dtype == torch.int8
    assert abs(float(s) - 5.4 / 127) < 1e-8
    assert float((Q.absmax_dequantize(q, s) - x).abs().max()) <= float(s) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("gran", [dict(), dict(dim=0), dict(dim=1), dict(dim=-1), dict(group_size=5)])
def test_absmax_error_bound_and_scale(seed, bits, gran):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 15, generator=g) * torch.rand(7, 1, generator=g) * 4
    q, s = Q.absmax_quantize(x, bits=bits, **gran)
    qmax = 2 ** (bits - 1) - 1
    assert q.shape == x.shape and int(q.abs().max()) <= qmax
    xh = Q.absmax_dequantize(q, s)
    s_full = _ungroup_scale(s, q).expand_as(x)
    assert bool(((xh - x).abs() <= s_full / 2 + 1e-6).all())
    # the scale is max|x| / qmax on each slice: recompute it independently
    if "group_size" in gran:
        ref = x.reshape(7, 3, 5).abs().amax(-1) / qmax
    elif "dim" in gran:
        d = gran["dim"] % 2
        ref = x.abs().amax(dim=1 - d, keepdim=True) / qmax
    else:
        ref = x.abs().max().reshape(1, 1) / qmax
    torch.testing.assert_close(s, ref, rtol=0, atol=1e-7)
    # the largest value of each slice hits ±qmax exactly
    assert int(q.abs().max()) == qmax


def test_finer_granularity_is_never_worse():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g) * torch.logspace(-1, 1, 64)[:, None]
    err = {}
    for name, kw in {"tensor": {}, "channel": {"dim": 0}, "group": {"group_size": 32}}.items():
        q, s = Q.absmax_quantize(x, **kw)
        err[name] = float((Q.absmax_dequantize(q, s) - x).abs().mean())
    assert err["group"] < err["channel"] < err["tensor"]


@pytest.mark.parametrize("seed", [0, 3])
def test_zeropoint_matches_pytorch_observers_and_fake_quant(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 13, generator=g) * 3 + 1
    q, s, z = Q.zeropoint_quantize(x)
    obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    obs(x)
    s_ref, z_ref = obs.calculate_qparams()
    torch.testing.assert_close(s.reshape(1), s_ref, rtol=1e-6, atol=0)
    assert z.reshape(1).tolist() == z_ref.tolist()
    fq = torch.fake_quantize_per_tensor_affine(x, float(s_ref), int(z_ref), -128, 127)
    torch.testing.assert_close(Q.zeropoint_dequantize(q, s, z), fq, rtol=0, atol=1e-6)
    # per channel along dim 1
    q, s, z = Q.zeropoint_quantize(x, dim=1)
    obs = PerChannelMinMaxObserver(ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_affine)
    obs(x)
    s_ref, z_ref = obs.calculate_qparams()
    torch.testing.assert_close(s.reshape(-1), s_ref, rtol=1e-6, atol=0)
    assert z.reshape(-1).tolist() == z_ref.tolist()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bits", [2, 5, 8])
@pytest.mark.parametrize("shift", [-2.0, 0.0, 0.7, 3.0])  # all-negative, centred, skewed, all-positive
def test_zeropoint_error_bound(seed, bits, shift):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(11, 17, generator=g) + shift - 0.5
    for kw in ({}, {"dim": 0}, {"group_size": 17}):
        q, s, z = Q.zeropoint_quantize(x, bits=bits, **kw)
        xh = Q.zeropoint_dequantize(q, s, z)
        s_full = _ungroup_scale(s, q).expand_as(x)
        assert bool(((xh - x).abs() <= s_full / 2 + 1e-6).all())
        assert int(z.min()) >= -(2 ** (bits - 1)) and int(z.max()) <= 2 ** (bits - 1) - 1


def test_zeropoint_beats_absmax_on_positive_data():
    x = torch.rand(10_000, generator=torch.Generator().manual_seed(0))  # post-ReLU-like, [0, 1)
    e_sym = (Q.absmax_dequantize(*Q.absmax_quantize(x)) - x).pow(2).mean()
    e_asym = (Q.zeropoint_dequantize(*Q.zeropoint_quantize(x)) - x).pow(2).mean()
    assert float(e_sym / e_asym) > 3.0  # twice the step → about 4× the MSE


@pytest.mark.parametrize("fn", ["absmax", "zeropoint"])
def test_all_zero_tensor_round_trips_exactly(fn):
    x = torch.zeros(4, 6)
    if fn == "absmax":
        q, s = Q.absmax_quantize(x, dim=0)
        xh = Q.absmax_dequantize(q, s)
    else:
        q, s, z = Q.zeropoint_quantize(x, dim=0)
        xh = Q.zeropoint_dequantize(q, s, z)
    assert torch.isfinite(s).all() and bool((s > 0).all())
    assert torch.equal(xh, x)
    # one zero row among non-zero rows stays exact too
    y = torch.randn(4, 6)
    y[2] = 0
    q, s = Q.absmax_quantize(y, dim=0)
    assert torch.equal(Q.absmax_dequantize(q, s)[2], torch.zeros(6))


def test_bad_input():
    x = torch.randn(4, 6)
    for bits in (1, 9, 16):
        with pytest.raises(ValueError, match="bits"):
            Q.absmax_quantize(x, bits=bits)
        with pytest.raises(ValueError, match="bits"):
            Q.zeropoint_quantize(x, bits=bits)
    with pytest.raises(TypeError, match="bits"):
        Q.absmax_quantize(x, bits=4.0)
    with pytest.raises(TypeError, match="floating-point"):
        Q.absmax_quantize(torch.arange(6))
    with pytest.raises(TypeError, match="floating-point"):
        Q.zeropoint_quantize(torch.arange(6))
    with pytest.raises(TypeError, match="torch.Tensor"):
        Q.absmax_quantize([1.0, 2.0])
    with pytest.raises(ValueError, match="group_size"):
        Q.absmax_quantize(x, group_size=4)  # 4 does not divide 6: rejected, not padded
    with pytest.raises(ValueError, match="not both"):
        Q.absmax_quantize(x, dim=0, group_size=3)
    with pytest.raises(ValueError, match="dim"):
        Q.absmax_quantize(x, dim=2)
    with pytest.raises(ValueError, match="scale"):
        Q.absmax_dequantize(torch.zeros(4, 6, dtype=torch.int8), torch.ones(4, 4))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("denom", [2 ^ 7 - 1, 2 ^ 7], ids=["2^7-1 (=4)", "2^7 (=5)"])
def test_xor_scale_is_far_worse_than_absmax_quantize(seed, denom):
    """`^` is XOR in Python: the notes' `absmax / (2^7 - 1)` divides by 4 (and `absmax / 2^7` by 5), not 127,
    so only ~9-11 of the 255 int8 codes are used. labkit's scale absmax / 127 must be ~127/denom times finer."""
    x = torch.randn(4096, generator=torch.Generator().manual_seed(seed))
    q, s = Q.absmax_quantize(x)
    err = (Q.absmax_dequantize(q, s) - x).abs()
    s_bug = x.abs().max() / denom
    q_bug = torch.round(x / s_bug).clamp(-127, 127)
    err_bug = (q_bug * s_bug - x).abs()
    assert q_bug.unique().numel() <= 2 * denom + 1
    # worst-case error is half a step, so the ratio of the max errors is the ratio of the steps, 127 / denom
    assert float(err_bug.max() / err.max()) == pytest.approx(127 / denom, rel=0.02)
    assert float(err_bug.mean() / err.mean()) > 20       # measured 24.8-32 on these seeds


# ------------------------------------------------------------------ LLM.int8()
def _outlier_problem(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 256, generator=g)
    w = torch.randn(256, 96, generator=g) * 0.05
    xo = x.clone()
    cols = torch.randperm(256, generator=g)[:2]
    xo[:, cols] *= torch.tensor([40.0, 60.0])
    return x, xo, w, cols


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_llm_int8_outlier_decomposition(seed):
    x, xo, w, cols = _outlier_problem(seed)
    e_clean = float((Q.int8_matmul_vectorwise(x, w) - x @ w).abs().mean())
    ref = xo @ w
    e_plain = float((Q.int8_matmul_vectorwise(xo, w) - ref).abs().mean())
    e_tensor = float((Q.int8_matmul_per_tensor(xo, w) - ref).abs().mean())
    e_llm = float((Q.int8_matmul_with_outliers(xo, w, threshold=6.0) - ref).abs().mean())
    assert sorted(Q.outlier_columns(xo).tolist()) == sorted(cols.tolist())
    assert e_llm * 5 <= e_plain < e_tensor
    assert e_llm < 1.5 * e_clean  # near the no-outlier error


def test_int8_vectorwise_is_exact_integer_arithmetic():
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(13, 37, generator=g), torch.randn(37, 11, generator=g)
    qx, sx = Q.absmax_quantize(x, dim=0)
    qw, sw = Q.absmax_quantize(w, dim=1)
    acc = qx.long() @ qw.long()  # true int64 accumulator
    torch.testing.assert_close(Q.int8_matmul_vectorwise(x, w), (acc.double() * sx * sw).float())
    # no outliers → the decomposition is the plain vector-wise product
    torch.testing.assert_close(Q.int8_matmul_with_outliers(x, w, threshold=100.0), Q.int8_matmul_vectorwise(x, w))
    # everything an outlier → pure float matmul
    torch.testing.assert_close(Q.int8_matmul_with_outliers(x, w, threshold=1e-9), x @ w, atol=1e-5, rtol=1e-5)


def test_int8_matmul_all_zero_inputs_give_exact_zeros():
    """absmax of an all-zero row/column is 0: the scale must not become 0/0 = NaN."""
    g = torch.Generator().manual_seed(7)
    x, w = torch.randn(5, 9, generator=g), torch.randn(9, 4, generator=g)
    x[:, 3] *= 50.0                                          # one outlier column: exercises the float path
    zx, zw = torch.zeros(5, 9), torch.zeros(9, 4)
    for a, b in ((zx, w), (x, zw), (zx, zw)):
        for fn in (Q.int8_matmul_with_outliers, Q.int8_matmul_vectorwise):
            y = fn(a, b)
            assert y.shape == (5, 4) and torch.isfinite(y).all()
            assert torch.equal(y, torch.zeros(5, 4))


def test_int8_matmul_bad_input():
    with pytest.raises(ValueError, match="matching K"):
        Q.int8_matmul_with_outliers(torch.randn(4, 5), torch.randn(6, 3))
    with pytest.raises(TypeError, match="floating-point"):
        Q.int8_matmul_with_outliers(torch.ones(4, 5, dtype=torch.int64), torch.randn(5, 3))
    with pytest.raises(ValueError, match="threshold"):
        Q.outlier_columns(torch.randn(4, 5), threshold=0.0)


def test_quantized_linear_int8_module():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(48, 20)
    x = torch.randn(2, 5, 48, generator=g)
    x[..., 3] *= 30
    mod = Q.QuantizedLinearInt8(lin, threshold=6.0)
    y = mod(x)
    # reference: decomposition with the weight already int8 (per output row), outliers in float
    x2 = x.reshape(-1, 48)
    wq = Q.absmax_dequantize(*Q.absmax_quantize(lin.weight.detach(), dim=0))
    keep = torch.ones(48, dtype=torch.bool)
    keep[3] = False
    qx, sx = Q.absmax_quantize(x2[:, keep], dim=0)
    ref = (qx.float() * sx) @ wq[:, keep].T + x2[:, ~keep] @ wq[:, ~keep].T + lin.bias
    torch.testing.assert_close(y, ref.reshape(2, 5, 20), atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        assert float((y - lin(x)).abs().max()) < 0.05 * float(lin(x).abs().max())


# ------------------------------------------------------------------ NF4 / FP4 / double quant
def test_nf4_table_equals_bitsandbytes():
    assert Q.NF4_TABLE.shape == (16,)
    torch.testing.assert_close(Q.NF4_TABLE.double(), torch.tensor(BNB_NF4, dtype=torch.float64), rtol=0, atol=1e-7)
    t = Q.NF4_TABLE
    assert bool((t[1:] > t[:-1]).all()) and int((t == 0).sum()) == 1
    assert int((t < 0).sum()) == 7 and int((t > 0).sum()) == 8
    # a different offset gives a different table: the test would catch a wrong constant
    assert float((Q.create_normal_map(0.99) - t).abs().max()) > 1e-3


def test_fp4_table():
    expected = sorted(v / 12 for v in [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0,
                                       -12.0, -4.0, -6.0, -2.0, -3.0])
    assert Q.FP4_TABLE.tolist() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("fmt,block", list(BNB_ERR))
def test_4bit_error_matches_bitsandbytes_budget(fmt, block):
    A = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(block))
    quant, deq = (Q.nf4_quantize, Q.nf4_dequantize) if fmt == "nf4" else (Q.fp4_quantize, Q.fp4_dequantize)
    codes, absmax = quant(A, block)
    err = float((deq(codes, absmax, block, A.shape) - A).abs().mean())
    assert err == pytest.approx(BNB_ERR[(fmt, block)], rel=0.02)


def test_nf4_beats_int4_and_fp4_on_gaussian_weights():
    A = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(1))
    e_nf4 = (Q.nf4_dequantize(*Q.nf4_quantize(A, 64), 64, A.shape) - A).abs().mean()
    e_fp4 = (Q.fp4_dequantize(*Q.fp4_quantize(A, 64), 64, A.shape) - A).abs().mean()
    q, s = Q.absmax_quantize(A.reshape(-1, 64), bits=4, dim=0)
    e_int4 = (Q.absmax_dequantize(q, s).reshape(A.shape) - A).abs().mean()
    assert e_nf4 < e_int4 and e_nf4 < e_fp4


@pytest.mark.parametrize("seed", [0, 1])
def test_nf4_codes_are_nearest_levels(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 50, generator=g)  # 150 values: not a multiple of 64 → zero-padded last block
    codes, absmax = Q.nf4_quantize(w, block_size=64)
    assert codes.dtype == torch.uint8 and codes.shape == (192,) and absmax.shape == (3,)
    flat = torch.cat([w.reshape(-1), torch.zeros(42)]).view(3, 64)
    normed = (flat / flat.abs().amax(1, keepdim=True)).reshape(-1)
    brute = (normed[:, None] - Q.NF4_TABLE[None, :]).abs().argmin(dim=1)
    dist_ours = (normed - Q.NF4_TABLE[codes.long()]).abs()
    dist_best = (normed - Q.NF4_TABLE[brute]).abs()
    torch.testing.assert_close(dist_ours, dist_best, rtol=0, atol=1e-7)
    wh = Q.nf4_dequantize(codes, absmax, 64, w.shape)
    assert wh.shape == w.shape
    half_gap = float((Q.NF4_TABLE[1:] - Q.NF4_TABLE[:-1]).max()) / 2
    assert float((wh - w).abs().max()) <= half_gap * float(absmax.max()) + 1e-6
    # block maxima are reproduced exactly (they map to ±1)
    for b in range(2):
        i = int(flat[b].abs().argmax())
        assert float(wh.reshape(-1)[b * 64 + i]) == pytest.approx(float(flat[b, i]), abs=1e-6)


def test_nf4_all_zero_and_bad_input():
    z = torch.zeros(128)
    codes, absmax = Q.nf4_quantize(z)
    assert torch.equal(Q.nf4_dequantize(codes, absmax, 64, (128,)), z)
    with pytest.raises(TypeError, match="floating-point"):
        Q.nf4_quantize(torch.ones(64, dtype=torch.int32))
    with pytest.raises(ValueError, match="block_size"):
        Q.nf4_quantize(torch.randn(64), block_size=0)
    codes, absmax = Q.nf4_quantize(torch.randn(128))
    with pytest.raises(ValueError, match="block_size"):
        Q.nf4_dequantize(codes, absmax, 32, (128,))


def test_double_quantization():
    A = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
    _, absmax = Q.nf4_quantize(A, 64)  # 4096 block scales
    q, s2, c = Q.double_quantize(absmax, block_size=256)
    assert q.dtype == torch.int8 and q.shape == absmax.shape and s2.shape == (16,)
    rec = Q.double_dequantize(q, s2, c, block_size=256)
    centred = absmax - c
    bound = (centred.view(16, 256).abs().amax(1) / 127 / 2).repeat_interleave(256)
    assert bool(((rec - absmax).abs() <= bound + 1e-6).all())
    assert Q.bits_per_param(4, 64) == 4.5
    assert Q.bits_per_param(4, 64, double_quant=True) - 4 == pytest.approx(0.127, abs=5e-4)
    # 65B parameters: double quantization saves 0.373 bits/param ≈ 3.03 GB
    saved = (Q.bits_per_param(4, 64) - Q.bits_per_param(4, 64, double_quant=True)) * 65e9 / 8 / 1e9
    assert saved == pytest.approx(3.03, abs=0.01)
    # a partial last group of scales is padded and dropped again
    q, s2, c = Q.double_quantize(absmax[:300], block_size=256)
    assert q.shape == (300,) and s2.shape == (2,)
    assert Q.double_dequantize(q, s2, c, 256).shape == (300,)


# ------------------------------------------------------------------ float formats
@pytest.mark.parametrize("fmt,dtype,n_finite,vmax", [("e4m3", torch.float8_e4m3fn, 254, 448.0),
                                                     ("e5m2", torch.float8_e5m2, 248, 57344.0)])
def test_fp8_decoded_from_scratch_equals_torch(fmt, dtype, n_finite, vmax):
    ours = Q.fp8_values(fmt, finite_only=False)
    ref = torch.arange(256, dtype=torch.uint8).view(dtype).double()
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    fin = ~torch.isnan(ref)
    assert torch.equal(ours[fin], ref[fin])
    vals = Q.fp8_values(fmt)
    assert vals.numel() == n_finite and float(vals.max()) == vmax == Q.float_format(fmt).max
    assert float(vals.max()) == torch.finfo(dtype).max
    # casting every decoded value to the torch dtype and back is lossless
    assert torch.equal(vals.float().to(dtype).double(), vals)
    pos = vals[vals > 0]
    assert float(pos.min()) == Q.float_format(fmt).min_subnormal


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16", "e4m3", "e5m2"])
def test_float_format_constants_match_finfo(fmt):
    f = Q.float_format(fmt)
    fi = torch.finfo(_TORCH_DTYPES[fmt])
    assert f.max == fi.max and f.min_normal == fi.tiny and f.eps == fi.eps


@pytest.mark.parametrize("x", [0.1, -2.5, 1.0, 65504.0, 3.0e-8, -0.0])
def test_float_bits(x):
    s, e, m = Q.float_bits(x, "fp32")
    assert s + e + m == _struct_fp32_bits(x) == format(struct.unpack(">I", struct.pack(">f", x))[0], "032b")
    for fmt in ("fp16", "bf16", "fp32"):
        s, e, m = Q.float_bits(x, fmt)
        f = Q.float_format(fmt)
        assert (len(e), len(m)) == (f.exp_bits, f.man_bits)
        decoded = Q.decode_bits(int(s + e + m, 2), fmt)
        rounded = float(torch.tensor(x).to(_TORCH_DTYPES[fmt]).float())
        assert decoded == rounded or (math.isinf(decoded) and math.isinf(rounded))


def test_float_format_bad_input():
    with pytest.raises(ValueError, match="unknown float format"):
        Q.float_format("fp12")
    with pytest.raises(ValueError, match="e4m3"):
        Q.fp8_values("fp16")
    with pytest.raises(ValueError, match="word"):
        Q.decode_bits(256, "e4m3")


# ------------------------------------------------------------------ whole model
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 64)
        self.up = nn.Linear(64, 96)
        self.down = nn.Linear(96, 64, bias=False)
        self.lm_head = nn.Linear(64, 10, bias=False)

    def forward(self, ids):
        return self.lm_head(self.down(torch.relu(self.up(self.emb(ids)))))


def test_quantize_model_formats_and_bytes():
    torch.manual_seed(0)
    m = _Tiny()
    ids = torch.randint(0, 10, (2, 7))
    ref = m(ids)
    other = (10 * 64 + 96 + 64 * 10) * 4  # embedding, up.bias, lm_head stay fp32
    n_up, n_down = 64 * 96, 96 * 64
    expect = {
        "fp32": other + 4 * (n_up + n_down),
        "bf16": other + 2 * (n_up + n_down),
        "int8": other + n_up + 4 * 96 + n_down + 4 * 64,
        "llm_int8": other + n_up + 4 * 96 + n_down + 4 * 64,
        "nf4": other + (n_up + n_down) // 2 + 4 * (n_up + n_down) // 64,
        "int4": other + (n_up + n_down) // 2 + 4 * (n_up + n_down) // 64,
    }
    assert Q.model_bytes(m) == expect["fp32"]
    w_up = m.up.weight.detach().clone()
    errs = {}
    for fmt in Q.FORMATS:
        qm, nb = Q.quantize_model(m, fmt)
        assert nb == expect[fmt], fmt
        with torch.no_grad():
            errs[fmt] = float((qm(ids) - ref).abs().max())
        assert torch.equal(m.up.weight, w_up)  # the original is untouched (a copy was quantized)
        if fmt == "bf16":
            assert torch.equal(qm.up.weight, m.up.weight.to(torch.bfloat16).float())
        if fmt == "int8":
            assert torch.equal(qm.down.weight, Q.absmax_dequantize(*Q.absmax_quantize(m.down.weight, dim=0)))
        if fmt == "nf4":
            w = m.up.weight.detach()
            assert torch.equal(qm.up.weight, Q.nf4_dequantize(*Q.nf4_quantize(w), 64, w.shape))
        if fmt == "llm_int8":
            assert isinstance(qm.up, Q.QuantizedLinearInt8) and isinstance(qm.lm_head, nn.Linear)
        assert torch.equal(qm.lm_head.weight, m.lm_head.weight)  # skipped by default
    assert errs["fp32"] == 0.0
    assert errs["bf16"] < errs["int8"] < errs["int4"]
    _, nb = Q.quantize_model(m, "nf4", skip=())
    assert nb == expect["nf4"] - 64 * 10 * 4 + 64 * 10 // 2 + 4 * 10


def test_quantize_model_bad_input():
    with pytest.raises(ValueError, match="unknown format"):
        Q.quantize_model(_Tiny(), "int3")
    with pytest.raises(TypeError, match="nn.Module"):
        Q.quantize_model(object(), "int8")
