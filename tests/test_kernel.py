"""The course kernel (labkit/course/kernel.py): its spec carries the pinned variables into the kernel whatever
environment starts it (JupyterLab, VS Code, nbval), and reports the language_info the notebooks store."""
import json
import os
import sys

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from labkit.core.paths import NOTEBOOKS, ROOT
from labkit.course.install_kernel import main_install_kernel
from labkit.course.kernel import (
    DISPLAY_NAME,
    KERNEL_NAME,
    LAUNCHER,
    NOTEBOOK_ENV,
    course_language_info,
    ensure_kernel,
    install_kernel,
    kernel_problems,
    notebook_metadata,
    set_notebook_kernel,
)

PROBE = ("import os, sys, json; print(json.dumps({'env': {k: os.environ.get(k) for k in %r}, "
         "'python': sys.executable, 'path0': sys.path[0], 'mine': __import__('mymod').X}))")


def _run_in_kernel(km: KernelManager, code: str) -> tuple[dict, str]:
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        info = kc.kernel_info(reply=True, timeout=60)["content"]
        out = []
        kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
        return info, "".join(out)
    finally:
        kc.stop_channels()


def test_the_kernel_carries_the_pins_and_reports_major_minor_python(tmp_path):
    """Started from a parent with none of the variables (a plain `jupyter lab`), the kernel has all of them,
    runs this environment's Python, imports from the notebook's folder, and reports Python 3.11 as "3.11"."""
    spec_dir = install_kernel(prefix=tmp_path / "prefix")
    assert sorted(p.name for p in spec_dir.iterdir()) == ["kernel.json", LAUNCHER, "logo-32x32.png",
                                                          "logo-64x64.png", "logo-svg.svg"]
    cwd = tmp_path / "notebooks"
    cwd.mkdir()
    (cwd / "mymod.py").write_text("X = 42\n")
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
    km.start_kernel(env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ATEN_CPU_CAPABILITY": "default"},
                    cwd=str(cwd))
    try:
        info, out = _run_in_kernel(km, PROBE % (list(NOTEBOOK_ENV),))
    finally:
        km.shutdown_kernel(now=True)
    got = json.loads(out)
    assert got["env"] == NOTEBOOK_ENV  # the spec's env wins over the parent's ATEN_CPU_CAPABILITY=default
    assert got["python"] == sys.executable and got["mine"] == 42
    assert got["path0"] != str(spec_dir)  # the launcher's folder is no import location
    assert info["language_info"] == course_language_info() == notebook_metadata()["language_info"]
    assert info["language_info"]["version"] == "%d.%d" % sys.version_info[:2]
    assert info["language_info"]["pygments_lexer"] == "ipython3"


def test_kernel_problems_name_what_is_wrong_and_the_fix(tmp_path):
    assert "not installed" in kernel_problems(None)[0] and "make setup" in kernel_problems(None)[0]
    spec_dir = install_kernel(prefix=tmp_path)
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert kernel_problems((spec_dir, spec)) == []
    no_pins = {**spec, "env": {k: v for k, v in spec["env"].items() if k != "MKL_CBWR"}}
    assert any("MKL_CBWR=COMPATIBLE" in p for p in kernel_problems((spec_dir, no_pins)))
    other = {**spec, "argv": ["/usr/bin/python3", *spec["argv"][1:]]}
    assert any("not this environment's Python" in p for p in kernel_problems((spec_dir, other)))
    (spec_dir / LAUNCHER).unlink()
    assert any(LAUNCHER in p for p in kernel_problems((spec_dir, spec)))


def test_ensure_kernel_refuses_a_stale_copy_that_jupyter_finds_first(tmp_path, monkeypatch):
    stale = tmp_path / "kernels" / KERNEL_NAME
    stale.mkdir(parents=True)
    (stale / "kernel.json").write_text(json.dumps({"argv": ["/usr/bin/python3"], "display_name": "old",
                                                   "language": "python", "env": {}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="--user"):
        ensure_kernel()
    monkeypatch.delenv("JUPYTER_PATH")
    assert ensure_kernel() == KERNEL_NAME  # the one `make setup` installed in this venv


def _old_style(path, tmp_path):
    """A copy of a course notebook as it was before the course kernel: the python3 kernelspec."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb["metadata"]["language_info"] = {"file_extension": ".py", "mimetype": "text/x-python", "name": "python"}
    out = tmp_path / path.name
    out.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


@pytest.mark.parametrize("name", ["00_start_here.ipynb", "08_decoding_and_kv_cache.ipynb"])
def test_set_notebook_kernel_changes_only_the_metadata(tmp_path, name):
    path = _old_style(NOTEBOOKS / name, tmp_path)
    before = path.read_text(encoding="utf-8")
    assert set_notebook_kernel(path) is True
    after = path.read_text(encoding="utf-8")
    old, new = json.loads(before), json.loads(after)
    assert new["metadata"]["kernelspec"] == {"display_name": DISPLAY_NAME, "language": "python", "name": KERNEL_NAME}
    assert new["cells"] == old["cells"] and {k: v for k, v in new.items() if k != "metadata"} == \
        {k: v for k, v in old.items() if k != "metadata"}
    cells_text = lambda text: text.split('\n "metadata": {')[0]  # noqa: E731  (cells come first in the file)
    assert cells_text(after) == cells_text(before)  # byte for byte
    assert set_notebook_kernel(path) is False and path.read_text(encoding="utf-8") == after
    (tmp_path / "x.ipynb").write_text('{"nbformat": 4}')
    with pytest.raises(ValueError, match="path"):
        set_notebook_kernel(tmp_path / "x.ipynb")


def test_install_kernel_command(tmp_path, capsys):
    path = _old_style(NOTEBOOKS / "00_start_here.ipynb", tmp_path)
    assert main_install_kernel(["--notebooks", str(path)]) == 0
    assert capsys.readouterr().out.startswith("updated")
    assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == KERNEL_NAME
    assert main_install_kernel(["--notebooks"]) == 2 and main_install_kernel(["--nope"]) == 2
    assert "usage" in capsys.readouterr().err


def test_makefile_setup_installs_the_kernel_and_make_lab_uses_it():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-m labkit.course.install_kernel" in script
    makefile = (ROOT / "Makefile").read_text()
    assert "--MappingKernelManager.default_kernel_name=$(KERNEL)" in makefile
    assert os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"  # conftest: this process is pinned too
