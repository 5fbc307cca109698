"""Gradient (activation) checkpointing (chapter 11): keep only a block's inputs, recompute its insides in backward.

Saved activations drop from every intermediate of every block to the blocks' inputs, at the cost of one
extra forward pass per checkpointed block during backward.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CheckpointedBlock", "checkpoint_blocks"]

class CheckpointedBlock(nn.Module):
    """Wraps a block so its forward runs under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``:
    only the block's inputs are saved; its internals are recomputed during backward."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(blocks: nn.ModuleList, every: int = 1) -> int:
    """Wrap every ``every``-th block of ``blocks`` in :class:`CheckpointedBlock`, in place. Returns how many.

    Parameters stay the same objects, so optimizers and gradients are unaffected (state-dict keys gain
    a ``.block`` segment)."""
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"`blocks` must be an nn.ModuleList (e.g. model.model.layers), got {type(blocks).__name__}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"`every` must be a positive int, got {every!r}")
    n = 0
    for i in range(0, len(blocks), every):
        if not isinstance(blocks[i], CheckpointedBlock):
            blocks[i] = CheckpointedBlock(blocks[i])
            n += 1
    return n
