"""labkit's architecture is a checked contract: layers without upward imports, small files, short functions.

The layers are declared in pyproject.toml (``[tool.importlinter]``); ``make lint`` (part of ``make test``)
runs import-linter on them. These tests run it too, show that it really fails on an upward import, and
check the size rules that import-linter does not know about.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABKIT = ROOT / "labkit"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
SOURCES = sorted(p for p in LABKIT.rglob("*.py") if "__pycache__" not in p.parts)


def run_lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "pyproject.toml"], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_layers_contract_is_kept():
    r = run_lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_layers_cover_every_subpackage():
    """A new subpackage must get a place in the contract, or import-linter would not check it."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    named = {name.strip() for layer in cfg["layers"] for name in layer.split("|")}
    packages = {f"labkit.{p.name}" for p in LABKIT.iterdir() if (p / "__init__.py").exists()}
    assert packages == named


@pytest.mark.parametrize("importer, imported", [
    ("core/paths.py", "labkit.course.doctor"),          # the lowest layer reaching for the highest
    ("blocks/norms.py", "labkit.model"),                 # chapter 05 needing chapter 07
    ("train/loop.py", "labkit.quant"),                   # two independent layers (train | quant)
])
def test_contract_fails_on_a_forbidden_import(tmp_path, importer, imported):
    shutil.copytree(LABKIT, tmp_path / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "labkit" / importer
    path.write_text(path.read_text() + f"\nimport {imported}  # an illegal import, added by the test\n")
    r = run_lint_imports(tmp_path)
    assert r.returncode != 0
    assert "BROKEN" in r.stdout and imported.split(".")[1] in r.stdout


def test_no_labkit_file_over_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}, f"split these files (limit {MAX_FILE_LINES} lines): {long}"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_long_functions_say_why():
    """No function over 60 lines unless its docstring explains it with a line starting "Long because"."""
    offenders = []
    for p in SOURCES:
        for fn in _functions(ast.parse(p.read_text())):
            n = fn.end_lineno - fn.lineno + 1
            doc = ast.get_docstring(fn) or ""
            if n > MAX_FUNCTION_LINES and "Long because" not in doc:
                offenders.append(f"{p.relative_to(ROOT)}:{fn.lineno} {fn.name} ({n} lines)")
    assert offenders == []


def _labkit_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "labkit"
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "labkit" for a in node.names)
    return False


def test_labkit_imports_are_at_module_level():
    """Imports of labkit's own modules sit at the top of a module, where import-linter and readers see them:
    never inside a function, never behind try/except ImportError."""
    offenders = []
    for p in SOURCES:
        tree = ast.parse(p.read_text())
        for fn in _functions(tree):
            offenders += [f"{p.relative_to(ROOT)}:{n.lineno} in {fn.name}" for n in ast.walk(fn) if _labkit_import(n)]
        for t in (n for n in ast.walk(tree) if isinstance(n, ast.Try)):
            if any(_labkit_import(n) for stmt in t.body for n in ast.walk(stmt)):
                offenders.append(f"{p.relative_to(ROOT)}:{t.lineno} try/except around a labkit import")
    assert offenders == []


def test_no_dist_folder_and_no_skipped_labkit_imports():
    assert not (LABKIT / "dist").exists(), "labkit/dist is the name build tools give their output; use labkit/parallel"
    needle = "importorskip(" + '"labkit'
    skips = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py") if needle in p.read_text()]
    assert skips == [], "a broken labkit import must fail a test, not skip it"
