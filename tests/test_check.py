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
    assert out[:3] == ["✓ three", "✓ E1: passed", "✗ E2: not implemented yet (hint: use max)"]
    assert out[3] == "✗ E3: wrong answer: got 1, expected 2 (|Δ| = 1.000e+00); tolerance atol=1e-06, rtol=0"
    assert out[4].startswith("✗ E4: your code raised ZeroDivisionError: division by zero — at test_check.py, line ")
    assert out[4].endswith("`assert not check.exercise(\"E4\", lambda: 1 / 0)`")
    with pytest.raises(TypeError, match="callable"):
        check.exercise("E5", 3)


def test_success_lines_are_unchanged(capsys):
    """Every notebook prints these lines and nbval compares them byte for byte."""
    check.close(torch.ones(3), torch.ones(3), name="a")
    check.close(torch.ones(3), torch.ones(3))
    check.close(torch.ones(3), torch.ones(3), atol=0, name="b")
    check.close(torch.ones(3), torch.ones(3) + 1e-3, atol=0, rtol=1e-2, name="c")
    check.exact(torch.ones(2), torch.ones(2))
    check.exact([1, 2], [1, 2], name="d")
    check.close(torch.zeros(0), torch.zeros(0), name="e")
    assert capsys.readouterr().out.splitlines() == [
        "✓ a (max |Δ| < 1e-06)", "✓ values match (max |Δ| < 1e-06)", "✓ b (exactly equal)", "✓ c (atol=0, rtol=0.01)",
        "✓ values are equal (exactly equal)", "✓ d", "✓ e (empty)"]


def _message(test) -> str:
    """What exercise() prints for a failing test, without the label."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert not check.exercise("E", test)
    return buf.getvalue().strip().removeprefix("✗ E: ")


def test_wrong_answer_names_what_differs_without_a_misleading_label():
    msg = _message(lambda: check.exact(torch.eye(3), torch.zeros(3, 3), quiet=True))
    assert msg == ("wrong answer: 3 of 9 values differ: max |Δ| = 1.000e+00 at index (0, 0) (actual 1, expected 0); "
                   "exact comparison")
    assert "values are equal" not in msg and "values match" not in msg
    named = _message(lambda: check.close(torch.zeros(2, 3), torch.full((2, 3), 0.5), name="my mask", quiet=True))
    assert named.startswith("wrong answer: my mask: 6 of 6 values differ: max |Δ| = 5.000e-01 at index (0, 0)")


def test_shape_mismatch_is_a_wrong_answer_and_still_a_value_error():
    msg = _message(lambda: check.close(torch.zeros(3), torch.zeros(1, 3), quiet=True))
    assert msg == "wrong answer: shape mismatch: actual (3,) vs expected (1, 3) (close() does not broadcast: reshape or index one side)"
    assert "your code raised" not in msg and "values match" not in msg
    with pytest.raises(ValueError, match="shape mismatch"):   # callers that caught ValueError still do
        check.close(torch.zeros(3), torch.zeros(1, 3))


def test_exact_refuses_an_int_mask_against_a_bool_mask():
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    with pytest.raises(AssertionError, match=r"dtype mismatch: actual torch.int64 vs expected torch.bool"):
        check.exact(causal.long(), causal, quiet=True)
    with pytest.raises(AssertionError, match="dtype mismatch"):
        check.exact(causal, causal.float(), quiet=True)
    check.exact(causal.clone(), causal, quiet=True)             # bool vs bool still passes
    check.close(causal.float(), causal.long(), quiet=True)       # a tolerance check compares values only
    with pytest.raises(AssertionError, match="a bool and a number"):
        check.exact(1, True, quiet=True)
    check.exact(np.bool_(True), True, quiet=True)                # numpy's bool is a bool


def test_exact_names_the_first_difference_of_lists_and_dicts():
    with pytest.raises(AssertionError, match=r"first difference at index 2: got 3, expected 5$"):
        check.exact([1, 2, 3, 4], [1, 2, 5, 4], quiet=True)
    with pytest.raises(AssertionError, match=r"length 2, expected 3"):
        check.exact([1, 2], [1, 2, 3], quiet=True)
    with pytest.raises(AssertionError, match=r"1 missing key\(s\), e.g. \(4, 4\); 1 wrong value\(s\), e.g. \[\(2, 3\)\] = 1, expected 2"):
        check.exact({(1, 2): 3, (2, 3): 1}, {(1, 2): 3, (2, 3): 2, (4, 4): 1}, quiet=True)


def _learner_split_heads(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2).view(B, T, D)  # view of a transposed tensor fails


def test_learner_error_shows_their_own_line():
    msg = _message(lambda: _learner_split_heads(torch.zeros(2, 3, 8), 4))
    assert msg.startswith("your code raised RuntimeError: view size is not compatible")
    assert msg.endswith("— at test_check.py, line %d: `return x.view(B, T, n_heads, D // n_heads).transpose(1, 2).view(B, T, D)  "
                        "# view of a transposed tensor fails`" % (_learner_split_heads.__code__.co_firstlineno + 2))
    # an error inside a library (here torch) still points at the learner's line that called it
    assert "site-packages" not in msg and "labkit" not in msg


def test_learner_returning_none_is_named():
    def forgot_return(x):
        x + 1
    msg = _message(lambda: check.close(forgot_return(torch.ones(2))[0], 1.0))
    assert "your code raised TypeError" in msg and "did your function return None?" in msg


def test_an_assert_in_learner_code_is_a_wrong_answer_with_its_line():
    def strict(x):
        assert x > 0, "x must be positive"
        return x
    msg = _message(lambda: strict(-1))
    assert msg.startswith("wrong answer: x must be positive — at test_check.py, line ")
    assert msg.endswith('`assert x > 0, "x must be positive"`')


def test_describe_failure_prefers_the_check_verdict():
    try:
        check.close(torch.ones(2), torch.zeros(2), name="ones", quiet=True)
    except AssertionError as e:
        assert check.describe_failure(e).startswith("wrong answer: ones: 2 of 2 values differ")
        assert " — at " not in check.describe_failure(e)   # the verdict itself has no learner line


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
