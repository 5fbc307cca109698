"""Hidden tests of chapter 10's lab tasks: per-channel absmax int8 and block-wise NF4 quantize / dequantize.

References, bitsandbytes-free: PyTorch's ``PerChannelMinMaxObserver`` (symmetric, range [-127, 127]) and
``fake_quantize_per_channel_affine`` for int8; for NF4 the definition (the code of a value is the index of the
nearest table level after dividing its block by the block's absmax), labkit's ``lut_quantize`` as a worked
reference on random shapes with a partial last block, and the mean errors the chapter proves against
bitsandbytes' own test suite (0.072798 at block 64, 0.076831 at block 128 on a 1024×1024 N(0, 1) matrix).
"""
from __future__ import annotations

import math

import torch
from torch.ao.quantization import PerChannelMinMaxObserver

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.quant import FP4_TABLE, NF4_TABLE, lut_quantize

__all__ = ["TASKS"]


def _n(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


# ---- 10.A quantize_per_channel / dequantize_per_channel -----------------------------------------------------
def _weight(g: torch.Generator) -> torch.Tensor:
    out, inp = _n(g, 3, 40), _n(g, 5, 70)
    return torch.randn(out, inp, generator=g) * torch.exp(torch.randn(out, 1, generator=g))  # rows of varied size


def _torch_qparams(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                   quant_min=-127, quant_max=127)
    obs(w)
    scale, zp = obs.calculate_qparams()
    return scale, zp.to(torch.int32)


def _pc_torch(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        w = _weight(g)
        q, scale = L.quantize_per_channel(w)
        exact((q.dtype, tuple(q.shape)), (torch.int8, tuple(w.shape)), quiet=True, name="codes: int8, shape of w")
        exact((scale.dtype, tuple(scale.shape)), (torch.float32, (w.shape[0], 1)), quiet=True,
              name="scale: float32, shape (out, 1)")
        s_ref, zp = _torch_qparams(w)
        close(scale.squeeze(1), s_ref, atol=0, rtol=1e-6, quiet=True,
              name=f"scales of a {tuple(w.shape)} weight == torch PerChannelMinMaxObserver (symmetric, ±127)")
        fake = torch.fake_quantize_per_channel_affine(w, s_ref, zp, 0, -127, 127)
        codes_ref = torch.round(fake / s_ref[:, None])
        diff = (q.float() - codes_ref).abs()
        frac = (w / s_ref[:, None]).abs() % 1
        assert bool((diff[diff > 0] <= 1).all()) and bool(((frac - 0.5).abs()[diff > 0] < 1e-4).all()), \
            f"{int((diff > 0).sum())} codes differ from torch's fake quantization (beyond half-way ties)"


def _pc_roundtrip(L: Learner, g: torch.Generator) -> None:
    w = _weight(g)
    q, scale = L.quantize_per_channel(w)
    w_hat = L.dequantize_per_channel(q, scale)
    exact((w_hat.dtype, tuple(w_hat.shape)), (torch.float32, tuple(w.shape)), quiet=True, name="ŵ: float32, shape of w")
    s_ref, zp = _torch_qparams(w)
    close(w_hat, torch.fake_quantize_per_channel_affine(w, s_ref, zp, 0, -127, 127), atol=1e-6, rtol=1e-6,
          quiet=True, name="round trip == torch.fake_quantize_per_channel_affine")
    assert bool(((w - w_hat).abs() <= scale / 2 + 1e-6).all()), "some |w − ŵ| exceed scale/2 of their row"
    exact(q.abs().amax(dim=1).tolist(), [127] * w.shape[0], quiet=True,
          name="the largest |w| of every row gets the code ±127 (the whole int8 range is used)")


def _pc_zero_row(L: Learner, g: torch.Generator) -> None:
    w = _weight(g)
    w[1] = 0.0
    q, scale = L.quantize_per_channel(w)
    w_hat = L.dequantize_per_channel(q, scale)
    assert bool(torch.isfinite(scale).all()) and float(scale[1]) > 0, "an all-zero row needs a positive scale (no division by 0)"
    exact(w_hat[1], torch.zeros(w.shape[1]), quiet=True, name="an all-zero row dequantizes to exact zeros")
    keep = torch.tensor([i for i in range(w.shape[0]) if i != 1])
    s_ref, _ = _torch_qparams(w[keep])
    close(scale[keep].squeeze(1), s_ref, atol=0, rtol=1e-6, quiet=True, name="the other rows keep their own scales")


# ---- 10.B nf4_quantize_blocks / nf4_dequantize_blocks --------------------------------------------------------
def _nf4_labkit(L: Learner, g: torch.Generator) -> None:
    for shape, block in [((_n(g, 3, 30), _n(g, 5, 50)), 64), ((_n(g, 50, 90),), 16), ((3, 7, 11), 32)]:
        w = torch.randn(shape, generator=g) * 2
        codes, absmax = L.nf4_quantize_blocks(w, NF4_TABLE, block)
        n_blocks = math.ceil(w.numel() / block)
        exact((codes.dtype, codes.numel(), absmax.numel()), (torch.uint8, n_blocks * block, n_blocks), quiet=True,
              name=f"{tuple(shape)}, block {block}: uint8 codes for {n_blocks} zero-padded blocks, one absmax each")
        c_ref, a_ref = lut_quantize(w, NF4_TABLE, block)
        close(absmax, a_ref, atol=0, quiet=True, name=f"{tuple(shape)}, block {block}: absmax per block")
        exact(codes, c_ref, quiet=True, name=f"{tuple(shape)}, block {block}: codes")


def _nf4_nearest(L: Learner, g: torch.Generator) -> None:
    w = torch.randn(40, 48, generator=g)
    codes, absmax = L.nf4_quantize_blocks(w, NF4_TABLE, 64)
    x = (w.reshape(-1, 64) / absmax[:, None]).reshape(-1)
    dist = (x[:, None] - NF4_TABLE[None, :]).abs()
    close(dist.gather(1, codes.long()[:, None]).squeeze(1), dist.amin(1), atol=1e-7, quiet=True,
          name="every code is the nearest NF4 level to w / absmax of its block")
    ft = L.nf4_quantize_blocks(w, FP4_TABLE, 64)[0]
    exact(ft, lut_quantize(w, FP4_TABLE, 64)[0], quiet=True, name="with another table (FP4) the same rule holds")


def _nf4_roundtrip(L: Learner, g: torch.Generator) -> None:
    shape, block = (_n(g, 5, 17), _n(g, 9, 23)), 32
    w = torch.randn(shape, generator=g)
    codes, absmax = L.nf4_quantize_blocks(w, NF4_TABLE, block)
    w_hat = L.nf4_dequantize_blocks(codes, absmax, NF4_TABLE, block, shape)
    exact(tuple(w_hat.shape), shape, quiet=True, name="ŵ has the original shape (padding dropped)")
    ref = (NF4_TABLE[codes.long()].view(-1, block) * absmax[:, None]).reshape(-1)[:w.numel()].reshape(shape)
    close(w_hat, ref, atol=1e-7, quiet=True, name="ŵ = table[code] · absmax of its block")
    z = torch.zeros(2 * block)
    z[block:] = torch.randn(block, generator=g)
    cz, az = L.nf4_quantize_blocks(z, NF4_TABLE, block)
    back = L.nf4_dequantize_blocks(cz, az, NF4_TABLE, block, (2 * block,))
    assert bool(torch.isfinite(back).all()), "an all-zero block gives NaN: divide it by 1, not by its absmax 0"
    exact(back[:block], torch.zeros(block), quiet=True, name="an all-zero block comes back as zeros")


def _nf4_bnb_error(L: Learner, g: torch.Generator) -> None:
    A = torch.randn(1024, 1024, generator=g)
    for block, bnb in [(64, 0.072798), (128, 0.076831)]:
        codes, absmax = L.nf4_quantize_blocks(A, NF4_TABLE, block)
        err = (L.nf4_dequantize_blocks(codes, absmax, NF4_TABLE, block, A.shape) - A).abs().mean().item()
        close(err, bnb, rtol=0.02, atol=0, quiet=True,
              name=f"mean |error| on a 1024×1024 N(0,1) matrix, block {block}, ≈ bitsandbytes' {bnb} (2%)")


_FORBID_PC = Forbidden(
    patch=((torch, "quantize_per_channel", "torch.quantize_per_channel"),
           (torch, "fake_quantize_per_channel_affine", "torch.fake_quantize_per_channel_affine"),
           (torch, "fake_quantize_per_tensor_affine", "torch.fake_quantize_per_tensor_affine")),
    objects=((PerChannelMinMaxObserver, "torch PerChannelMinMaxObserver"),),
    packages=("labkit", "bitsandbytes"))
_FORBID_NF4 = Forbidden(packages=("labkit", "bitsandbytes"))

TASKS = (
    Task("10.A", "per-channel absmax int8", ("quantize_per_channel", "dequantize_per_channel"), (
        Check("scales and codes == torch's per-channel symmetric quantization (random weights)", 2, _pc_torch),
        Check("round trip == torch fake quantization, within scale/2, full int8 range", 1, _pc_roundtrip),
        Check("an all-zero row: no NaN, zeros back, other rows unaffected", 1, _pc_zero_row),
    ), _FORBID_PC),
    Task("10.B", "NF4 block quantize / dequantize", ("nf4_quantize_blocks", "nf4_dequantize_blocks"), (
        Check("codes and absmax, random shapes with a partial last block", 2, _nf4_labkit),
        Check("each code is the nearest level; another table works too", 1, _nf4_nearest),
        Check("round trip: shape restored, padding dropped, all-zero block", 1, _nf4_roundtrip),
        Check("mean error on N(0,1) == bitsandbytes' published values", 1, _nf4_bnb_error),
    ), _FORBID_NF4),
)
