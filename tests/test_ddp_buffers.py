"""DDP broadcasts rank 0's *buffers* at the start of every forward by default (chapter 22, Pitfall 4 and the
section 3 text), on 2 real processes under torchrun (gloo): after each rank's own training forward the two
ranks' BatchNorm running means differ; the next forward (in eval mode, so BatchNorm itself changes nothing)
leaves rank 1 holding rank 0's running mean, unless the broadcast is switched off. Parameters are not
re-broadcast: they only stay equal because the averaged gradients are equal.
"""
import json
import subprocess
import sys

import pytest

from labkit.parallel import free_port, run_process_group

WORKER = r'''
import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
out = {}
for name, kwargs in [("default", {}), ("off", {"forward_sync_buffers": False})]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ddp = DDP(model, **kwargs)
    torch.manual_seed(100 + rank)
    ddp(torch.randn(8, 3) + 10.0 * rank).sum().backward()     # each rank's own batch updates its running stats
    own = model[1].running_mean.clone()
    ddp.eval()
    ddp(torch.randn(8, 3))                                     # eval: BatchNorm keeps its stats; DDP may sync first
    both = [torch.zeros(4), torch.zeros(4)]
    dist.all_gather(both, own)
    out[name] = {"own": [b.tolist() for b in both], "after_next_forward": model[1].running_mean.tolist()}
if rank == 1:
    print("RESULT " + json.dumps(out))
dist.destroy_process_group()
'''


@pytest.fixture(scope="module")
def rank1(tmp_path_factory):
    script = tmp_path_factory.mktemp("ddp") / "ddp_buffers_worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)]
    try:
        code, out, err = run_process_group(cmd, None, timeout=180)
    except subprocess.TimeoutExpired as e:  # pragma: no cover - a hung gloo rendezvous
        pytest.fail(f"torchrun did not finish: {e}")
    assert code == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_each_rank_first_updates_its_own_running_stats(rank1):
    for case in ("default", "off"):
        rank0_own, rank1_own = rank1[case]["own"]
        assert max(abs(a - b) for a, b in zip(rank0_own, rank1_own)) > 0.1, case


def test_ddp_broadcasts_rank0_buffers_before_every_forward_by_default(rank1):
    rank0_own, _ = rank1["default"]["own"]
    assert rank1["default"]["after_next_forward"] == pytest.approx(rank0_own, abs=0)


def test_without_the_broadcast_rank1_keeps_its_own_buffers(rank1):
    _, rank1_own = rank1["off"]["own"]
    assert rank1["off"]["after_next_forward"] == pytest.approx(rank1_own, abs=0)
