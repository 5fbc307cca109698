"""`make lab`, for real: JupyterLab started with the Makefile's LAB_ARGS prints a URL that opens chapter 00; in
headless Chromium the notebook opens in the course kernel, which has the pinned variables although the lab
was started without them; and saving the notebook without running it leaves the file byte for byte as it was
(so `git status` stays clean). The lab serves a temporary copy of the notebook: the repository is untouched."""
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cdp import Chromium, chromium_or_skip

from labkit.course.kernel import KERNEL_NAME, NOTEBOOK_ENV

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_00 = "notebooks/00_start_here.ipynb"


def lab_args() -> list[str]:
    """LAB_ARGS from the Makefile, continuation lines joined and $(KERNEL) filled in."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    kernel = re.search(r"^KERNEL := (\S+)", text, re.M).group(1)
    args = re.search(r"^LAB_ARGS := (.+)$", text, re.M).group(1).replace("$(KERNEL)", kernel)
    return args.split()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab as `make lab` starts it, over a copy of chapter 00, from an environment without the pins."""
    tmp = tmp_path_factory.mktemp("lab")
    (tmp / "root" / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / CHAPTER_00, tmp / "root" / CHAPTER_00)
    env = {k: v for k, v in os.environ.items() if k not in NOTEBOOK_ENV}
    env.update(ATEN_CPU_CAPABILITY="default", JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))  # nothing in ~
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", *lab_args(), f"--ServerApp.root_dir={tmp / 'root'}",
           "--ServerApp.port=0", "--LabApp.expose_app_in_browser=True"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    log, url = [], None
    try:
        while url is None:
            line = lines.get(timeout=60)
            log.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/\S*\?token=\w+)", line)
            url = m.group(1) if m else None
        for attempt in range(60):  # the URL is printed a moment before the server answers
            try:
                urllib.request.urlopen(url.split("/lab/")[0] + "/api/status?" + url.split("?")[1], timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        yield {"url": url, "root": tmp / "root", "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_make_lab_prints_a_url_that_opens_chapter_00(lab):
    url = lab["url"]
    assert f"/lab/tree/{CHAPTER_00}?token=" in url, lab["log"]
    assert urllib.request.urlopen(url, timeout=30).status == 200
    base, token = url.split("/lab/")[0], url.split("?")[1]
    specs = json.load(urllib.request.urlopen(f"{base}/api/kernelspecs?{token}", timeout=30))
    assert specs["default"] == KERNEL_NAME and KERNEL_NAME in specs["kernelspecs"]


def test_chapter_00_opens_in_the_course_kernel_and_saving_it_changes_nothing(lab):
    exe = chromium_or_skip()
    path = lab["root"] / CHAPTER_00
    before = path.read_bytes()
    panel = f"Array.from(jupyterapp.shell.widgets('main')).find(w => w.context && w.context.path === '{CHAPTER_00}')"
    ready = f"""(() => {{ const w = window.jupyterapp && {panel};
        const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
        return k && k.status === 'idle' && w.context.isReady ? [k.name, w.context.model.dirty] : null; }})()"""
    probe = "import os, json; print(json.dumps({k: os.environ.get(k) for k in %r}))" % (list(NOTEBOOK_ENV),)
    run_probe = f"""new Promise(done => {{ const f = {panel}.sessionContext.session.kernel.requestExecute(
        {{code: {json.dumps(probe)}, store_history: false}}); let out = '';
        f.onIOPub = m => {{ if (m.header.msg_type === 'stream') out += m.content.text; }};
        f.done.then(() => done(out)); }})"""
    with Chromium(exe, timeout=90) as browser:
        report = browser.open(lab["url"], ready, timeout=90, settle=2.0)
        assert report.value == [KERNEL_NAME, False], report.problems()
        assert report.failed == [] and report.exceptions == [], report.problems()
        assert browser.evaluate(f"{panel}.context.model.dirty") is False  # opening changed nothing
        assert json.loads(browser.evaluate(run_probe)) == NOTEBOOK_ENV  # the kernel spec's env, not the lab's
        assert browser.evaluate(f"{panel}.context.save().then(() => true)") is True
    assert path.read_bytes() == before
