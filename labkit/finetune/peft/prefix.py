"""Prefix tuning (前缀微调, Li & Liang 2021) and P-tuning v2 (Liu et al. 2022), chapter 14.

Every layer gets ``P`` trainable **key/value** vectors (not queries), i.e. a pre-filled KV cache; the output
length stays ``T``::

    attention ◄── keys/values of every layer get P extra positions

Prefix tuning trains them through an MLP re-parameterization (``reparam=True``); P-tuning v2 trains them
directly (``reparam=False``). Real tokens take RoPE positions ``P, P+1, ...`` (as after any cached prefix,
and as ``peft`` + ``transformers`` do), so the model is exactly "run with a pre-filled cache".
Reference: ``peft.PrefixTuningConfig`` gives the same logits (tests).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from labkit.blocks.masks import document_causal_mask
from labkit.finetune.peft.common import _check_cache, _pos_int, _PromptWrapper
from labkit.model import Llama, ModelCache

__all__ = ["PrefixTuning", "p_tuning_v2"]


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
        mask = document_causal_mask(batch["doc_ids"])
        return self(batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"] + self.n_prefix)


def p_tuning_v2(model: Llama, n_prefix: int, init: str = "tokens", seed: int = 0) -> PrefixTuning:
    """P-tuning v2 = deep prompts in every layer with no re-parameterization: ``PrefixTuning(reparam=False)``."""
    return PrefixTuning(model, n_prefix, reparam=False, init=init, seed=seed)
