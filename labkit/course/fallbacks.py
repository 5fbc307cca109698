"""labkit's version of each lab task, in the task's own signature (what :func:`labkit.course.lab.use`
hands a learner copy while the learner's function is a stub).

Where labkit's canonical function already has the task's signature the notebook passes it directly
(``numerics.stable_softmax``, ``numerics.cross_entropy``, ``blocks.scaled_dot_product_attention``,
``tokenizer.merge_pair``, ``blocks.repeat_kv``, ``blocks.apply_rope`` ...). The functions here adapt the
canonical code to a task's signature; they do not re-derive anything that has a home elsewhere in labkit,
except code that labkit only has inside a larger whole: the two-line residual arrangements of chapter 05
(``pre_ln_block``, ``post_ln_block``, inside model classes), the online-softmax step of chapter 04 (inside
``flash_attention``), following a relation path in a graph (chapter 20, inside local search), and the
single-process simulations of chapters 22–24 (DDP's averaging step, a ZeRO-1 step, column/row-parallel
linear layers), whose labkit homes run on a real process group.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from labkit.blocks import RMSNorm, causal_mask, repeat_kv, scaled_dot_product_attention, silu
from labkit.memory import DynamicLossScaler, saved_activation_bytes
from labkit.model import count_parameters
from labkit.parallel import pipeline_schedule, ring_allreduce
from labkit.parallel.zero import flat_shard
from labkit.quant import absmax_quantize
from labkit.retrieval import BM25, reciprocal_rank_fusion
from labkit.tokenizer import BPETokenizer, get_pair_counts, merge_pair, train_merges_slow
from labkit.train import AdamW

__all__ = ["attention", "causal_mask", "split_heads", "merge_heads", "get_stats", "merge", "train_bpe",
           "encode_chunk", "rms_norm", "pre_ln_block", "post_ln_block", "swiglu", "llama_params", "gqa_attention",
           "online_softmax_update", "bm25_scores", "rrf", "follow_relations", "ring_allreduce_logged", "ddp_step",
           "zero1_adam_step", "column_parallel", "row_parallel", "one_f_one_b", "adamw_step",
           "quantize_per_channel", "saved_bytes", "loss_scaler_step"]

Sublayer = Callable[[Tensor], Tensor]


# ---- chapter 02: BPE -----------------------------------------------------------------------------------
def get_stats(ids: list[int]) -> dict[tuple[int, int], int]:
    """Adjacent pair counts (:func:`labkit.tokenizer.get_pair_counts`)."""
    return get_pair_counts(ids)


def merge(ids: list, pair: tuple, new_id: object) -> list:
    """Replace ``pair`` by ``new_id`` left to right (:func:`labkit.tokenizer.merge_pair`)."""
    return merge_pair(ids, pair, new_id)


def train_bpe(chunks: list[str], num_merges: int) -> tuple[list[tuple[int, int]], list[int]]:
    """``(merges, counts)`` of the clear trainer (:func:`labkit.tokenizer.train_merges_slow`)."""
    return train_merges_slow(chunks, num_merges)


def encode_chunk(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    """Byte-level BPE of one chunk, lowest rank first (:class:`labkit.tokenizer.BPETokenizer`, no pre-split)."""
    return BPETokenizer(merges, pattern=None).encode_ordinary(text)


# ---- chapter 03: attention -----------------------------------------------------------------------------
def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """``softmax(q kᵀ/√d + mask) v``, bottom-right causal, empty rows 0 (:func:`labkit.blocks.scaled_dot_product_attention`)."""
    return scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """``(B, T, D) -> (B, h, T, D/h)``, as inside :class:`labkit.blocks.GroupedQueryAttention`."""
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, D // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, h, T, hd) -> (B, T, h·hd)``, the inverse of :func:`split_heads`."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


# ---- chapter 05: normalization -------------------------------------------------------------------------
def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """:class:`labkit.blocks.RMSNorm` (HF numerics) with ``weight`` given, differentiable in both."""
    return functional_call(RMSNorm(x.shape[-1], eps=eps), {"weight": weight}, (x,))


def pre_ln_block(x: Tensor, attn: Sublayer, ffn: Sublayer, norm1: Sublayer, norm2: Sublayer) -> Tensor:
    """Pre-LN: ``h = x + attn(norm1(x))``, then ``h + ffn(norm2(h))`` (as labkit's ``LlamaDecoderLayer``)."""
    h = x + attn(norm1(x))
    return h + ffn(norm2(h))


def post_ln_block(x: Tensor, attn: Sublayer, ffn: Sublayer, norm1: Sublayer, norm2: Sublayer,
                  alpha: float = 1.0) -> Tensor:
    """Post-LN (DeepNorm with ``alpha > 1``): ``h = norm1(αx + attn(x))``, then ``norm2(αh + ffn(h))``."""
    h = norm1(alpha * x + attn(x))
    return norm2(alpha * h + ffn(h))


# ---- chapter 06: FFN -----------------------------------------------------------------------------------
def swiglu(x: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """``down(silu(gate x) · up x)`` with ``nn.Linear``-layout weights, as :class:`labkit.blocks.SwiGLU`."""
    return F.linear(silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def llama_params(vocab_size: int, hidden_size: int, n_layers: int, n_heads: int, n_kv_heads: int,
                 intermediate_size: int, tie_embeddings: bool = False) -> int:
    """Exact parameter count of a LLaMA model (:func:`labkit.model.count_parameters`)."""
    cfg = SimpleNamespace(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=n_layers,
                          num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                          intermediate_size=intermediate_size, tie_word_embeddings=tie_embeddings)
    return count_parameters(cfg)


# ---- chapter 04: attention variants --------------------------------------------------------------------
def gqa_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False) -> Tensor:
    """``q (B, h, Tq, d)`` over ``k, v (B, g, Tk, ·)``: each KV head serves ``h/g`` consecutive query heads
    (:func:`labkit.blocks.repeat_kv`), then :func:`labkit.blocks.scaled_dot_product_attention`."""
    n_rep = q.shape[1] // k.shape[1]
    return scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=is_causal)


def online_softmax_update(m: Tensor, l: Tensor, acc: Tensor, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One key block of the online softmax (the step inside :func:`labkit.blocks.flash_attention`):
    ``m' = max(m, max s)``, ``l' = e^{m-m'} l + Σ e^{s-m'}``, ``acc' = e^{m-m'} acc + e^{s-m'} v``.
    ``m, l (..., Tq)``, ``acc (..., Tq, dv)``, ``s (..., Tq, Bk)``, ``v (..., Bk, dv)``; rows that have seen
    only ``-inf`` stay ``(-inf, 0, 0)``."""
    m_new = torch.maximum(m, s.amax(dim=-1))
    ref = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
    p, c = torch.exp(s - ref[..., None]), torch.exp(m - ref)
    return m_new, c * l + p.sum(dim=-1), c[..., None] * acc + p @ v


# ---- chapter 18: RAG -----------------------------------------------------------------------------------
def bm25_scores(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """BM25 score of every document for a tokenized query (:class:`labkit.retrieval.BM25`), shape ``(N,)``."""
    return BM25(docs, k1=k1, b=b).scores(query)


def rrf(rankings: list[list], k: float = 60) -> list[tuple]:
    """``[(doc, Σ 1/(k + rank))]`` best first (:func:`labkit.retrieval.reciprocal_rank_fusion`)."""
    return reciprocal_rank_fusion(rankings, k=k)


# ---- chapter 20: GraphRAG ------------------------------------------------------------------------------
def follow_relations(G: nx.DiGraph, start: str, relations: list[str]) -> set:
    """Entities reached from ``start`` along ``relations`` in order (``"^rel"``: against the edge's
    direction), on a graph of :func:`labkit.retrieval.graphrag.build_graph` (edge ``relation`` /
    ``relations``)."""
    frontier = {start} if start in G else set()
    for rel in relations:
        back, name = rel.startswith("^"), rel.lstrip("^")
        edges = (e for n in frontier for e in (G.in_edges(n, data=True) if back else G.out_edges(n, data=True)))
        frontier = {(u if back else w) for u, w, d in edges if name in d.get("relations", [d["relation"]])}
    return frontier


# ---- chapter 22: data parallel -------------------------------------------------------------------------
def ring_allreduce_logged(xs: list[Tensor], log: list | None = None) -> list[Tensor]:
    """Each worker's result of :func:`labkit.parallel.ring_allreduce`; with ``log`` (a list), one
    ``(step, src, dst, chunk)`` per message of its schedule (step ``s < P-1``: worker ``i`` sends chunk
    ``(i - s) mod P`` to ``i+1`` and it is added; steps ``P-1 …``: the finished chunks are passed on)."""
    p = len(xs)
    if log is not None:
        for step in range(2 * (p - 1)):
            shift = 0 if step < p - 1 else 1
            log += [(step, i, (i + 1) % p, (i - step % (p - 1) + shift) % p) for i in range(p)]
    return ring_allreduce(xs).results


def ddp_step(replicas: list[nn.Module], shards: list[tuple[Tensor, Tensor]], loss_fn, lr: float) -> list[float]:
    """One data-parallel SGD step of ``P`` simulated ranks (what DDP does, in one process): each replica's
    backward on its own shard, gradients averaged over ranks into every replica's ``.grad`` (all-reduce / P),
    then ``p ← p − lr·g`` everywhere. Returns each rank's loss."""
    losses = []
    for model, (x, y) in zip(replicas, shards):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        losses.append(loss.item())
    with torch.no_grad():
        for ps in zip(*(m.parameters() for m in replicas)):
            mean = torch.stack([p.grad for p in ps]).mean(0)
            for p in ps:
                p.grad.copy_(mean)
                p.sub_(lr * mean)
    return losses


# ---- chapter 23: ZeRO ----------------------------------------------------------------------------------
def zero1_adam_step(params: list[Tensor], grads: list[Tensor], states: list[dict], lr: float = 1e-3,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> list[Tensor]:
    """ZeRO-1 on ``P`` simulated ranks: reduce-scatter the gradients (mean of shard ``r`` to rank ``r``,
    :func:`labkit.parallel.zero.flat_shard`), Adam (:class:`labkit.train.AdamW`, no decay) on each rank's
    shard with its own state ``states[r]`` (``step``, ``exp_avg``, ``exp_avg_sq`` of that shard only), then
    all-gather the updated shards into every rank's new parameter vector."""
    world, n = len(params), params[0].numel()
    shards = []
    for r in range(world):
        w = flat_shard(params[r], r, world)
        w.grad = torch.stack([flat_shard(g, r, world) for g in grads]).mean(0)
        opt = AdamW([w], lr=lr, betas=betas, eps=eps, weight_decay=0.0)
        opt.state[w] = states[r]                          # this rank's state, updated in place
        opt.step()
        shards.append(w.detach())
    full = torch.cat(shards)[:n].reshape(params[0].shape)
    return [full.clone() for _ in range(world)]


# ---- chapter 24: tensor and pipeline parallel ----------------------------------------------------------
def column_parallel(x: Tensor, w: Tensor, b: Tensor | None, world: int) -> list[Tensor]:
    """Rank ``r``'s slice of ``F.linear(x, w, b)``: rows ``r·out/P …`` of ``w`` (and of ``b``), as
    :class:`labkit.parallel.tensor.ColumnParallelLinear` keeps them."""
    bs = b.chunk(world, 0) if b is not None else [None] * world
    return [F.linear(x, w_r, b_r) for w_r, b_r in zip(w.chunk(world, 0), bs)]


def row_parallel(x_parts: list[Tensor], w: Tensor, b: Tensor | None, world: int) -> Tensor:
    """``Σ_r F.linear(x_r, w[:, cols_r])`` (the all-reduce) ``+ b`` once, as
    :class:`labkit.parallel.tensor.RowParallelLinear`."""
    out = sum(F.linear(x_r, w_r) for x_r, w_r in zip(x_parts, w.chunk(world, 1)))
    return out + b if b is not None else out


def one_f_one_b(stage: int, n_stages: int, n_micro: int) -> list[tuple[str, int]]:
    """Stage ``stage``'s ops in the 1F1B (PipeDream-Flush) schedule, ``[("F", 0), ..., ("B", n_micro - 1)]``,
    in the order :func:`labkit.parallel.pipeline_schedule` runs them."""
    ops = pipeline_schedule("1f1b", n_stages, n_micro).ops[stage]
    return [(op, i) for op, i, _, _ in sorted(ops, key=lambda o: o[2])]


# ---- chapter 07: the training step ---------------------------------------------------------------------
def adamw_step(p: Tensor, g: Tensor, state: dict, lr: float, betas: tuple[float, float], eps: float,
               weight_decay: float) -> None:
    """One :class:`labkit.train.AdamW` update of ``p`` in place with gradient ``g``; ``state`` is
    ``{"t": int, "m": Tensor, "v": Tensor}`` (this tensor's update count and moments), updated."""
    w = p.detach()                                        # shares p's storage: the update lands in p
    w.grad = g
    opt = AdamW([w], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    opt.state[w] = {"step": state["t"], "exp_avg": state["m"], "exp_avg_sq": state["v"]}
    opt.step()
    st = opt.state[w]
    state["t"], state["m"], state["v"] = int(st["step"]), st["exp_avg"], st["exp_avg_sq"]


# ---- chapter 10: quantization --------------------------------------------------------------------------
def quantize_per_channel(w: Tensor) -> tuple[Tensor, Tensor]:
    """absmax int8 with one scale per output row of an ``(out, in)`` weight:
    :func:`labkit.quant.absmax_quantize` with ``dim=0``; codes int8, scale float32 ``(out, 1)``."""
    return absmax_quantize(w, bits=8, dim=0)


# ---- chapter 11: memory and mixed precision ------------------------------------------------------------
def saved_bytes(fn: Callable[[], object], params) -> int:
    """Bytes of the storages autograd saves while ``fn()`` runs, each once, ``params`` left out
    (:func:`labkit.memory.saved_activation_bytes`)."""
    return saved_activation_bytes(fn, exclude=params)


def loss_scaler_step(grads: list[Tensor], scale: float, good_steps: int, growth_interval: int = 2000,
                     backoff_factor: float = 0.5, growth_factor: float = 2.0) -> tuple[bool, float, int]:
    """One step of :class:`labkit.memory.DynamicLossScaler` on the gradients of ``scale · loss``: unscale them
    in place, then ``(stepped, new_scale, new_good_steps)`` (an inf/NaN skips the step and backs off)."""
    scaler = DynamicLossScaler(init_scale=scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                               growth_interval=growth_interval)
    scaler.good_steps = good_steps
    found_inf = scaler.unscale_([SimpleNamespace(grad=g) for g in grads])
    scaler.update(found_inf)
    return not found_inf, scaler.scale, scaler.good_steps


# ---- chapter 13: the LoRA linear layer -----------------------------------------------------------------
from labkit.finetune.lora import LoRALinear  # noqa: E402  (appended with its chapter's adapters)

__all__ += ["lora_forward", "lora_merge", "lora_unmerge"]


def _lora_layer(weight: Tensor, A: Tensor, B: Tensor, alpha: float) -> LoRALinear:
    """A :class:`labkit.finetune.lora.LoRALinear` holding copies of ``W0`` (d_out, d_in), ``A``, ``B``."""
    d_out, d_in = weight.shape
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=False, dtype=weight.dtype), r=A.shape[0], alpha=float(alpha))
    with torch.no_grad():
        layer.base.weight.copy_(weight)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    return layer


def lora_forward(x: Tensor, weight: Tensor, bias: Tensor | None, A: Tensor, B: Tensor, alpha: float,
                 mask: Tensor | None = None) -> Tensor:
    """``x W0ᵀ + b + (α/r)·((mask ⊙ x) Aᵀ) Bᵀ``: the LoRA path is :class:`LoRALinear`'s forward (zero base,
    the given ``A``, ``B`` through ``functional_call``, so gradients reach them), on the masked input."""
    d_out, d_in = weight.shape
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=False, dtype=weight.dtype), r=A.shape[0], alpha=float(alpha))
    xl = x if mask is None else x * mask
    lora_path = functional_call(layer, {"base.weight": torch.zeros_like(weight), "lora_A": A, "lora_B": B}, (xl,))
    return F.linear(x, weight, bias) + lora_path


def lora_merge(weight: Tensor, A: Tensor, B: Tensor, alpha: float) -> Tensor:
    """``W0 + (α/r)·BA`` by :meth:`LoRALinear.merge` on a copy."""
    layer = _lora_layer(weight, A, B, alpha)
    layer.merge()
    return layer.base.weight.detach()


def lora_unmerge(weight: Tensor, A: Tensor, B: Tensor, alpha: float) -> Tensor:
    """``W − (α/r)·BA`` by :meth:`LoRALinear.unmerge` on a copy of the merged weight ``W``."""
    layer = _lora_layer(weight, A, B, alpha)
    layer.merged = True
    layer.unmerge()
    return layer.base.weight.detach()


# ---- chapter 14: prompt tuning's forward ---------------------------------------------------------------
from labkit.blocks import build_attention_mask  # noqa: E402  (appended with its chapter's adapter)
from labkit.finetune.peft import run_from_embeddings  # noqa: E402

__all__ += ["prompt_tuning_forward"]


def prompt_tuning_forward(model: nn.Module, input_ids: Tensor, prompt: Tensor,
                          attention_mask: Tensor | None = None) -> Tensor:
    """Logits ``(B, T, V)`` of ``model`` on ``[prompt; embed(input_ids)]``, the last ``T`` rows: what
    :class:`labkit.finetune.peft.PromptTuning` computes, for a given ``prompt (P, d)`` (no wrapper, no freezing);
    a 0/1 padding ``attention_mask (B, T)`` gets ``P`` ones in front."""
    B, T = input_ids.shape
    P = prompt.shape[0]
    x = torch.cat([prompt.expand(B, P, -1), model.model.embed_tokens(input_ids)], dim=1)
    am = None if attention_mask is None else torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)
    return run_from_embeddings(model, x, mask=build_attention_mask(am, B, P + T, 0, device=input_ids.device))[:, P:]
