"""Prompt tuning (提示微调, Lester et al. 2021), chapter 14, and running a LLaMA from embeddings.

The PEFT family (参数高效微调) freezes the pretrained model and trains a small set of new (or selected)
parameters; the methods differ in **where** the trainable numbers enter a LLaMA block::

    x ──► RMSNorm ──► attention ──► [adapter] ──(+x)──► RMSNorm ──► SwiGLU ──► [adapter] ──(+)──►
                        ▲  keys/values of every layer get P extra positions   (prefix tuning / P-tuning v2)
    ids ──► embed ──► [P soft-prompt vectors prepended to the input only]    (prompt tuning)
    every Linear  y = W x  ──►  y = W x + b,  only b trains                    (BitFit)

Adapters are :mod:`labkit.finetune.peft.adapters`, BitFit :mod:`labkit.finetune.peft.bitfit`, prefix tuning
:mod:`labkit.finetune.peft.prefix`. Here: **prompt tuning**, ``P`` trainable vectors in embedding space
prepended to the input embeddings; the sequence is ``P + T`` long, the returned logits are the last ``T``.

All wrappers keep the interface of :class:`labkit.model.Llama` that :mod:`labkit.finetune.sft` uses
(``model(ids, kv_cache)``, ``new_cache()``), and each has a ``packed_forward(batch)`` so the methods train
through the same loop (:func:`labkit.finetune.sft.train_sft`) on packed rows as full fine-tuning and LoRA.
Reference: ``peft.PromptTuningConfig`` gives the same logits (tests).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from labkit.blocks.masks import build_attention_mask, document_causal_mask
from labkit.finetune.peft.common import _check_cache, _pos_int, _PromptWrapper
from labkit.model import Llama, ModelCache

__all__ = ["PromptTuning", "run_from_embeddings"]


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
