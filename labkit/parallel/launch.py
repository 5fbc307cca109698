"""Launch a ``labkit.parallel`` demo with torchrun in a subprocess and read back its JSON result.

    >>> res = launch("collectives_demo", nproc=4)       # doctest: +SKIP
    >>> print(res.stdout); res.result["checks"]

The same demos run on GPUs (nccl is chosen automatically) and across nodes; see the README.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from labkit.core.paths import ROOT

__all__ = ["launch", "LaunchResult", "free_port", "torchrun_command", "DEMOS"]

DEMOS = ("collectives_demo", "ddp_demo", "zero_demo", "fsdp_demo", "tp_demo", "pp_demo")


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


def torchrun_command(demo: str, nproc: int, args: Sequence[str] = (), port: int | None = None) -> list[str]:
    """The torchrun command line for one demo (single node, loopback rendezvous)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={port or free_port()}",
            "-m", f"labkit.parallel.{demo}", *args]


def launch(demo: str, nproc: int = 2, args: Sequence[str] = (), *, timeout: float = 180,
           check: bool = True, retries: int = 1) -> LaunchResult:
    """Run ``labkit.parallel.<demo>`` on ``nproc`` local processes via torchrun; return its output.

    A free port is picked per attempt (one retry if the port was taken meanwhile); the run is killed
    after ``timeout`` seconds; the demo writes its JSON result to a temporary file that is read back.
    With ``check`` a non-zero exit raises ``RuntimeError`` carrying the output.
    """
    if demo not in DEMOS:
        raise ValueError(f"`demo` must be one of {DEMOS}, got {demo!r}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"`nproc` must be a positive int (processes on this machine), got {nproc!r}")
    if isinstance(args, str):
        raise TypeError("`args` must be a list of strings, e.g. ['--steps', '5'], not one string")
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
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise RuntimeError(f"{demo} on {nproc} ranks did not finish within {timeout} s; "
                                   f"stderr so far:\n{(e.stderr or '')[-2000:]}") from None
            wall = time.perf_counter() - t0
            result = json.loads(out.read_text()) if out.exists() else {}
        port_taken = "address already in use" in proc.stderr.lower() or "EADDRINUSE" in proc.stderr
        if proc.returncode == 0 or not port_taken or attempt == retries:
            break
    res = LaunchResult(proc.returncode, proc.stdout, proc.stderr, result, wall)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{demo} on {nproc} ranks exited with {proc.returncode}\n--- stdout ---\n"
                           f"{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}")
    return res
