"""The environment is what the course says it is: pins agree everywhere and are installed."""
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import yaml

from labkit.doctor import pinned_requirements
from labkit.paths import ROOT


def _pyproject_reqs():
    d = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return d["project"]["dependencies"] + d["project"]["optional-dependencies"]["test"]


def test_every_dependency_is_pinned_exactly():
    loose = [r for r in _pyproject_reqs() if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^\s;+]*", r)]
    assert loose == [], f"pin these exactly (name==version): {loose}"
    assert "torch==2.13.0" in _pyproject_reqs()


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1
    assert sorted(pip_lists[0]) == sorted(_pyproject_reqs())
    assert "python=3.11" in env["dependencies"]


def test_pins_are_installed():
    for name, want in pinned_requirements().items():
        assert metadata.version(name).split("+")[0] == want, name


def test_no_cuda_packages_crept_in():
    names = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert not [n for n in names if n.startswith("nvidia-")]


def test_doctor_runs_and_reports_each_check():
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    lines = out.stdout.splitlines()
    for item in ("python", "pins", "torch", "tiktoken", "minilm", "offline", "data"):
        assert any(l.split()[1:2] == [item] and l.split()[0] in ("OK", "FAIL") for l in lines), (item, out.stdout)
    assert out.returncode == 0, out.stdout


def test_cli_usage_errors():
    out = subprocess.run([sys.executable, "-m", "labkit", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr
    out = subprocess.run([sys.executable, "-m", "labkit", "student", "only-one"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
