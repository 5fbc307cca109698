import pytest

from labkit.core import manifest as M
from labkit.core.manifest import compute_manifest, verify_manifest
from labkit.core.paths import DATA
from labkit.course import cli


def test_manifest_matches_files():
    assert verify_manifest() == []


def test_data_is_small():
    total = sum(n for _, n in compute_manifest().values())
    assert total < 50 * 2**20, f"data/ holds {total / 2**20:.1f} MiB; the budget is 50 MiB"


def test_data_readme_states_licenses():
    text = (DATA / "README.md").read_text()
    assert "License" in text or "license" in text


# --------------------------------------------------------------------------- no silent failures (issue 16)

@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A small data/ with a correct MANIFEST; labkit's DATA points at it for the test."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "c.json").write_text("{}\n")
    M.write_manifest(root)
    monkeypatch.setattr(M, "DATA", root)
    monkeypatch.setattr(cli, "DATA", root)
    return root


def test_manifest_cli_checks_by_default_and_writes_only_when_asked(data_dir, capsys):
    before = (data_dir / "MANIFEST").read_text()
    assert cli.main(["manifest"]) == 0 and "all 3 files match" in capsys.readouterr().out
    (data_dir / "a.txt").write_text("alphA\n")                       # one flipped byte, same size
    (data_dir / "c.json").unlink()
    (data_dir / "new.txt").write_text("x")
    assert cli.main(["manifest"]) == 1                                # a check: reports, exit 1 ...
    out = capsys.readouterr().out
    assert "changed   a.txt" in out and "missing   c.json" in out and "unlisted  new.txt" in out
    assert "--write" in out
    assert (data_dir / "MANIFEST").read_text() == before              # ... and writes nothing
    assert M.verify_manifest() != []                                  # so doctor keeps failing
    assert cli.main(["manifest", "--write"]) == 0                     # writing is explicit, with the diff
    out = capsys.readouterr().out
    assert "3 change(s)" in out and "changed   a.txt" in out
    assert M.verify_manifest() == [] and cli.main(["manifest"]) == 0
    assert cli.main(["manifest", "--force"]) == 2


def test_manifest_malformed_line_names_the_line(data_dir, capsys):
    lines = (data_dir / "MANIFEST").read_text().splitlines()
    lines[1] = lines[1].replace("  ", " ", 1)                          # one separator lost
    (data_dir / "MANIFEST").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"MANIFEST, line 2 is malformed"):
        M.read_manifest()
    problems = M.verify_manifest()
    assert len(problems) == 1 and "line 2" in problems[0]
    assert cli.main(["manifest"]) == 1 and "line 2 is malformed" in capsys.readouterr().err
    assert cli.main(["manifest", "--write"]) == 0 and M.verify_manifest() == []


def test_manifest_missing_is_one_clear_message(data_dir, capsys):
    (data_dir / "MANIFEST").unlink()
    problems = M.verify_manifest()
    assert len(problems) == 1 and "MANIFEST is missing" in problems[0] and "--write" in problems[0]
    with pytest.raises(FileNotFoundError, match="manifest --write"):
        M.read_manifest()
    assert cli.main(["manifest"]) == 1 and "MANIFEST is missing" in capsys.readouterr().err
    assert cli.main(["manifest", "--write"]) == 0 and M.verify_manifest() == []


def test_verify_data_file(data_dir, tmp_path):
    assert M.verify_data_file(data_dir / "sub" / "b.bin", "make data") is True
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"x")
    assert M.verify_data_file(outside, "make data") is False           # not under data/: nothing to check
    (data_dir / "extra.bin").write_bytes(b"x")
    assert M.verify_data_file(data_dir / "extra.bin", "make data") is False   # not listed
    b = bytearray((data_dir / "sub" / "b.bin").read_bytes())
    b[100] ^= 0x01                                                      # one flipped bit
    (data_dir / "sub" / "b.bin").write_bytes(bytes(b))
    with pytest.raises(ValueError, match=r"b\.bin does not match its sha256.*`make data`"):
        M.verify_data_file(data_dir / "sub" / "b.bin", "make data")
    (data_dir / "sub" / "b.bin").write_bytes(bytes(b[:50]))             # truncated
    with pytest.raises(ValueError, match=r"b\.bin has 50 bytes but data/MANIFEST lists 256"):
        M.verify_data_file(data_dir / "sub" / "b.bin", "make data")
