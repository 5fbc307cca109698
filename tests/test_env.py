"""The environment is what the course says it is: pins agree everywhere and are installed."""
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import yaml

from labkit.core.paths import ROOT
from labkit.course.doctor import pinned_requirements


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
    import shutil

    import pytest

    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: the CUDA build of torch and its nvidia-* packages belong here")
    names = {d.metadata["Name"].lower() for d in metadata.distributions()}
    assert not [n for n in names if n.startswith("nvidia-")]


def test_doctor_runs_and_reports_each_check():
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **NUMERICS_ENV}, timeout=120)
    lines = out.stdout.splitlines()
    for item in ("python", "pins", "torch", "tiktoken", "minilm", "offline", "numerics", "data"):
        assert any(l.split()[1:2] == [item] and l.split()[0] in ("OK", "FAIL") for l in lines), (item, out.stdout)
    assert out.returncode == 0, out.stdout


def test_cli_usage_errors():
    out = subprocess.run([sys.executable, "-m", "labkit", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr
    out = subprocess.run([sys.executable, "-m", "labkit", "student", "only-one"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


NUMERICS_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_numerics_env_is_the_same_for_make_nbval_and_execute():
    """Stored outputs only reproduce if every runner pins the same CPU code paths."""
    from labkit.course.execute import NOTEBOOK_ENV

    makefile = (ROOT / "Makefile").read_text()
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    for k, v in NUMERICS_ENV.items():
        assert f"export {k} := {v}" in makefile, k
        assert NOTEBOOK_ENV[k] == v, k
        assert f'os.environ.setdefault("{k}", "{v}")' in conftest, k


def test_torch_runs_the_pinned_kernels():
    """conftest sets the variables before torch is first imported, so they are in force here."""
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "ATEN_CPU_CAPABILITY": "default"})
    assert out.stdout.strip() == "DEFAULT", out.stderr  # the variable really steers the dispatch


def test_doctor_reports_failures_with_the_fix():
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=120)  # neither offline nor pinned
    fails = {l.split()[1]: l for l in out.stdout.splitlines() if l.startswith("FAIL")}
    assert set(fails) == {"offline", "numerics"}, out.stdout
    assert "export HF_HUB_OFFLINE=1" in fails["offline"] and "MKL_CBWR=COMPATIBLE" in fails["numerics"]
    assert out.returncode != 0 and "2 check(s) failed" in out.stdout
