import random

import numpy as np
import pytest
import torch

from labkit.core import check, repro


def test_close_prints_one_line_and_returns_max_diff(capsys):
    d = check.close(torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 2.0 + 1e-7], dtype=torch.float64), name="demo")
    assert capsys.readouterr().out == "✓ demo (max |Δ| < 1e-06)\n"
    assert 0 < d < 1e-6


def test_close_reports_index_of_worst_element():
    a = torch.zeros(2, 3)
    b = a.clone()
    b[1, 2] = 0.5
    b[0, 1] = 0.1
    with pytest.raises(AssertionError, match=r"max \|Δ\| = 5\.000e-01 at index \(1, 2\)"):
        check.close(a, b, name="x", quiet=True)


def test_close_rejects_shape_mismatch_and_bad_tolerance():
    with pytest.raises(ValueError, match="shape mismatch"):
        check.close(torch.zeros(3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="atol"):
        check.close(torch.zeros(3), torch.zeros(3), atol=-1)
    with pytest.raises(TypeError, match="actual"):
        check.close("abc", torch.zeros(3))


def test_close_rtol_nan_inf_and_mixed_types(capsys):
    check.close(np.array([100.0]), torch.tensor([100.5]), atol=0, rtol=1e-2, quiet=True)
    with pytest.raises(AssertionError):
        check.close(np.array([100.0]), torch.tensor([102.0]), atol=0, rtol=1e-2, quiet=True)
    check.close(torch.tensor([float("nan"), float("inf")]), torch.tensor([float("nan"), float("inf")]), quiet=True)
    with pytest.raises(AssertionError, match="NaN"):
        check.close(torch.tensor([float("nan")]), torch.tensor([0.0]), quiet=True)
    with pytest.raises(AssertionError):
        check.close(torch.tensor([float("inf")]), torch.tensor([-float("inf")]), quiet=True)
    assert check.close(3, 3.0) == 0.0
    check.close(torch.tensor([1, 2]), [1, 2], atol=0)
    assert "exactly equal" in capsys.readouterr().out


def test_exact_and_exercise(capsys):
    check.exact(3, 3, name="three")
    with pytest.raises(AssertionError, match="got 3, expected 4"):
        check.exact(3, 4)
    assert check.exercise("E1", lambda: check.close(1.0, 1.0, quiet=True))

    def not_done():
        raise NotImplementedError("use max")
    assert not check.exercise("E2", not_done)
    assert not check.exercise("E3", lambda: check.close(1.0, 2.0, quiet=True))
    assert not check.exercise("E4", lambda: 1 / 0)
    out = capsys.readouterr().out.splitlines()
    assert out == ["✓ three", "✓ E1: passed", "✗ E2: not implemented yet (hint: use max)",
                   out[3], "✗ E4: your code raised ZeroDivisionError: division by zero"]
    assert out[3].startswith("✗ E3: wrong answer: ")
    with pytest.raises(TypeError, match="callable"):
        check.exercise("E5", 3)


def test_seed_everything_is_reproducible():
    was_det, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        repro.seed_everything(123)
        assert torch.are_deterministic_algorithms_enabled()          # turned on by default
        a = (torch.randn(3), np.random.rand(2), [random.random() for _ in range(3)])
        repro.seed_everything(123)
        b = (torch.randn(3), np.random.rand(2), [random.random() for _ in range(3)])
        assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
        repro.seed_everything(124)
        assert [random.random() for _ in range(3)] != a[2]            # the seed really drives `random`
        torch.use_deterministic_algorithms(False)
        repro.seed_everything(123, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)
    with pytest.raises(TypeError, match="seed"):
        repro.seed_everything(1.5)
    with pytest.raises(ValueError, match="seed"):
        repro.seed_everything(-1)
