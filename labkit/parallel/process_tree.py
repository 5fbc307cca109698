"""Stop a process and everything it started (what :func:`labkit.parallel.launch` needs on a timeout).

torchrun starts each worker in a *new session* (``start_new_session=True``), so killing torchrun, or even
its process group, leaves the workers running, still holding CPU and the rendezvous port. The tree is
therefore found by parent pid (``/proc`` on Linux, ``ps`` elsewhere) and each process's group is signalled:
SIGTERM first (torchrun forwards it to its workers and exits cleanly), SIGKILL after a grace period.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["descendants", "is_alive", "stop_process_tree"]


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every process this user can see."""
    proc = Path("/proc")
    out: dict[int, int] = {}
    if proc.is_dir():
        for d in proc.iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue                                   # exited meanwhile
            fields = stat[stat.rindex(")") + 2:].split()   # the name in (...) may contain spaces
            out[int(d.name)] = int(fields[1])
        return out
    ps = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=False)
    for line in ps.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out


def descendants(pid: int) -> list[int]:
    """Pids of every process started (directly or not) by ``pid`` that is still running, parents first."""
    children: dict[int, list[int]] = {}
    for p, pp in _parents().items():
        children.setdefault(pp, []).append(p)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children.get(p, [])
    return out


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return not stat.parent.parent.is_dir()              # no /proc: trust os.kill


def _signal(pids: list[int], sig: int) -> None:
    """Send ``sig`` once to each process group of ``pids`` (a process alone when it shares our own group)."""
    own, groups = os.getpgid(0), set()
    for p in pids:
        try:
            group = os.getpgid(p)
            if group == own:
                os.kill(p, sig)                  # never signal our own group (the kernel running this)
            elif group not in groups:
                groups.add(group)
                os.killpg(group, sig)            # one signal each: torchrun aborts its clean shutdown on a second
        except (ProcessLookupError, PermissionError):
            pass


def stop_process_tree(proc: subprocess.Popen, grace: float = 5.0) -> list[int]:
    """Stop ``proc`` and all its descendants: SIGTERM to each one's process group, then SIGKILL to whatever
    still runs after ``grace`` seconds. Returns the pids that were signalled (``proc`` first)."""
    tree = [proc.pid] + descendants(proc.pid)
    _signal(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        proc.wait(timeout=grace)                 # torchrun forwards SIGTERM to its workers and exits
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() < deadline and any(is_alive(p) for p in tree[1:]):
        time.sleep(0.05)
    left = [p for p in tree[1:] if is_alive(p)]
    _signal(left, signal.SIGKILL)
    if proc.poll() is None:
        _signal([proc.pid], signal.SIGKILL)
        proc.wait()
    return tree
