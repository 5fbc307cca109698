"""A headless Chromium driven over the DevTools protocol (no browser download: Debian's ``chromium``).

Used by tests/test_browser.py: open a page, wait until a script says it is ready, and report everything that
went wrong on the way (requests that failed or answered >= 400, uncaught exceptions, console errors).
``make browser`` installs Chromium where it is missing (apt, as root).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_or_skip() -> str:
    """The browser for a test: skipped where there is none, failed under CI (`make test` installs it there)."""
    exe = find_chromium()
    if exe:
        return exe
    if os.environ.get("CI"):
        pytest.fail("no chromium on this CI machine: `make browser` (part of `make test`) should have installed it")
    pytest.skip("no chromium on PATH: `make browser` installs it (apt-get, as root)")


def find_chromium() -> str | None:
    """Path of a Chromium-family browser on PATH (``CHROMIUM`` overrides), or None."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class PageReport:
    """What happened while a page loaded: each list should be empty."""
    url: str
    failed: list[str] = field(default_factory=list)       # requests that failed (net::ERR_...) or got >= 400
    exceptions: list[str] = field(default_factory=list)   # uncaught JavaScript exceptions
    console_errors: list[str] = field(default_factory=list)
    value: object = None                                   # what the ready-script returned

    def problems(self) -> list[str]:
        return ([f"failed to load {x}" for x in self.failed] + [f"exception {x}" for x in self.exceptions]
                + [f"console error {x}" for x in self.console_errors])


class Chromium:
    """``with Chromium() as b: report = b.open(url, ready_js)``; one tab, reused for every page."""

    def __init__(self, exe: str | None = None, timeout: float = 30.0):
        self.exe = exe or find_chromium()
        if not self.exe:
            raise FileNotFoundError("no chromium on PATH; run `make browser` (apt-get install chromium)")
        self.timeout = timeout
        self._id = 0
        self._events: list[dict] = []

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        args = [self.exe, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--remote-debugging-port=0", f"--user-data-dir={self._profile}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode(errors="replace")[-2000:] if self._proc.poll() is not None else ""
                self.__exit__(None, None, None)
                raise RuntimeError(f"chromium did not start: {err}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout,
                                               suppress_origin=True)
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "_ws", None):
            self._ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, **params) -> dict:
        """Call a DevTools method and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        my_id = self._id
        self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._events.append(msg)

    def evaluate(self, expression: str, await_promise: bool = True):
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", expression=expression, awaitPromise=await_promise, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:80]}: {r['exceptionDetails'].get('text')} "
                               f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def open(self, url: str, ready_js: str = "document.readyState === 'complete'", timeout: float | None = None,
             settle: float = 0.3) -> PageReport:
        """Load ``url``; wait until ``ready_js`` is truthy (its value is kept), then ``settle`` seconds more
        for late requests; return what failed."""
        self._events.clear()
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + (timeout or self.timeout)
        report = PageReport(url)
        self._wait_for_event("Page.loadEventFired", deadline)
        while True:
            try:
                report.value = self.evaluate(ready_js)
            except RuntimeError:
                report.value = None  # page still navigating
            if report.value or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not report.value:
            report.exceptions.append(f"not ready after {timeout or self.timeout} s: {ready_js}")
        time.sleep(settle)
        self.send("Runtime.evaluate", expression="0")  # flush pending events
        self._collect(report)
        return report

    def _wait_for_event(self, method: str, deadline: float) -> bool:
        """Read DevTools messages until ``method`` arrives (True) or the deadline passes (False)."""
        while not any(ev["method"] == method for ev in self._events):
            self._ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = json.loads(self._ws.recv())
            except websocket.WebSocketTimeoutException:
                return False
            finally:
                self._ws.settimeout(self.timeout)
            if "method" in msg:
                self._events.append(msg)
        return True

    def _collect(self, report: PageReport) -> None:
        urls = {}
        for ev in self._events:
            m, p = ev["method"], ev["params"]
            if m == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                report.failed.append(f"{urls.get(p['requestId'], '?')} ({p.get('errorText')})")
            elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
                report.failed.append(f"{p['response']['url']} (HTTP {p['response']['status']})")
            elif m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                report.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif m == "Runtime.consoleAPICalled" and p["type"] == "error":
                report.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                      for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                report.console_errors.append(f"{p['entry'].get('url', '')} {p['entry']['text']}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class StaticServer:
    """``with StaticServer(folder) as base_url:`` serves a folder on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, folder: str | Path):
        self.folder = str(folder)

    def __enter__(self) -> str:
        handler = functools.partial(_QuietHandler, directory=self.folder)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
