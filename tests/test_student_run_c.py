"""Whole learner copies run top to bottom with nothing filled in (Run All never stops), share 3 of 3
(tests/learnerrun.py deals the chapters round-robin so that the files run side by side)."""
import pytest
from learnerrun import run_whole_learner_copy, share


@pytest.mark.parametrize("name", share(2))
def test_whole_learner_copy_runs_and_reports_the_stubs(name, learner_copies, monkeypatch):
    run_whole_learner_copy(name, learner_copies, monkeypatch)
