"""labkit.quant on bad input (issue 16, "no silent failures"): one NaN or inf used to poison a whole tensor
or block without a word; now every quantizer refuses it, naming the argument."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import labkit.quant as Q


def _with(value: float, shape=(4, 64), at=(1, 5)) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x[at] = value
    return x


def test_one_inf_or_nan_used_to_ruin_the_round_trip() -> None:
    """What happened before (kept as the reason for the check): the scale is max|x|."""
    x = _with(float("inf"))
    amax = x.abs().amax()
    assert torch.isinf(amax) and torch.isnan(torch.round(x / (amax / 127)) * (amax / 127)).any()


@pytest.mark.parametrize("value, what", [(float("inf"), "0 NaN and 1 inf"), (float("nan"), "1 NaN and 0 inf"),
                                         (float("-inf"), "0 NaN and 1 inf")])
def test_quantizers_refuse_non_finite_values(value: float, what: str) -> None:
    x = _with(value)
    for fn in (lambda: Q.absmax_quantize(x), lambda: Q.absmax_quantize(x, dim=0),
               lambda: Q.absmax_quantize(x, group_size=16), lambda: Q.zeropoint_quantize(x)):
        with pytest.raises(ValueError, match=f"`x` holds {what} value"):
            fn()
    for fn in (lambda: Q.nf4_quantize(x), lambda: Q.fp4_quantize(x), lambda: Q.lut_quantize(x, Q.NF4_TABLE)):
        with pytest.raises(ValueError, match=f"`w` holds {what} value"):
            fn()
    with pytest.raises(ValueError, match="`absmax` holds"):
        Q.double_quantize(x.reshape(-1)[:300].abs())
    with pytest.raises(ValueError, match="`x` holds"):
        Q.int8_matmul_vectorwise(x, torch.randn(64, 3))
    lin = nn.Linear(64, 4)
    with torch.no_grad():
        lin.weight[2, 3] = value
    with pytest.raises(ValueError, match="holds"):
        Q.QuantizedLinearInt8(lin)
    with pytest.raises(ValueError, match="holds"):
        Q.quantize_model(nn.Sequential(lin), "nf4", skip=())


def test_inf_in_an_outlier_column_still_goes_through_the_float_path() -> None:
    """LLM.int8 routes |x| > threshold columns through a float matmul; only the quantized part must be finite."""
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    x[0, 2] = 1e4
    y = Q.int8_matmul_with_outliers(x, w)
    torch.testing.assert_close(y, x @ w, atol=0.1, rtol=0.02)
    x[1, 4] = float("nan")                                      # a NaN is never an "outlier": refused
    with pytest.raises(ValueError, match="`x` holds 1 NaN"):
        Q.int8_matmul_with_outliers(x, w)


def test_sizes_and_codes_are_checked() -> None:
    with pytest.raises(ValueError, match="`block_size` must be a positive int, got 0"):
        Q.quantize_model(nn.Sequential(nn.Linear(8, 8)), "nf4", block_size=0)   # used: ZeroDivisionError
    with pytest.raises(TypeError, match="`skip` must be a tuple"):
        Q.quantize_model(nn.Sequential(nn.Linear(8, 8)), "nf4", skip="lm_head")
    with pytest.raises(ValueError, match="`x` is empty"):
        Q.absmax_quantize(torch.zeros(0))
    with pytest.raises(ValueError, match=r"`codes` must be integers in \[0, 16\)"):
        Q.nf4_dequantize(torch.full((64,), 99, dtype=torch.uint8), torch.ones(1), 64, (8, 8))
    with pytest.raises(ValueError, match="`s2` has 3 scales"):
        Q.double_dequantize(torch.zeros(10, dtype=torch.int8), torch.ones(3), torch.zeros(()), 256)
    with pytest.raises(TypeError, match="`linear` must be an nn.Linear"):
        Q.QuantizedLinearInt8(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match=r"in_features=8"):
        Q.QuantizedLinearInt8(nn.Linear(8, 4))(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="threshold"):
        Q.outlier_columns(torch.zeros(2, 2), float("nan"))
    with pytest.raises(TypeError, match="`model` must be an nn.Module"):
        Q.model_bytes(3)
    with pytest.raises(TypeError, match="`word` must be an int"):
        Q.decode_bits(1.5, "fp16")
    with pytest.raises(TypeError, match="`x` must be a number"):
        Q.float_bits("0.1")
    # an empty batch still goes through an LLM.int8 layer (per-row scales of no rows)
    assert Q.QuantizedLinearInt8(nn.Linear(8, 4))(torch.zeros(0, 8)).shape == (0, 4)
