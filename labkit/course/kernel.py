"""The course kernel: a named Jupyter kernel whose spec carries the pinned environment.

Stored outputs reproduce only with the pinned CPU code paths and offline flags (:data:`NOTEBOOK_ENV`; README,
*Reproducible numbers*). The Makefile exports them, but JupyterLab, VS Code or a plain ``jupyter lab`` start a
kernel from its *kernel spec*, not from make. So the course installs its own kernel, ``llm-internals``, whose
``kernel.json`` names this environment's Python and carries the variables in its ``env`` (Jupyter puts them
over the inherited environment when it starts the kernel). Every notebook names it in its metadata, and
``make execute``, nbval (``--nbval-kernel-name``) and the lab all run it.
``python -m labkit.course.install_kernel`` installs it (`make setup` does) and retargets notebooks.

The kernel is IPython's, started by a small launcher that reports the Python version as ``3.11`` instead of
``3.11.7``: JupyterLab copies the kernel's ``language_info`` into the notebook when it opens it, so a patch
version in it would make a notebook opened on another 3.11 differ from the committed file.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import ipykernel
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelspec import get_kernel_dict
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_core.paths import jupyter_data_dir

from labkit.core.io import atomic_write_json, atomic_write_text

__all__ = ["KERNEL_NAME", "DISPLAY_NAME", "NOTEBOOK_ENV", "LAUNCHER", "kernel_spec", "kernel_dir",
           "install_kernel", "find_kernel", "kernel_problems", "ensure_kernel", "course_language_info",
           "notebook_metadata", "set_notebook_kernel"]

KERNEL_NAME = "llm-internals"
DISPLAY_NAME = "Python 3 (LLM Internals)"

#: Environment every notebook runs in: the course kernel's ``env``; `make execute` and the grader set it too.
NOTEBOOK_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    "OMP_WAIT_POLICY": "passive",
    # identical floats on AVX2 and AVX-512 CPUs, Intel and AMD (the Makefile says why)
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}

LAUNCHER = "launch_kernel.py"
_LAUNCHER_SOURCE = '''\
"""The course kernel, written by `python -m labkit.course.install_kernel` (labkit/course/kernel.py).

IPython's kernel, reporting the Python version as major.minor: JupyterLab copies language_info into a
notebook it opens, so "3.11.7" vs "3.11.9" would change committed notebooks.
"""
import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # as ipykernel_launcher: IPython puts the notebook's folder first instead

from ipykernel.ipkernel import IPythonKernel  # noqa: E402
from ipykernel.kernelapp import IPKernelApp  # noqa: E402


class CourseKernel(IPythonKernel):
    language_info = {**IPythonKernel.language_info, "version": "%d.%d" % sys.version_info[:2]}


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=CourseKernel)
'''


def kernel_spec(spec_dir: str | Path, python: str | None = None) -> dict[str, Any]:
    """The ``kernel.json`` of the course kernel installed in ``spec_dir``, started by ``python`` (default: this
    interpreter, as ``sys.executable`` names it, so a venv's Python stays the venv's). IPython's own spec
    (debugger, transport encryption, protocol version), with the launcher, the course's name and the env."""
    spec = get_kernel_dict()
    spec.update({
        "argv": [python or sys.executable, "-Xfrozen_modules=off", str(Path(spec_dir) / LAUNCHER),
                 "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "env": dict(NOTEBOOK_ENV),
        "interrupt_mode": "signal",
    })
    return spec


def kernel_dir(*, prefix: str | Path | None = None, user: bool = False) -> Path:
    """Where the kernel spec goes: ``<prefix>/share/jupyter/kernels/llm-internals`` (default prefix: this
    environment, ``sys.prefix``), or this user's Jupyter data folder with ``user=True``."""
    if user:
        return Path(jupyter_data_dir()) / "kernels" / KERNEL_NAME
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def install_kernel(*, prefix: str | Path | None = None, user: bool = False, python: str | None = None) -> Path:
    """Write the course kernel (``kernel.json``, its launcher, IPython's logos); returns its folder.
    Idempotent: running it again rewrites the same files."""
    target = kernel_dir(prefix=prefix, user=user)
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / LAUNCHER, _LAUNCHER_SOURCE)
    atomic_write_json(target / "kernel.json", kernel_spec(target, python), indent=1, sort_keys=True)
    logos = Path(ipykernel.__file__).parent / "resources"
    for logo in logos.glob("logo-*"):
        shutil.copyfile(logo, target / logo.name)
    return target


def find_kernel() -> tuple[Path, dict[str, Any]] | None:
    """(folder, kernel.json) of the ``llm-internals`` kernel Jupyter would start here, or None.
    Jupyter's own search order: ``JUPYTER_PATH``, the user's folder, this environment, the system."""
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return None
    return Path(spec.resource_dir), json.loads((Path(spec.resource_dir) / "kernel.json").read_text())


def kernel_problems(found: tuple[Path, dict[str, Any]] | None) -> list[str]:
    """What is wrong with the installed course kernel (empty list: nothing), each with the fix."""
    fix = "Fix: make setup (or: python -m labkit.course.install_kernel)"
    if found is None:
        return [f"the course kernel {KERNEL_NAME!r} is not installed, so notebooks opened in JupyterLab or "
                f"VS Code would run without the pinned variables. {fix}"]
    folder, spec = found
    problems = []
    env = spec.get("env", {})
    off = [f"{k}={v}" for k, v in NOTEBOOK_ENV.items() if env.get(k) != v]
    if off:
        problems.append(f"{folder}/kernel.json does not set {' '.join(off)}. {fix}")
    argv = spec.get("argv", [])
    if not argv or os.path.abspath(argv[0]) != os.path.abspath(sys.executable):
        problems.append(f"{folder}/kernel.json starts {argv[:1]}, not this environment's Python "
                        f"{sys.executable} (a .venv rebuilt since?). {fix}")
    if LAUNCHER not in " ".join(argv) or not (folder / LAUNCHER).exists():
        problems.append(f"{folder} has no {LAUNCHER} (or kernel.json does not start it). {fix}")
    return problems


def ensure_kernel() -> str:
    """The course kernel's name, after installing it into this environment if it is missing or stale there
    (``make execute`` run without ``make setup``). Raises RuntimeError with the fix when that is not enough,
    e.g. a stale copy in the user's folder that Jupyter finds first."""
    problems = kernel_problems(find_kernel())
    if problems:
        install_kernel()
        problems = kernel_problems(find_kernel())
    if problems:
        raise RuntimeError("; ".join(problems) + " (a copy in your user folder goes first: "
                           "python -m labkit.course.install_kernel --user)")
    return KERNEL_NAME


def course_language_info() -> dict[str, Any]:
    """The ``language_info`` the course kernel reports (and notebooks store): IPython's, version ``3.11``."""
    return {**IPythonKernel.language_info, "version": "%d.%d" % sys.version_info[:2]}


def notebook_metadata(language_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """``kernelspec`` and ``language_info`` exactly as JupyterLab writes them once the course kernel is up:
    stored in every notebook, so opening one changes nothing (JupyterLab skips deep-equal metadata)."""
    info = course_language_info() if language_info is None else language_info
    return {
        "kernelspec": {"display_name": DISPLAY_NAME, "language": "python", "name": KERNEL_NAME},
        "language_info": json.loads(json.dumps(info, sort_keys=True)),
    }


def set_notebook_kernel(path: str | Path, metadata: dict[str, Any] | None = None) -> bool:
    """Make the notebook at ``path`` name the course kernel: only ``metadata.kernelspec`` and
    ``metadata.language_info`` change, the rest of the file keeps its bytes. Returns True if it changed."""
    path = Path(path)
    raw = path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"path {path} is not a notebook (no 'cells'); pass .ipynb files")
    nb.setdefault("metadata", {}).update(metadata or notebook_metadata())
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if new == raw:
        return False
    atomic_write_text(path, new)
    return True
