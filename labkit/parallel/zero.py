"""ZeRO, chapter 23: the memory and traffic formulas, and stages 1, 2 and 3 from scratch on
``torch.distributed`` collectives (Rajbhandari et al. 2020).

Memory model: mixed-precision Adam keeps ``2Ψ`` bytes of fp16 parameters, ``2Ψ`` of fp16 gradients and
``KΨ`` of optimizer state (fp32 master weights, m, v: ``K = 12``). Stage 1 shards the optimizer state,
stage 2 also the gradients, stage 3 also the parameters over ``N_d`` data-parallel ranks
(``zero_memory_bytes``, ``zero_comm_elements``). The demos are ``labkit.parallel.zero_demo`` and
``labkit.parallel.fsdp_demo`` (PyTorch's FSDP2 on the same model).

Every parameter ``p`` (numel n) is flattened, zero-padded to ``n_pad = ⌈n/P⌉·P`` and cut into P equal
shards; rank r owns shard r: elements ``[r·n_pad/P, (r+1)·n_pad/P)``. Adam is elementwise, so Adam on
the shards is exactly the shards of Adam on the whole (the padding has zero gradient and stays 0).

* stage 0 (plain data parallel): all-reduce the gradients, full Adam on every rank;
* stage 1 (P_os): full gradients after backward → reduce-scatter → each rank updates its shard with its
  own 1/P of the Adam moments → all-gather the parameters;
* stage 2 (P_os+g): the same, but each gradient is reduce-scattered as soon as backward produced it
  (a post-accumulate-grad hook) and the full gradient is freed: only 1/P of the gradients is kept;
* stage 3 (P_os+g+p): the layers keep only their parameter shards. A layer all-gathers its weights in
  forward, drops them, all-gathers them again in backward and reduce-scatters the weight gradient
  (``Zero3Linear``): 1.5× the traffic of stages 0–2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labkit.parallel.runtime import CountingComm, _check_int, tensor_bytes

__all__ = ["zero_memory_bytes", "zero_comm_elements", "shard_size", "flat_shard", "ZeroAdam", "Zero3Linear",
           "zero3_wrap", "zero3_full_params"]


def zero_memory_bytes(n_params: int | float, stage: int, n_devices: int, k: float = 12) -> float:
    """Bytes of *model state* per device under ZeRO ``stage`` (0 = plain data parallel).

    With Ψ = ``n_params``, N = ``n_devices`` and mixed-precision Adam (2 B fp16 params, 2 B fp16 grads,
    K B of optimizer state per parameter)::

        stage 0:  (2 + 2 + K) Ψ
        stage 1:  (2 + 2) Ψ + K Ψ / N          (optimizer state sharded)
        stage 2:  2 Ψ + (2 + K) Ψ / N          (+ gradients sharded)
        stage 3:  (2 + 2 + K) Ψ / N            (+ parameters sharded)

    Ψ = 7.5e9, N = 64 gives 120 / 31.4 / 16.6 / 1.9 GB (GB = 1e9 bytes). Activations are not included.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, float)) or not 0 < n_params < float("inf"):
        raise ValueError(f"`n_params` must be a positive number of parameters, got {n_params!r}")
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise ValueError(f"`stage` must be 0, 1, 2 or 3 (0 = plain data parallel), got {stage!r}")
    _check_int(n_devices, "n_devices", 1, "use the data-parallel world size, e.g. 64")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k < float("inf"):
        raise ValueError(f"`k` (optimizer bytes per parameter) must be >= 0, got {k}; Adam in mixed precision is 12")
    psi, n = float(n_params), n_devices
    return {0: (4 + k) * psi, 1: 4 * psi + k * psi / n, 2: 2 * psi + (2 + k) * psi / n,
            3: (4 + k) * psi / n}[stage]


def zero_comm_elements(n_params: int, stage: int, n_devices: int) -> float:
    """Elements each rank sends per training step with bandwidth-optimal (ring) collectives.

    Plain DP all-reduces the gradients: ``2(N-1)/N · Ψ``. ZeRO-1 and ZeRO-2 reduce-scatter the
    gradients and all-gather the updated parameters: the same ``2(N-1)/N · Ψ``. ZeRO-3 all-gathers
    the parameters twice (forward and backward) and reduce-scatters the gradients: ``3(N-1)/N · Ψ``
    (1.5× plain DP).
    """
    zero_memory_bytes(n_params, stage, n_devices)  # validates the arguments
    calls = 3 if stage == 3 else 2
    return calls * (n_devices - 1) / n_devices * n_params


def shard_size(numel: int, world: int) -> int:
    """Elements per rank after padding: ``⌈numel / world⌉``."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"`world` must be a positive int, got {world!r}")
    return math.ceil(numel / world)


def flat_shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s slice of ``t`` flattened and zero-padded to a multiple of ``world`` (a copy)."""
    s = shard_size(t.numel(), world)
    flat = F.pad(t.detach().reshape(-1), (0, s * world - t.numel()))
    return flat[rank * s:(rank + 1) * s].clone()


class ZeroAdam:
    """Adam for a data-parallel replica with ZeRO ``stage`` 0, 1 or 2 (stage 3: ``zero3_wrap``).

    Call ``loss.backward()`` on this rank's micro-batch (mean loss), then ``step()``. The gradients
    are averaged over ranks (sum / P), so with equal shard sizes the update equals single-process
    Adam on the full batch.
    """

    def __init__(self, model: nn.Module, stage: int, comm: CountingComm, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if isinstance(stage, bool) or stage not in (0, 1, 2):
            raise ValueError(f"`stage` must be 0, 1 or 2 for ZeroAdam (use zero3_wrap for stage 3), got {stage!r}")
        import torch.distributed as dist

        self.stage, self.comm = stage, comm
        self.rank, self.world = dist.get_rank(comm.group), comm.world
        self.params = [p for p in model.parameters() if p.requires_grad]
        if stage == 0:
            self.shards = self.params
        else:  # this rank's fp32 master copy of its shard of every parameter
            self.shards = [flat_shard(p, self.rank, self.world) for p in self.params]
        self.inner = torch.optim.Adam(self.shards, lr=lr, betas=betas, eps=eps)
        self.grad_shards: list[torch.Tensor | None] = [None] * len(self.params)
        if stage == 2:
            for i, p in enumerate(self.params):
                p.register_post_accumulate_grad_hook(self._make_hook(i))

    def _reduce_scatter(self, g: torch.Tensor) -> torch.Tensor:
        s = shard_size(g.numel(), self.world)
        return self.comm.reduce_scatter(F.pad(g.reshape(-1), (0, s * self.world - g.numel()))) / self.world

    def _make_hook(self, i: int):
        def hook(p: torch.Tensor) -> None:  # runs during backward, once p.grad is final
            self.grad_shards[i] = self._reduce_scatter(p.grad)
            p.grad = None                   # the full gradient is freed right away
        return hook

    @torch.no_grad()
    def step(self) -> None:
        if self.stage == 0:
            for p in self.params:
                self.comm.all_reduce(p.grad).div_(self.world)
            self.inner.step()
            return
        for i, (p, sh) in enumerate(zip(self.params, self.shards)):
            sh.grad = self._reduce_scatter(p.grad) if self.stage == 1 else self.grad_shards[i]
        self.inner.step()
        for p, sh in zip(self.params, self.shards):
            p.copy_(self.comm.all_gather(sh)[:p.numel()].view_as(p))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        for sh in self.shards:
            sh.grad = None
        self.grad_shards = [None] * len(self.params)

    # memory held by this rank, in bytes
    def optimizer_state_bytes(self) -> int:
        """Adam's moments m and v held by this rank (the step counters are not counted)."""
        return tensor_bytes(t for st in self.inner.state.values() for k, t in st.items() if k != "step")

    def grad_bytes(self) -> int:
        """Gradient storage this rank holds when ``step()`` starts (call it right after backward)."""
        if self.stage == 2:
            return tensor_bytes(self.grad_shards)
        return tensor_bytes(p.grad for p in self.params)

    def param_bytes(self) -> int:
        return tensor_bytes(self.params)


class _GatherLinear(torch.autograd.Function):
    """``y = x Wᵀ + b`` where W and b exist only as shards; gathered in forward and again in backward."""

    @staticmethod
    def forward(ctx, x, w_shard, b_shard, layer):
        w, b = layer.gather()
        ctx.save_for_backward(x)  # not w: the full weight is dropped after forward
        ctx.layer = layer
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        layer = ctx.layer
        w, _ = layer.gather()                       # the second all-gather of this step
        gx = gy @ w
        gw = gy.reshape(-1, gy.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        gb = gy.reshape(-1, gy.shape[-1]).sum(0)
        return gx, layer.scatter_grad(gw), layer.scatter_grad(gb), None


class Zero3Linear(nn.Module):
    """A ``nn.Linear`` whose weight and bias live as 1/P shards (``w_shard``, ``b_shard``)."""

    def __init__(self, linear: nn.Linear, comm: CountingComm):
        super().__init__()
        import torch.distributed as dist

        if linear.bias is None:
            raise ValueError("Zero3Linear expects a Linear with bias (bias=True)")
        self.comm = comm
        rank, world = dist.get_rank(comm.group), comm.world
        self.w_shape, self.b_shape = tuple(linear.weight.shape), tuple(linear.bias.shape)
        self.w_shard = nn.Parameter(flat_shard(linear.weight, rank, world))
        self.b_shard = nn.Parameter(flat_shard(linear.bias, rank, world))

    def gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The full (out, in) weight and (out,) bias, rebuilt from every rank's shard."""
        with torch.no_grad():
            w = self.comm.all_gather(self.w_shard)[:math.prod(self.w_shape)].view(self.w_shape)
            b = self.comm.all_gather(self.b_shard)[:math.prod(self.b_shape)].view(self.b_shape)
        return w, b

    def scatter_grad(self, g: torch.Tensor) -> torch.Tensor:
        s = shard_size(g.numel(), self.comm.world)
        return self.comm.reduce_scatter(F.pad(g.reshape(-1), (0, s * self.comm.world - g.numel()))) / self.comm.world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GatherLinear.apply(x, self.w_shard, self.b_shard, self)


def zero3_wrap(model: nn.Module, comm: CountingComm) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (in place) by a ``Zero3Linear``; returns ``model``.

    Train it with a plain ``torch.optim.Adam(model.parameters())``: the parameters *are* the shards,
    so the optimizer state is 1/P by construction.
    """
    def replace(module: nn.Module) -> None:
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Zero3Linear(child, comm))
            else:
                replace(child)

    if isinstance(model, nn.Linear):
        raise TypeError("zero3_wrap replaces children in place; wrap the Linear in nn.Sequential first")
    replace(model)
    if not any(isinstance(m, Zero3Linear) for m in model.modules()):
        raise ValueError("zero3_wrap found no nn.Linear to shard in `model`")
    return model


def zero3_full_params(model: nn.Module) -> list[torch.Tensor]:
    """The full parameters (weight, bias per layer, in module order), gathered from the shards."""
    out = []
    for m in model.modules():
        if isinstance(m, Zero3Linear):
            out += list(m.gather())
    return out
