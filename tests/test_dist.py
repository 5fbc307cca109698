"""labkit.parallel in one process: the ZeRO memory model, ring all-reduce, pipeline schedules, 3D layout,
and every bad-input path (including a demo started without torchrun)."""
import os
import subprocess
import sys

import pytest
import torch

import labkit.parallel as D
from labkit.parallel import (
    collectives_demo,
    ddp_demo,
    fsdp_demo,
    pipeline,
    pp_demo,
    runtime,
    tensor,
    tp_demo,
    zero,
    zero_demo,
)


# ------------------------------------------------------------------------------- ZeRO memory model
def test_zero_table_matches_paper():
    gb = [D.zero_memory_bytes(7.5e9, s, 64) / 1e9 for s in range(4)]
    assert [round(g, 1) for g in gb] == [120.0, 31.4, 16.6, 1.9]
    assert gb[1] == pytest.approx(31.40625) and gb[2] == pytest.approx(16.640625) and gb[3] == pytest.approx(1.875)


def test_zero_limits_and_single_device():
    psi = 1e9
    for s in range(4):  # one device: nothing to shard, every stage is plain DP
        assert D.zero_memory_bytes(psi, s, 1) == pytest.approx(16 * psi)
    big = 10**9
    assert D.zero_memory_bytes(psi, 0, big) / D.zero_memory_bytes(psi, 1, big) == pytest.approx(4, rel=1e-6)
    assert D.zero_memory_bytes(psi, 0, big) / D.zero_memory_bytes(psi, 2, big) == pytest.approx(8, rel=1e-6)
    assert D.zero_memory_bytes(psi, 3, 64) == pytest.approx(16 * psi / 64)
    assert D.zero_memory_bytes(psi, 0, 8, k=8) == pytest.approx(12 * psi)  # the notes' "12n": k = 8


def test_zero_comm_volume():
    assert D.zero_comm_elements(1000, 0, 2) == D.zero_comm_elements(1000, 2, 2) == 1000
    assert D.zero_comm_elements(1000, 3, 2) == 1500
    assert D.zero_comm_elements(800, 1, 8) == pytest.approx(2 * 7 / 8 * 800)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_params=1e9, stage=4, n_devices=8), "stage"),
    (dict(n_params=1e9, stage=-1, n_devices=8), "stage"),
    (dict(n_params=0, stage=1, n_devices=8), "n_params"),
    (dict(n_params=1e9, stage=1, n_devices=0), "n_devices"),
    (dict(n_params=1e9, stage=1, n_devices=8, k=-1), "k"),
])
def test_zero_memory_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.zero_memory_bytes(**kwargs)


def test_zero_memory_type_errors():
    with pytest.raises(TypeError, match="n_devices"):
        D.zero_memory_bytes(1e9, 1, 2.5)
    with pytest.raises(ValueError, match="stage"):
        D.zero_memory_bytes(1e9, True, 2)


# ------------------------------------------------------------------------------------ ring all-reduce
@pytest.mark.parametrize("p, n", [(1, 5), (2, 8), (3, 7), (4, 10), (4, 12), (8, 64)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ring_allreduce_sums_on_every_worker(p, n, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(p)]
    res = D.ring_allreduce(xs)
    total = torch.stack(xs).sum(0)
    for r in res.results:
        torch.testing.assert_close(r, total, rtol=0, atol=1e-12)
    assert res.steps == 2 * (p - 1)
    assert sum(res.sent) == pytest.approx(2 * (p - 1) * n)   # every element crosses 2(P-1) links in total
    if n % p == 0:
        assert res.sent == [2 * (p - 1) * n // p] * p


def test_ring_allreduce_keeps_shape_and_inputs():
    xs = [torch.arange(12.0).reshape(3, 4) * (i + 1) for i in range(3)]
    before = [x.clone() for x in xs]
    res = D.ring_allreduce(xs)
    assert res.results[0].shape == (3, 4)
    torch.testing.assert_close(res.results[2], torch.arange(12.0).reshape(3, 4) * 6)
    assert all(torch.equal(a, b) for a, b in zip(xs, before))


def test_ring_allreduce_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        D.ring_allreduce([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(TypeError, match="tensors"):
        D.ring_allreduce([])
    with pytest.raises(TypeError, match="torch.Tensor"):
        D.ring_allreduce([[1.0, 2.0]])


def test_ring_time_model():
    assert D.ring_allreduce_time(14e9, 8, 32e9) == pytest.approx(0.765625)
    assert D.ring_allreduce_time(14e9, 8, 300e9) == pytest.approx(0.0816667, rel=1e-5)
    assert D.ring_allreduce_time(1e6, 4, 1e9, latency=1e-5) == pytest.approx(6e-5 + 1.5e-3)
    with pytest.raises(ValueError, match="bandwidth"):
        D.ring_allreduce_time(1e9, 8, 0)
    with pytest.raises(ValueError, match="`n_bytes` and `latency` must be >= 0"):
        D.ring_allreduce_time(-1, 8, 32e9)
    with pytest.raises(ValueError, match="`n_bytes` and `latency` must be >= 0"):
        D.ring_allreduce_time(1e9, 8, 32e9, latency=-1e-6)
    assert D.ring_allreduce_time(0, 8, 32e9) == 0.0        # the bound itself is allowed


# ---------------------------------------------------------------------------------------- pipelines
def test_bubble_formula():
    assert D.pipeline_bubble_fraction(4, 16) == pytest.approx(3 / 19)
    assert round(D.pipeline_bubble_fraction(4, 16), 3) == 0.158
    assert D.pipeline_bubble_fraction(4, 1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="microbatches"):
        D.pipeline_bubble_fraction(4, 0)
    with pytest.raises(ValueError, match="stages"):
        D.pipeline_bubble_fraction(0, 4)
    with pytest.raises(TypeError, match="microbatches"):
        D.pipeline_bubble_fraction(4, 2.0)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("m", [1, 4, 16, 32])
def test_schedule_simulator_matches_formula(k, m):
    gp = D.pipeline_schedule("gpipe", k, m)
    ob = D.pipeline_schedule("1f1b", k, m)
    assert gp.bubble == pytest.approx(D.pipeline_bubble_fraction(k, m))
    assert ob.bubble == pytest.approx(gp.bubble)                 # 1F1B-flush has GPipe's bubble ...
    assert gp.makespan == pytest.approx((m + k - 1) * 3.0)
    assert gp.peak_activations == [m] * k
    assert ob.peak_activations == [min(k - s, m) for s in range(k)]  # ... but holds at most K micro-batches
    assert all(len(ops) == 2 * m for ops in gp.ops)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_naive_pipeline_idles_k_minus_1_over_k(k):
    sch = D.pipeline_schedule("naive", k, 8)
    assert sch.bubble == pytest.approx((k - 1) / k)


def test_schedule_respects_dependencies():
    sch = D.pipeline_schedule("1f1b", 4, 6, t_f=1.0, t_b=2.0)
    end = {(op, s, i): e for s, ops in enumerate(sch.ops) for op, i, _, e in ops}
    start = {(op, s, i): st for s, ops in enumerate(sch.ops) for op, i, st, _ in ops}
    for (op, s, i), st in start.items():
        if op == "F" and s > 0:
            assert st >= end[("F", s - 1, i)]
        if op == "B" and s < 3:
            assert st >= end[("B", s + 1, i)]
    for ops in sch.ops:  # a stage never runs two ops at once
        spans = sorted((st, e) for _, _, st, e in ops)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="kind"):
        D.pipeline_schedule("pipedream", 4, 4)
    with pytest.raises(ValueError, match="microbatches"):
        D.pipeline_schedule("gpipe", 4, 0)


def test_plot_pipeline_runs():
    import matplotlib
    matplotlib.use("Agg")
    axes = D.plot_pipeline([D.pipeline_schedule(k, 4, 8) for k in ("naive", "gpipe", "1f1b")])
    assert len(axes) == 3


# --------------------------------------------------------------------------------------- 3D layout
def test_rank_layout_32():
    lay = D.rank_layout_3d(32, tp=4, pp=4, dp=2)
    assert all(D.check_rank_layout(lay, 32).values())
    assert [len(lay[k]) for k in ("tp", "dp", "pp")] == [8, 16, 8]
    assert {len(g) for g in lay["tp"]} == {4} and {len(g) for g in lay["dp"]} == {2} and {len(g) for g in lay["pp"]} == {4}
    assert lay["tp"][0] == [0, 1, 2, 3] and lay["dp"][0] == [0, 4] and lay["pp"][0] == [0, 8, 16, 24]


def test_rank_layout_checker_can_fail():
    lay = D.rank_layout_3d(32, tp=4, pp=4, dp=2)
    lay["tp"][1] = [4, 5, 6, 8]          # rank 8 lives on the next node, and rank 7 is now missing
    res = D.check_rank_layout(lay, 32)
    assert not res["tp groups partition the ranks"] and not res["each tp group inside one node"]
    with pytest.raises(ValueError, match="world_size"):
        D.rank_layout_3d(32, tp=4, pp=4, dp=3)


# --------------------------------------------------------------------------- bad input elsewhere
def test_per_rank_batch():
    assert runtime.per_rank_batch(16, 2) == 8
    with pytest.raises(ValueError, match="divisible by world_size"):
        runtime.per_rank_batch(15, 2)
    with pytest.raises(ValueError, match="world_size"):
        runtime.per_rank_batch(16, 0)


def test_tp_split_dim():
    assert tensor.split_dim(40, 2, "d_ff") == 20
    with pytest.raises(ValueError, match=r"d_ff \(33\) must be divisible"):
        tensor.split_dim(33, 2, "d_ff")


def test_pipeline_splits():
    m = runtime.tiny_mlp(depth=3)
    parts = pipeline.split_stages(m, 2)
    assert sum(len(p) for p in parts) == len(m)
    x = torch.randn(5, 16)
    torch.testing.assert_close(parts[1](parts[0](x)), m(x))
    with pytest.raises(ValueError, match="n_stages"):
        pipeline.split_stages(m, 9)
    with pytest.raises(ValueError, match="microbatches"):
        pipeline.split_microbatches(torch.zeros(16, 2), 0)
    with pytest.raises(ValueError, match="divisible by microbatches"):
        pipeline.split_microbatches(torch.zeros(16, 2), 3)
    # checked before any torch.distributed call, so it fails fast in-process (no process group needed)
    for bad in ("zb-h1", "GPipe", ""):
        with pytest.raises(ValueError, match="`schedule` must be 'gpipe' or '1f1b'"):
            pipeline.pipeline_step(parts[0], bad, 2, (4, 16), x=torch.randn(8, 16))


def test_zero_helpers():
    assert zero.shard_size(7, 2) == 4
    for bad in (0, -2, True, 2.0):
        with pytest.raises(ValueError, match="`world` must be a positive int"):
            zero.shard_size(7, bad)
    t = torch.arange(7.0)
    s0, s1 = zero.flat_shard(t, 0, 2), zero.flat_shard(t, 1, 2)
    torch.testing.assert_close(torch.cat([s0, s1]), torch.tensor([0., 1, 2, 3, 4, 5, 6, 0]))
    with pytest.raises(ValueError, match="stage"):
        zero.ZeroAdam(torch.nn.Linear(2, 2), 3, comm=None)


def test_launch_bad_input():
    with pytest.raises(ValueError, match="demo"):
        D.launch("no_such_demo", 2)
    with pytest.raises(ValueError, match="nproc"):
        D.launch("ddp_demo", 0)
    with pytest.raises(TypeError, match="args"):
        D.launch("ddp_demo", 2, "--steps 3")


TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("mod", [collectives_demo, ddp_demo, zero_demo, fsdp_demo, tp_demo, pp_demo])
def test_demo_without_torchrun_says_how_to_launch(mod, monkeypatch, capsys):
    for v in TORCHRUN_ENV:
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(SystemExit) as e:
        mod.main([])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "torch.distributed.run" in err and f"labkit.parallel.{mod.__name__.rsplit('.', 1)[1]}" in err


def test_demo_without_torchrun_subprocess():
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    p = subprocess.run([sys.executable, "-m", "labkit.parallel.ddp_demo"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "--nproc_per_node 2" in p.stderr


@pytest.fixture
def fake_torchrun(monkeypatch):
    for k, v in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(k, v)


def test_tp_demo_rejects_indivisible_width(fake_torchrun):
    with pytest.raises(ValueError, match="d_ff"):
        tp_demo.main(["--d-ff", "33"])
    with pytest.raises(ValueError, match="n_heads"):
        tp_demo.main(["--n-heads", "3"])


def test_pp_demo_rejects_bad_microbatches(fake_torchrun):
    with pytest.raises(ValueError, match="microbatches"):
        pp_demo.main(["--microbatches", "0"])
    with pytest.raises(ValueError, match="divisible by microbatches"):
        pp_demo.main(["--microbatches", "3"])
