"""README's results tables are the shipped result files, verbatim (issue 15: "README's results tables match
them"): ``labkit.experiments.tables`` renders data/finetune/results.json and data/preferences/results.json."""
from __future__ import annotations

import copy
import json

from labkit.core.paths import ROOT
from labkit.experiments import finetune as ft
from labkit.experiments import preferences as pref
from labkit.experiments import tables

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_finetune_table_is_in_the_readme():
    assert tables.finetune_table() in README, "regenerate with `python -m labkit.experiments.tables`"


def test_preferences_table_is_in_the_readme():
    assert tables.preferences_table() in README, "regenerate with `python -m labkit.experiments.tables`"


def test_a_changed_number_changes_the_table():
    r = ft.load_results()
    bumped = copy.deepcopy(r)
    bumped["methods"]["lora_r8"]["exact_match"] += 0.001
    assert tables.finetune_table(bumped) != tables.finetune_table(r)
    p = json.loads(pref.RESULTS_PATH.read_text())
    bumped = copy.deepcopy(p)
    bumped["ppo"]["kl"] += 0.01
    assert tables.preferences_table(bumped) != tables.preferences_table(p)
