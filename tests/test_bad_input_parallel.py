"""labkit.parallel on bad input (issue 16, "no silent failures"): a timed-out launch leaves no process
behind, a failed demo shows its own reason first, and the formula helpers refuse impossible sizes."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import labkit.parallel as D
from labkit.parallel import tensor
from labkit.parallel.process_tree import descendants, is_alive

L = importlib.import_module("labkit.parallel.launch")   # the module (labkit.parallel.launch is the function)

SLEEPER = textwrap.dedent("""\
    import os, subprocess, sys, time
    from pathlib import Path
    d = Path(sys.argv[1])
    if len(sys.argv) > 2:       # like torchrun: start a worker in a session of its own, then wait
        subprocess.Popen([sys.executable, __file__, sys.argv[1]], start_new_session=True)
    (d / str(os.getpid())).write_text(os.environ.get("RANK", "-"))
    print(f"started {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(300)
""")


def _pids(folder: Path, n: int, wait: float = 20.0) -> list[int]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        if len(pids) >= n:
            return pids
        time.sleep(0.1)
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()]


def _gone(pids: list[int], wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(is_alive(p) for p in pids):
        time.sleep(0.1)
    return not any(is_alive(p) for p in pids)


def test_run_process_group_stops_workers_in_their_own_sessions(tmp_path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as e:
        L.run_process_group([sys.executable, str(script), str(tmp_path), "spawn"], None, timeout=4)
    pids = _pids(tmp_path, 2, wait=0)
    assert len(pids) == 2, "parent and worker should both have started within the timeout"
    assert _gone(pids), f"left running: {[p for p in pids if is_alive(p)]}"
    assert "started" in e.value.stderr and isinstance(e.value.stderr, str)       # text, not bytes
    assert time.monotonic() - t0 < 4 + L.KILL_GRACE_S + 5


def test_launch_timeout_leaves_no_worker_behind(tmp_path, monkeypatch) -> None:
    """A real torchrun whose 2 workers sleep: on timeout torchrun *and* both workers must be gone
    (before: only torchrun was killed; the workers were still alive 90 s later)."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)

    def fake_command(demo, nproc, args=(), port=None):
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
                "--master_addr=127.0.0.1", f"--master_port={D.free_port()}", str(script), str(tmp_path)]

    monkeypatch.setattr(L, "torchrun_command", fake_command)
    with pytest.raises(RuntimeError, match=r"did not finish within 25 s; torchrun and all its workers were "
                                           r"stopped\. stderr so far:\n(.|\n)*started") as e:
        D.launch("ddp_demo", 2, timeout=25)
    pids = _pids(tmp_path, 2, wait=0)
    assert len(pids) == 2, f"both workers should have started within the timeout:\n{e.value}"
    assert _gone(pids), f"workers left running: {[p for p in pids if is_alive(p)]}"


def test_failed_demo_names_its_reason_first() -> None:
    """ddp_demo on 3 ranks: global batch 16 is not divisible by 3; the error starts with that sentence."""
    with pytest.raises(RuntimeError) as e:
        D.launch("ddp_demo", 3, ["--steps", "1", "--bench", "0"], timeout=120)
    head = str(e.value).splitlines()[0]
    assert head.startswith("ddp_demo on 3 ranks failed: ") and "ValueError: global_batch (16) must be divisible " \
        "by world_size (3)" in head, head


def test_root_cause_skips_torchrun_noise() -> None:
    err = ("[rank1]: Traceback (most recent call last):\n[rank1]:   File \"x.py\", line 3\n"
           "[rank1]: ValueError: n_heads (3) must be divisible by the tensor-parallel world size (2)\n"
           "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n")
    assert L.root_cause(err) == "rank 1: ValueError: n_heads (3) must be divisible by the tensor-parallel world size (2)"
    assert L.root_cause("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: boom") is None
    assert L.root_cause("") is None


def test_descendants_sees_a_child() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert p.pid in descendants(os.getpid())
    finally:
        p.kill()
        p.wait()
    assert not is_alive(p.pid)


def test_launch_and_helpers_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="`timeout`"):
        D.launch("ddp_demo", 2, timeout=0)
    with pytest.raises(ValueError, match="`nproc`"):
        D.torchrun_command("ddp_demo", 0)
    with pytest.raises(ValueError, match="`demo`"):
        D.torchrun_command("no_such_demo", 2)
    with pytest.raises(ValueError, match="`world` must be >= 1, got 0"):
        tensor.split_dim(8, 0, "d_ff")                      # used: ZeroDivisionError
    with pytest.raises(ValueError, match="`layout` must have exactly the keys 'tp', 'dp', 'pp'"):
        D.check_rank_layout({}, 8)                          # used: KeyError
    with pytest.raises(TypeError, match="list of non-empty lists of int ranks"):
        D.check_rank_layout({"tp": [[0]], "dp": [["0"]], "pp": [[0]]}, 1)
    with pytest.raises(ValueError, match="`n_params`"):
        D.zero_memory_bytes(float("nan"), 1, 2)
    with pytest.raises(ValueError, match="`n_bytes` and `latency` must be >= 0 and finite; got n_bytes=nan"):
        D.ring_allreduce_time(float("nan"), 4, 1e9)
    with pytest.raises(ValueError, match="`bandwidth`"):
        D.ring_allreduce_time(1e6, 4, float("inf"))
    assert D.check_rank_layout(D.rank_layout_3d(8, 2, 2, 2), 8)["tp groups partition the ranks"]
    assert torch.equal(D.ring_allreduce([torch.ones(3), torch.ones(3)]).results[0], torch.full((3,), 2.0))
