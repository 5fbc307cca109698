"""The PEFT family (参数高效微调) beyond LoRA: adapters, BitFit, prompt tuning, prefix tuning / P-tuning v2.

Every method freezes the pretrained model and trains a small set of new (or selected) parameters.
They differ in **where** the trainable numbers enter the computation of a LLaMA block::

    x ──► RMSNorm ──► attention ──► [adapter] ──(+x)──► RMSNorm ──► SwiGLU ──► [adapter] ──(+)──►
                        ▲  keys/values of every layer get P extra positions   (prefix tuning / P-tuning v2)
    ids ──► embed ──► [P soft-prompt vectors prepended to the input only]    (prompt tuning)
    every Linear  y = W x  ──►  y = W x + b,  only b trains                    (BitFit)

* **Bottleneck adapter (适配器, Houlsby et al. 2019)**: ``A(h) = h + U σ(D h)`` after each sublayer, inside
  the residual branch; ``U`` starts at zero so ``A`` is the identity and the model is unchanged at init.
  Trainable per adapter: ``2·d·m + d + m`` (``m`` = bottleneck width).
* **BitFit (Ben Zaken et al. 2022)**: train only the bias terms. LLaMA's linear layers have **no biases**,
  so :func:`apply_bitfit` *adds* zero-initialized biases (identity at init) and trains those; optionally
  the RMSNorm scales as well (the closest thing to LayerNorm's bias/gain that BitFit trained).
* **Prompt tuning (提示微调, Lester et al. 2021)**: ``P`` trainable vectors in embedding space are prepended
  to the input embeddings; the sequence is ``P + T`` long, the returned logits are the last ``T``.
* **Prefix tuning (前缀微调, Li & Liang 2021) / P-tuning v2 (Liu et al. 2022)**: every layer gets ``P``
  trainable **key/value** vectors (not queries), i.e. a pre-filled KV cache; the output length stays ``T``.
  Prefix tuning trains them through an MLP re-parameterization (``reparam=True``); P-tuning v2 trains them
  directly (``reparam=False``). Real tokens take RoPE positions ``P, P+1, ...`` (as after any cached
  prefix, and as ``peft`` + ``transformers`` do), so the model is exactly "run with a pre-filled cache".

All wrappers keep the interface of :class:`labkit.model.Llama` that :mod:`labkit.finetune.sft` uses
(``model(ids, kv_cache)``, ``new_cache()``), and each has a ``packed_forward(batch)`` so the methods train
through the same loop (:func:`labkit.finetune.sft.train_sft`) on packed rows as full fine-tuning and LoRA.
Reference: ``peft.PromptTuningConfig`` and ``peft.PrefixTuningConfig`` give the same logits (tests).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.blocks.masks import build_attention_mask
from labkit.core.io import atomic_path, atomic_write_json
from labkit.finetune.lora.layer import count_trainable
from labkit.model.llama import Llama, ModelCache

__all__ = [
    "BottleneckAdapter", "add_adapters", "adapter_param_count", "apply_bitfit", "PromptTuning",
    "PrefixTuning", "p_tuning_v2", "run_from_embeddings", "METHODS", "prepare_method", "finetune_method", "task_loss",
    "trainable_state_dict", "load_trainable",
]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def _pos_int(name: str, value: Any, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}; {hint}")
    return value


def _check_llama(model: Any, what: str) -> Llama:
    if isinstance(model, (PromptTuning, PrefixTuning)):
        raise ValueError(f"{what}: the model is already wrapped by {type(model).__name__}; apply one prompt "
                         "method to a fresh labkit.model.Llama (stacking two would hide which one helped)")
    if not isinstance(model, Llama):
        raise TypeError(f"{what} expects a labkit.model.Llama, got {type(model).__name__}")
    return model


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


# ------------------------------------------------------------------------------------------- adapters
class BottleneckAdapter(nn.Module):
    """``A(h) = h + U σ(D h)``: down-project ``dim → bottleneck``, nonlinearity, up-project back, residual.

    ``D`` (``down``) has nn.Linear's default init; ``U`` (``up``) is **zero** (weight and bias), so at
    init ``A(h) = h`` exactly and the adapted model equals the base. Shapes: ``h (..., dim) → (..., dim)``.
    Parameters: ``2·dim·bottleneck + dim + bottleneck``.
    """

    def __init__(self, dim: int, bottleneck: int, activation: str = "relu") -> None:
        super().__init__()
        _pos_int("dim", dim, "it is the width of the hidden states")
        _pos_int("bottleneck", bottleneck, "typical values are dim/16 .. dim/4")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.dim, self.bottleneck, self.activation = dim, bottleneck, activation
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(_ACTIVATIONS[self.activation](self.down(h)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bottleneck={self.bottleneck}, activation={self.activation}"


def adapter_param_count(dim: int, bottleneck: int, n_layers: int, n_per_layer: int = 2) -> int:
    """``n_layers · n_per_layer · (2·dim·m + dim + m)``; e.g. d=64, m=16: one adapter = 2,128."""
    return n_layers * n_per_layer * (2 * dim * bottleneck + dim + bottleneck)


def _adapter_hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
    return module.adapter(output)


def add_adapters(model: Llama, bottleneck: int, where: Sequence[str] = ("attn", "mlp"),
                 activation: str = "relu") -> list[str]:
    """Houlsby adapters: one :class:`BottleneckAdapter` after each chosen sublayer of every block (in place).

    The block becomes ``h = x + A_attn(attn(norm(x)))``, ``out = h + A_mlp(mlp(norm(h)))``: the adapter acts
    on the sublayer's output *inside* the residual branch. The adapter is registered as a child named
    ``adapter`` of ``self_attn`` / ``mlp`` (so the base weights keep their names) and applied by a forward
    hook. Everything else is frozen. Returns the names of the adapter modules.

    Raises:
        ValueError: ``bottleneck < 1``; ``where`` empty or not a subset of ``("attn", "mlp")``; the model
            already has adapters.
    """
    _check_llama(model, "add_adapters")
    _pos_int("bottleneck", bottleneck, "typical values are dim/16 .. dim/4")
    if isinstance(where, str):
        where = (where,)
    where = tuple(where)
    bad = [w for w in where if w not in ("attn", "mlp")]
    if not where or bad or len(set(where)) != len(where):
        raise ValueError(f"where must be a non-empty subset of ('attn', 'mlp') without repeats, got {where!r}")
    if any(hasattr(m, "adapter") for layer in model.model.layers for m in (layer.self_attn, layer.mlp)):
        raise ValueError("the model already has adapters; adding them twice would stack two per sublayer. "
                         "Start from a fresh model (labkit.model.load_pretrained())")
    _freeze(model)
    names = []
    for i, layer in enumerate(model.model.layers):
        for w in where:
            sub = layer.self_attn if w == "attn" else layer.mlp
            sub.adapter = BottleneckAdapter(model.config.dim, bottleneck, activation)
            sub.register_forward_hook(_adapter_hook)
            names.append(f"model.layers.{i}.{'self_attn' if w == 'attn' else 'mlp'}.adapter")
    return names


# --------------------------------------------------------------------------------------------- BitFit
def apply_bitfit(model: Llama, norms: bool = False) -> list[str]:
    """BitFit for a bias-free LLaMA: give every ``nn.Linear`` inside the decoder blocks a **zero** bias and
    train only those (in place). ``norms=True`` also trains the RMSNorm scales (not biases, say so if you
    report it). ``lm_head`` and the embedding stay frozen (they are tied in the shipped model).

    Zero biases leave every output unchanged, so the model is the base model at init. Trainable: the sum
    of the output widths of the 7 projections of each block, ``L·(h·hd + 2·kv·hd + d + 2·f + d)``.
    Returns the names of the trainable parameters.

    Raises:
        ValueError: the model already has biases (BitFit applied twice, or a model with biases: then train
            those directly).
    """
    _check_llama(model, "apply_bitfit")
    linears = [(n, m) for n, m in model.model.layers.named_modules() if isinstance(m, nn.Linear)]
    if any(m.bias is not None for _, m in linears):
        raise ValueError("the model's linear layers already have biases (BitFit applied twice?); start from "
                         "a fresh model, or for a model that has biases just unfreeze them")
    _freeze(model)
    names = []
    for n, m in linears:
        m.bias = nn.Parameter(torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device))
        names.append(f"model.layers.{n}.bias")
    if norms:
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.requires_grad_(True)
                names.append(n)
    return names


# ------------------------------------------------------------------------------------ running the stack
def run_from_embeddings(model: Llama, x: Tensor, kv_cache: ModelCache | None = None, *,
                        mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
    """Logits ``(B, T, V)`` of the decoder stack fed with embeddings ``x (B, T, dim)`` instead of token ids.

    ``mask`` is a bool ``(B, 1, T, past + T)`` mask (True = may attend, see
    :func:`labkit.model.build_attention_mask`) or ``None`` (bottom-right causal); ``positions`` RoPE positions
    ``(T,)`` or ``(B, T)`` (default ``past .. past + T - 1``). This is ``Llama.hidden_states`` after its
    embedding lookup (``labkit.model`` only accepts ids).
    """
    for i, layer in enumerate(model.model.layers):
        x = layer(x, mask=mask, positions=positions, kv_cache=kv_cache[i] if kv_cache is not None else None)
    return model.lm_head(model.model.norm(x))


def _check_cache(model: Llama, kv_cache: Any) -> None:
    if kv_cache is not None and (not isinstance(kv_cache, ModelCache) or len(kv_cache) != model.config.n_layers):
        raise TypeError(f"kv_cache must be a ModelCache with {model.config.n_layers} layers; use .new_cache()")


class _PromptWrapper(nn.Module):
    """Shared plumbing: hold a frozen Llama, expose ``config`` / ``new_cache`` like a Llama."""

    def __init__(self, model: Llama, what: str) -> None:
        super().__init__()
        _check_llama(model, what)
        _freeze(model)
        self.model = model

    @property
    def config(self):  # noqa: ANN201
        return self.model.config

    def new_cache(self) -> ModelCache:
        """An empty cache; the first forward call fills in what the method needs (prompt / prefix)."""
        return self.model.new_cache()


# --------------------------------------------------------------------------------------- prompt tuning
class PromptTuning(_PromptWrapper):
    """Prompt tuning: ``P`` trainable embedding vectors ``E_p ∈ R^{P×d}`` prepended to the input embeddings.

    ``forward(input_ids (B, T), kv_cache=None, *, attention_mask=None, position_ids=None,
    return_prompt=False) -> logits``:

    * with no cache or an empty one the model runs on ``[E_p; embed(ids)]`` (``P + T`` positions,
      RoPE positions ``0 .. P+T-1``, causal) and returns the logits of the **last T positions**
      ``(B, T, V)``, aligned with ``input_ids`` and its labels (``return_prompt=True`` returns all
      ``(B, P + T, V)``, which is what ``peft`` returns);
    * with a non-empty cache (generation) the prompt is already in it and the ids run as usual.

    ``attention_mask`` (0/1 padding ``(B, T)``) gets ``P`` ones prepended; ``position_ids`` ``(B, T)`` are
    shifted by ``P``. Args: ``init="vocab"`` copies the embeddings of ``P`` random vocabulary tokens
    (Lester et al.'s better init), ``"random"`` draws N(0, 0.02²) like the model's own embedding init.
    """

    def __init__(self, model: Llama, n_virtual_tokens: int, init: str = "vocab", seed: int = 0) -> None:
        super().__init__(model, "PromptTuning")
        P = _pos_int("n_virtual_tokens", n_virtual_tokens, "typical prompt lengths are 8 .. 100")
        if init not in ("vocab", "random"):
            raise ValueError(f"init must be 'vocab' or 'random', got {init!r}")
        g = torch.Generator().manual_seed(seed)
        W = model.model.embed_tokens.weight
        if init == "vocab":
            ids = torch.randperm(model.config.vocab_size, generator=g)[:P]
            ids = ids.repeat(math.ceil(P / len(ids)))[:P]
            prompt = W.detach()[ids].clone()
        else:
            prompt = torch.randn(P, W.shape[1], generator=g, dtype=W.dtype) * 0.02
        self.n_virtual_tokens = P
        self.prompt = nn.Parameter(prompt.to(W.device))

    def forward(self, input_ids: Tensor, kv_cache: ModelCache | None = None, *,
                attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                return_prompt: bool = False) -> Tensor:
        m, P = self.model, self.n_virtual_tokens
        m._check_ids(input_ids)
        _check_cache(m, kv_cache)
        if kv_cache is not None and kv_cache.length > 0:  # generation: the prompt is already cached
            B, T = input_ids.shape
            if (attention_mask is not None and attention_mask.dtype != torch.bool
                    and attention_mask.shape[-1] == kv_cache.length + T - P):  # the caller's mask omits the prompt
                attention_mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)
            return m(input_ids, kv_cache, attention_mask=attention_mask, position_ids=position_ids)
        B, T = input_ids.shape
        x = torch.cat([self.prompt.expand(B, P, -1), m.model.embed_tokens(input_ids)], dim=1)
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)
        elif attention_mask is not None:
            raise ValueError("PromptTuning takes a 0/1 padding attention_mask (B, T); for packed rows "
                             "use packed_forward(batch), which inserts the prompt before every document")
        mask = build_attention_mask(attention_mask, B, P + T, 0, device=input_ids.device)
        positions = None
        if position_ids is not None:
            pos = position_ids.expand(B, T) if position_ids.dim() == 1 else position_ids
            positions = torch.cat([torch.arange(P, device=pos.device).expand(B, P), pos + P], dim=1)
        logits = run_from_embeddings(m, x, kv_cache, mask=mask, positions=positions)
        return logits if return_prompt else logits[:, P:]

    def packed_forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits ``(B, T, V)`` of a packed batch (``input_ids``, ``doc_ids``, ``position_ids``; see
        :func:`labkit.finetune.sft.pack`) with the soft prompt inserted **before every document**.

        Row layout ``[prompt, doc0, prompt, doc1, ..., padding]`` of length ``T + P·max_docs``; a document
        sees its own prompt and itself (block-diagonal mask), prompt positions are ``0..P-1`` and the
        document's ``P, P+1, ...``: each document computes what :meth:`forward` computes for it alone.
        """
        from labkit.blocks.masks import document_causal_mask

        ids, doc, pos = batch["input_ids"], batch["doc_ids"], batch["position_ids"]
        m, P = self.model, self.n_virtual_tokens
        B, T = ids.shape
        n_docs = doc.max(dim=1).values + 1                                       # (B,)
        D = int(n_docs.max())
        T2 = T + P * D
        t = torch.arange(T, device=ids.device).expand(B, T)
        # real tokens move right by P per document started so far (padding: by all of the row's documents)
        new_idx = t + P * torch.where(doc >= 0, doc + 1, n_docs[:, None])          # (B, T)
        d = torch.arange(D, device=ids.device)
        starts = ((doc[:, None, :] == d[None, :, None]).int().argmax(-1))         # (B, D) first token of doc d
        valid = d[None, :] < n_docs[:, None]                                     # (B, D)
        base = torch.where(valid, starts + P * d, T + P * d)                     # (B, D) unused docs -> tail
        j = torch.arange(P, device=ids.device)
        v_idx = (base[:, :, None] + j).reshape(B, D * P)                         # (B, D·P)
        emb = m.model.embed_tokens(ids)
        dim = emb.shape[-1]
        x = emb.new_zeros(B, T2, dim)
        x = x.scatter(1, new_idx[..., None].expand(B, T, dim), emb)
        x = x.scatter(1, v_idx[..., None].expand(B, D * P, dim), self.prompt.repeat(D, 1).expand(B, D * P, dim))
        doc2 = torch.full((B, T2), -1, dtype=doc.dtype, device=doc.device)
        doc2 = doc2.scatter(1, new_idx, doc).scatter(1, v_idx, torch.where(valid, d, -1).repeat_interleave(P, 1))
        pos2 = torch.zeros((B, T2), dtype=pos.dtype, device=pos.device)
        pos2 = pos2.scatter(1, new_idx, pos + P).scatter(1, v_idx, j.repeat(D).expand(B, D * P))
        mask = document_causal_mask(doc2)[:, None]
        logits = run_from_embeddings(m, x, mask=mask, positions=pos2)
        return logits.gather(1, new_idx[..., None].expand(B, T, logits.shape[-1]))


# --------------------------------------------------------------------------------------- prefix tuning
class PrefixTuning(_PromptWrapper):
    """Prefix tuning / P-tuning v2: ``P`` trainable key and value vectors in **every layer**.

    Layer ``l`` attends over ``[K_p^l; K^l]`` and ``[V_p^l; V^l]``: for a query ``q`` (at its position),
    ``softmax(q [K_p; K]ᵀ / √hd) [V_p; V]``. Queries are unchanged, so the output has the input's length
    ``T``. It is exactly a KV cache pre-filled with the prefix (:meth:`prefilled_cache`): real tokens take
    RoPE positions ``P .. P+T-1`` as after any cached prefix (the prefix keys themselves are free
    parameters and are not rotated; since RoPE is relative, shifting all real positions by ``P`` only
    changes how queries meet the prefix keys, which training absorbs; what matters is using the same
    convention in training and generation, which this class does).

    Parameters, shape ``(L, 2, n_kv, P, hd)`` once materialized (:meth:`prefix_kv`):

    * ``reparam=False`` (P-tuning v2): ``prefix`` is that tensor itself: ``L·2·P·n_kv·hd`` numbers;
    * ``reparam=True`` (Li & Liang): ``embedding (P, e)`` → ``Linear(e, hidden)`` → tanh →
      ``Linear(hidden, L·2·n_kv·hd)`` with ``e = n_kv·hd`` and ``hidden`` (default ``e``), as
      ``peft.PrefixTuningConfig(prefix_projection=True)``. After training, :meth:`prefix_kv` can be stored
      and the MLP dropped.

    ``init="tokens"`` starts from the keys/values the frozen model computes for ``P`` random vocabulary
    tokens (Li & Liang found real-word activations train better than noise); ``"random"`` is N(0, 1)
    (peft's default embedding init) for ``reparam=False``. A prefix is **never** an exact identity at init:
    even zero keys and values take softmax mass ``P·e^0`` from the real tokens (see the notebook).
    """

    def __init__(self, model: Llama, n_prefix: int, reparam: bool = False, hidden: int | None = None,
                 init: str = "tokens", seed: int = 0) -> None:
        super().__init__(model, "PrefixTuning")
        P = _pos_int("n_prefix", n_prefix, "typical prefix lengths are 8 .. 64")
        if init not in ("tokens", "random"):
            raise ValueError(f"init must be 'tokens' or 'random', got {init!r}")
        if not isinstance(reparam, bool):
            raise TypeError(f"reparam must be True or False, got {reparam!r}")
        c = model.config
        self.n_prefix, self.reparam = P, reparam
        self.L, self.n_kv, self.hd = c.n_layers, c.n_kv_heads, c.head_dim
        e = self.n_kv * self.hd
        g = torch.Generator().manual_seed(seed)
        if reparam:
            hidden = e if hidden is None else _pos_int("hidden", hidden, "the MLP width, e.g. 512")
            self.embedding = nn.Parameter(torch.randn(P, e, generator=g))
            self.mlp = nn.Sequential(nn.Linear(e, hidden), nn.Tanh(), nn.Linear(hidden, self.L * 2 * e))
            if init == "tokens":  # fit the MLP's output bias to the token keys/values: the MLP starts near them
                with torch.no_grad():
                    target = self._token_kv(g).permute(3, 0, 1, 2, 4).reshape(P, -1)
                    self.mlp[2].bias.copy_(target.mean(0))
        else:
            kv = self._token_kv(g) if init == "tokens" else torch.randn(self.L, 2, self.n_kv, P, self.hd, generator=g)
            self.prefix = nn.Parameter(kv)

    @torch.no_grad()
    def _token_kv(self, g: torch.Generator) -> Tensor:
        """Keys/values ``(L, 2, n_kv, P, hd)`` of the frozen model on ``P`` random vocabulary tokens."""
        ids = torch.randint(0, self.model.config.vocab_size, (1, self.n_prefix), generator=g)
        cache = self.model.new_cache()
        self.model(ids, cache)
        return torch.stack([torch.stack([c.k[0], c.v[0]]) for c in cache]).clone()

    def prefix_kv(self) -> Tensor:
        """The per-layer prefix keys and values ``(L, 2, n_kv, P, hd)`` (through the MLP if ``reparam``)."""
        if not self.reparam:
            return self.prefix
        out = self.mlp(self.embedding)                                        # (P, L·2·n_kv·hd)
        return out.view(self.n_prefix, self.L, 2, self.n_kv, self.hd).permute(1, 2, 3, 0, 4)

    def prefilled_cache(self, batch_size: int, cache: ModelCache | None = None) -> ModelCache:
        """A :class:`ModelCache` holding the prefix (length ``P``) for ``batch_size`` rows (fills ``cache``)."""
        cache = self.model.new_cache() if cache is None else cache
        kv = self.prefix_kv()
        for layer, c in enumerate(cache):
            c.update(kv[layer, 0].expand(batch_size, -1, -1, -1), kv[layer, 1].expand(batch_size, -1, -1, -1))
        return cache

    def forward(self, input_ids: Tensor, kv_cache: ModelCache | None = None, *,
                attention_mask: Tensor | None = None, position_ids: Tensor | None = None) -> Tensor:
        """Logits ``(B, T, V)``, the same length as ``input_ids``.

        An empty (or no) ``kv_cache`` is first filled with the prefix; then this is the base model run
        with that cache. ``attention_mask``: 0/1 padding ``(B, T)`` or ``(B, past + T)`` (ones are prepended
        for the prefix), or a bool ``(T, T)`` / ``(B, T, T)`` mask (the prefix columns are all True: every
        token sees the whole prefix). ``position_ids`` are used as given (pass ``P + ...`` to keep the
        convention that real tokens start at ``P``).
        """
        m, P = self.model, self.n_prefix
        m._check_ids(input_ids)
        _check_cache(m, kv_cache)
        B, T = input_ids.shape
        if kv_cache is None or kv_cache.length == 0:
            kv_cache = self.prefilled_cache(B, kv_cache)
        past = kv_cache.length
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                am = attention_mask[:, 0] if attention_mask.dim() == 4 else attention_mask
                am = am if am.dim() == 3 else am.expand(B, T, -1)
                if am.shape[-1] == T and past == P:
                    am = torch.cat([am.new_ones(B, T, P), am], dim=-1)
                attention_mask = am
            elif attention_mask.shape[-1] == past + T - P:
                attention_mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)
        return m(input_ids, kv_cache, attention_mask=attention_mask, position_ids=position_ids)

    def packed_forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of a packed batch: every document sees the prefix and itself (document mask + prefix
        columns), with positions ``P + position_ids`` (each document restarts at ``P``)."""
        from labkit.blocks.masks import document_causal_mask

        mask = document_causal_mask(batch["doc_ids"])
        return self(batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"] + self.n_prefix)


def p_tuning_v2(model: Llama, n_prefix: int, init: str = "tokens", seed: int = 0) -> PrefixTuning:
    """P-tuning v2 = deep prompts in every layer with no re-parameterization: ``PrefixTuning(reparam=False)``."""
    return PrefixTuning(model, n_prefix, reparam=False, init=init, seed=seed)


# ----------------------------------------------------------------------------- saving what was trained
def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``{name: tensor}`` of the parameters with ``requires_grad`` (what a PEFT method stores per task)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a :func:`trainable_state_dict` into a model prepared with the same method and sizes."""
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(state) != want:
        raise ValueError(f"keys do not fit: missing {sorted(want - set(state))[:4]}, unexpected "
                         f"{sorted(set(state) - want)[:4]}; prepare the model with the same method first")
    with torch.no_grad():
        for n, t in state.items():
            if params[n].shape != t.shape:
                raise ValueError(f"{n}: stored shape {tuple(t.shape)} != model's {tuple(params[n].shape)}")
            params[n].copy_(t)


# --------------------------------------------------------------------------- chapter 12: the comparison
#: name → settings. Same loop, data, steps, batch and schedule as chapter 11 (TASK_RUN); each lr is the best
#: final training loss among 2–4 tried values (see lr_tried in data/peft_methods/results.json).
METHODS: dict[str, dict[str, Any]] = {
    "adapter": dict(kind="adapter", bottleneck=16, lr=1e-2),
    "bitfit": dict(kind="bitfit", lr=5e-2),
    "prompt": dict(kind="prompt", n=16, lr=1e-1),
    "prefix": dict(kind="prefix", n=16, reparam=True, lr=3e-2),
    "ptuning_v2": dict(kind="prefix", n=16, reparam=False, lr=1e-1),
}
#: Where ``python -m labkit.finetune.peft task`` writes results and trained parameters.
PEFT_DIR_NAME = "peft_methods"
def _run_settings() -> dict[str, Any]:
    from labkit.finetune.lora.layer import TASK_RUN

    return dict(TASK_RUN)


def prepare_method(model: Llama, name: str) -> tuple[nn.Module, Any]:
    """Apply method ``name`` of :data:`METHODS` to ``model``; returns ``(trainable model, forward)`` where
    ``forward(model, batch)`` is the packed forward for :func:`labkit.finetune.sft.train_sft`."""
    from labkit.finetune.sft.trainer import packed_forward

    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    s = METHODS[name]
    if s["kind"] == "adapter":
        add_adapters(model, s["bottleneck"])
        return model, packed_forward
    if s["kind"] == "bitfit":
        apply_bitfit(model)
        return model, packed_forward
    wrapped: PromptTuning | PrefixTuning
    if s["kind"] == "prompt":
        wrapped = PromptTuning(model, s["n"])
    else:
        wrapped = PrefixTuning(model, s["n"], reparam=s["reparam"])
    return wrapped, lambda mdl, batch: mdl.packed_forward(batch)


@torch.no_grad()
def task_loss(model: nn.Module, tokenizer: Any, records: Sequence[dict[str, Any]], forward: Any = None,
              max_len: int = 128) -> float:
    """Mean next-token cross-entropy of the **answer tokens** (assistant content + ``<|end|>``) of ``records``,
    token-weighted over the whole set: a graded test metric next to exact match (which is 0/1 per answer).

    ``forward(model, batch)`` is the method's packed forward (default :func:`labkit.finetune.sft.packed_forward`).
    """
    from labkit.finetune import sft

    forward = sft.packed_forward if forward is None else forward
    packed = sft.pack([sft.encode_example(r, tokenizer) for r in records], max_len, "ffd")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for s in range(0, packed.input_ids.shape[0], 16):
        batch = {k: getattr(packed, k)[s:s + 16] for k in ("input_ids", "labels", "position_ids", "doc_ids")}
        logits = forward(model, batch)
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                              ignore_index=sft.IGNORE_INDEX, reduction="sum")
        total += float(nll)
        count += int((labels != sft.IGNORE_INDEX).sum())
    model.train(was_training)
    return total / count


def finetune_method(name: str, *, steps: int | None = None, evaluate: bool = True, progress: bool = True,
                    lr: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the shipped tiny LLaMA on the task with PEFT method ``name`` (same loop and settings as
    :func:`labkit.finetune.lora.finetune_task`); returns ``(model, result)`` with trainable/total counts, seconds per
    step, the loss curve and the exact-match test score per skill."""
    from labkit.core.repro import seed_everything
    from labkit.datasets import task as task_data
    from labkit.finetune import sft
    from labkit.model.llama import load_pretrained

    run = _run_settings()
    steps = run["steps"] if steps is None else steps
    lr = METHODS[name]["lr"] if lr is None else lr
    seed_everything(run["seed"])
    base, tok = load_pretrained()
    total = base.num_parameters()
    model, fwd = prepare_method(base, name)
    trainable, _ = count_trainable(model)
    train = [sft.encode_example(x, tok) for x in task_data.load_task("train")]
    t0 = time.perf_counter()
    losses = sft.train_sft(model, train, steps=steps, batch_size=run["batch_size"], max_len=run["max_len"], lr=lr,
                           seed=run["seed"], warmup=run["warmup"], forward=fwd, progress=progress)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"method": name, **{k: v for k, v in METHODS[name].items()}, "lr": lr,
                              "steps": steps, "trainable": trainable, "total": total,
                              "sec_per_step": round(seconds / steps, 4),
                              "losses": [round(x, 6) for x in losses]}
    if evaluate:
        test = task_data.load_task("test")
        result["test_loss"] = round(task_loss(model, tok, test, fwd), 4)
        result["scores"], _ = sft.evaluate_task(model, tok, test)
    return model, result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.finetune.peft task [--only a,b] [--steps N]``: train every method (+ full and LoRA r=8 for
    the comparison), write ``data/peft_methods/results.json`` and each PEFT method's trained parameters."""
    import argparse

    from safetensors.torch import save_file

    from labkit.core.paths import DATA
    from labkit.finetune.lora.layer import TASK_VARIANTS, finetune_task

    ap = argparse.ArgumentParser(prog="python -m labkit.finetune.peft")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("task", help="fine-tune the tiny LLaMA on the task with every PEFT method")
    t.add_argument("--out", default=str(DATA / PEFT_DIR_NAME))
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--only", default=None, help="comma-separated names, e.g. prompt,lora_r8")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    names = ["_base", "full", "lora_r8", *METHODS]
    for name in names:
        if args.only and name not in args.only.split(","):
            continue
        if name == "_base":  # the pretrained model, no fine-tuning: the baseline
            from labkit.datasets import task as task_data
            from labkit.finetune import sft
            from labkit.model.llama import load_pretrained

            model, tok = load_pretrained()
            test = task_data.load_task("test")
            results[name] = {"test_loss": round(task_loss(model, tok, test), 4),
                             "scores": sft.evaluate_task(model, tok, test)[0]}
            atomic_write_json(res_path, results, sort_keys=True)
            continue
        if name in ("full", "lora_r8"):
            method, r = ("full", None) if name == "full" else ("lora", 8)
            lr = next(v[2] for v in TASK_VARIANTS if v[0] == method and v[1] == r)
            steps = args.steps or _run_settings()["steps"]
            model, res = finetune_task(method, r, lr=lr, steps=steps)
            from labkit.datasets import task as task_data
            from labkit.model.llama import load_pretrained

            tok = load_pretrained()[1]
            res = {"method": name, "lr": lr, "steps": steps, "trainable": res["trainable"], "total": res["total"],
                   "sec_per_step": round(res["train_seconds"] / steps, 4), "losses": res["losses"],
                   "test_loss": round(task_loss(model, tok, task_data.load_task("test")), 4), "scores": res["scores"]}
        else:
            model, res = finetune_method(name, steps=args.steps)
            tensors = {k: v.contiguous() for k, v in trainable_state_dict(model).items()}
            with atomic_path(out / f"{name}.safetensors") as tmp:
                save_file(tensors, tmp)
        print(f"{name:11s} trainable {res['trainable']:>8,d}  loss {res['losses'][-1]:.3f}  "
              f"test loss {res['test_loss']:.3f}  score {res['scores']['all']:.3f}  {res['sec_per_step'] * 1000:.0f} ms/step", flush=True)
        results[name] = res
        atomic_write_json(res_path, results, sort_keys=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
