"""Shared pytest setup: offline, quiet, deterministic."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # must precede the first torch import
# The same floats on every x86 machine (see the Makefile): must precede the first torch import too.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def site_html(tmp_path_factory):
    """The course website (`make site`), built once per test run from the stored outputs; its html folder.
    Used by tests/test_site.py and tests/test_browser.py, which pytest-xdist may run in different workers: the
    first worker builds it in the run's shared temporary folder under a lock, the other reuses it."""
    import fcntl

    from labkit.course.site import build_site

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    out, done = base / "site-shared", base / "site-shared.done"
    with open(base / "site-shared.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            t0 = time.perf_counter()
            html = build_site(out, fresh=True)
            (html.parent / "build_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
            done.write_text(str(html))
    return type(out)(done.read_text())


@pytest.fixture(scope="session")
def learner_copies(tmp_path_factory):
    """Every learner copy, made once per test session by `python -m labkit student notebooks/ OUT/`."""
    from labkit.core.paths import NOTEBOOKS

    out = tmp_path_factory.mktemp("student")
    subprocess.run([sys.executable, "-m", "labkit", "student", str(NOTEBOOKS), str(out)], check=True,
                   capture_output=True)
    return out
