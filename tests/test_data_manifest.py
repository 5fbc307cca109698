from labkit.core.manifest import compute_manifest, verify_manifest
from labkit.core.paths import DATA


def test_manifest_matches_files():
    assert verify_manifest() == []


def test_data_is_small():
    total = sum(n for _, n in compute_manifest().values())
    assert total < 50 * 2**20, f"data/ holds {total / 2**20:.1f} MiB; the budget is 50 MiB"


def test_data_readme_states_licenses():
    text = (DATA / "README.md").read_text()
    assert "License" in text or "license" in text
