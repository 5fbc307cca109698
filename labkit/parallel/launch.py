"""Launch a ``labkit.parallel`` demo with torchrun in a subprocess and read back its JSON result.

    >>> res = launch("collectives_demo", nproc=4)       # doctest: +SKIP
    >>> print(res.stdout); res.result["checks"]

The same demos run on GPUs (nccl is chosen automatically) and across nodes; see the README.

torchrun starts in its own process group (``start_new_session``), so a timeout (or a Ctrl-C in the notebook)
ends torchrun *and* every worker it spawned: SIGTERM to the group, SIGKILL after a grace period. A failed
run's error starts with the workers' own exception line (e.g. a ``ValueError`` naming the fix), not with
torchrun's ``ChildFailedError`` report.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from labkit.core.paths import ROOT
from labkit.parallel.process_tree import stop_process_tree

__all__ = ["launch", "LaunchResult", "free_port", "torchrun_command", "run_process_group", "root_cause", "DEMOS"]

DEMOS = ("collectives_demo", "ddp_demo", "zero_demo", "fsdp_demo", "tp_demo", "pp_demo")
#: Seconds between SIGTERM and SIGKILL when a run is stopped.
KILL_GRACE_S = 5.0
_EXC_LINE = re.compile(r"^(?:\[rank(\d+)\]:)?\s*((?:\w+\.)*\w*(?:Error|Exception|Interrupt)): (.+)$")


@dataclass
class LaunchResult:
    """returncode, the rank-0 stdout, stderr, the demo's JSON result (``{}`` if none), wall seconds."""
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    wall: float


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_demo(demo: str, nproc: int, args: Sequence[str]) -> None:
    if demo not in DEMOS:
        raise ValueError(f"`demo` must be one of {DEMOS}, got {demo!r}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"`nproc` must be a positive int (processes on this machine), got {nproc!r}")
    if isinstance(args, str):
        raise TypeError("`args` must be a list of strings, e.g. ['--steps', '5'], not one string")


def torchrun_command(demo: str, nproc: int, args: Sequence[str] = (), port: int | None = None) -> list[str]:
    """The torchrun command line for one demo (single node, loopback rendezvous)."""
    _check_demo(demo, nproc, args)
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={port or free_port()}",
            "-m", f"labkit.parallel.{demo}", *args]


def launch(demo: str, nproc: int = 2, args: Sequence[str] = (), *, timeout: float = 180,
           check: bool = True, retries: int = 1) -> LaunchResult:
    """Run ``labkit.parallel.<demo>`` on ``nproc`` local processes via torchrun; return its output.

    A free port is picked per attempt (one retry if the port was taken meanwhile); after ``timeout`` seconds
    torchrun and every worker are stopped (:func:`run_process_group`) and ``RuntimeError`` shows the tail of
    stderr; the demo writes its JSON result to a temporary file that is read back. With ``check`` a non-zero
    exit raises ``RuntimeError`` that starts with the workers' exception line (:func:`root_cause`) and
    carries the output.
    """
    _check_demo(demo, nproc, args)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"`timeout` must be a number of seconds > 0, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"`retries` must be an int >= 0, got {retries!r}")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning",
               TORCH_CPP_LOG_LEVEL="ERROR", LOGLEVEL="ERROR")
    root = str(ROOT)                                  # so the workers import this labkit
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for attempt in range(retries + 1):
        with tempfile.TemporaryDirectory(prefix="labkit_dist_") as tmp:
            out = Path(tmp) / "result.json"
            cmd = torchrun_command(demo, nproc, [*args, "--out", str(out)])
            t0 = time.perf_counter()
            try:
                returncode, stdout, stderr = run_process_group(cmd, env, timeout)
            except subprocess.TimeoutExpired as e:
                raise RuntimeError(f"{demo} on {nproc} ranks did not finish within {timeout} s; torchrun and all "
                                   f"its workers were stopped. stderr so far:\n"
                                   f"{_without_shutdown_trace(_text(e.stderr))[-3000:]}") from None
            wall = time.perf_counter() - t0
            result = json.loads(out.read_text()) if out.exists() else {}
        port_taken = "address already in use" in stderr.lower() or "EADDRINUSE" in stderr
        if returncode == 0 or not port_taken or attempt == retries:
            break
    res = LaunchResult(returncode, stdout, stderr, result, wall)
    if check and returncode != 0:
        cause = root_cause(stderr)
        head = f"{demo} on {nproc} ranks failed: {cause}" if cause else f"{demo} on {nproc} ranks exited with {returncode}"
        raise RuntimeError(f"{head}\n--- stdout ---\n{stdout[-3000:]}\n--- stderr ---\n{stderr[-3000:]}")
    return res


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def run_process_group(cmd: Sequence[str], env: dict[str, str] | None, timeout: float) -> tuple[int, str, str]:
    """Run ``cmd`` in a new session (its own process group) → ``(returncode, stdout, stderr)``.

    On timeout (or any interruption, e.g. Ctrl-C) ``cmd`` *and every process it started* are stopped
    (:func:`labkit.parallel.process_tree.stop_process_tree`: SIGTERM to each process group, SIGKILL after
    :data:`KILL_GRACE_S` s; torchrun puts each worker in a session of its own, so killing torchrun's group
    alone would leave them running). The timeout then re-raises as ``subprocess.TimeoutExpired`` with the
    output captured so far (``stdout`` / ``stderr`` as text).
    """
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_tree(proc, KILL_GRACE_S)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(list(cmd), timeout, output=out, stderr=err) from None
    except BaseException:                      # Ctrl-C in the notebook: leave nothing behind either
        stop_process_tree(proc, KILL_GRACE_S)
        proc.communicate()
        raise
    return proc.returncode, out, err


def _without_shutdown_trace(stderr: str) -> str:
    """``stderr`` without torchrun's own traceback for the SIGTERM we sent it (noise that would push the
    workers' output out of the error message's tail)."""
    lines = stderr.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):") and "SignalException" in "".join(lines[i:]):
            return "".join(lines[:i]) + "[torchrun's traceback for the stop signal omitted]\n"
    return stderr


def root_cause(stderr: str) -> str | None:
    """The first exception line a worker printed (``ValueError: ...``, prefixed by its rank), skipping
    torchrun's own ``ChildFailedError`` report; ``None`` if there is none."""
    for line in stderr.splitlines():
        m = _EXC_LINE.match(line.strip())
        if m and "ChildFailedError" not in m.group(2) and "SignalException" not in m.group(2):
            rank = f"rank {m.group(1)}: " if m.group(1) is not None else ""
            return f"{rank}{m.group(2)}: {m.group(3)}"
    return None
