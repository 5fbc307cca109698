"""Memory measured, not counted (chapters 04, 11): live tensor bytes under a dispatch mode, bytes
saved for backward, and a power-law fit of bytes against a size.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["peak_tensor_bytes", "SavedRecord", "SavedTensorLog", "saved_activation_bytes", "fit_power_law"]


class _TensorBytesTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of every tensor storage created by torch ops while active, and frees them when
    the storage dies; ``peak`` is the high-water mark. Deterministic (it does not read the allocator)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._owned: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._owned.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, Tensor):
                st = t.untyped_storage()
                key = st.data_ptr()
                if key in self._owned or key in inputs or st.nbytes() == 0:
                    continue  # a view of (or in-place write to) an existing storage: no new memory
                self._owned[key] = st.nbytes()
                self.live += st.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key)
        return out


def peak_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` and return ``(result, peak)`` where ``peak`` is the largest total size
    (bytes) of tensors created *inside* ``fn`` that were alive at the same time. Inputs do not count.

    It intercepts every ATen op (``TorchDispatchMode``), so it sees what ``tracemalloc`` cannot (torch
    allocates outside Python's allocator) and, unlike RSS, it is exact and reproducible.
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be a callable (the computation to measure), got {type(fn).__name__}")
    tracker = _TensorBytesTracker()
    with torch.no_grad(), tracker:
        result = fn(*args, **kwargs)
    return result, tracker.peak


@dataclass(frozen=True)
class SavedRecord:
    """One tensor that autograd saved for backward."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int          # bytes of its storage
    new: bool            # first time this storage was seen (False: a view/duplicate, not counted again)
    excluded: bool       # storage belongs to an excluded tensor (e.g. a parameter)


class SavedTensorLog:
    """Context manager that records every tensor autograd saves for backward.

    ``torch.autograd.graph.saved_tensors_hooks(pack, unpack)`` calls ``pack`` for each saved tensor.
    Storages are de-duplicated (a tensor saved by two ops, or several views of one buffer, count once)
    and storages of ``exclude`` (pass ``model.parameters()``: weights are model state, not activations)
    are left out. ``total_bytes`` is then the activation memory the graph keeps alive until backward.

    >>> with SavedTensorLog(exclude=model.parameters()) as log:   # doctest: +SKIP
    ...     loss = model(x).sum()
    >>> log.total_bytes
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: set[int] = set()
        self.records: list[SavedRecord] = []
        self._hooks: Any = None

    def _pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        new = key not in self._seen
        self._seen.add(key)
        self.records.append(SavedRecord(tuple(t.shape), t.dtype, storage.nbytes(), new, key in self._excluded))
        return t

    def __enter__(self) -> "SavedTensorLog":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    def bytes_where(self, predicate: Callable[[SavedRecord], bool]) -> int:
        """Activation bytes (new, not excluded) of the records for which ``predicate(record)`` is true."""
        return sum(r.nbytes for r in self.records if r.new and not r.excluded and predicate(r))

    @property
    def total_bytes(self) -> int:
        """Activation bytes: storages saved for backward, each counted once, excluded ones left out."""
        return self.bytes_where(lambda r: True)

    @property
    def n_tensors(self) -> int:
        """Number of distinct, not excluded storages saved for backward."""
        return sum(1 for r in self.records if r.new and not r.excluded)


def saved_activation_bytes(fn: Callable[..., Any], *args: Any, exclude: Iterable[Tensor] = (),
                           **kwargs: Any) -> int:
    """Bytes of activations saved for backward while running ``fn(*args, **kwargs)`` (see :class:`SavedTensorLog`)."""
    if not callable(fn):
        raise TypeError(f"`fn` must be a callable (the forward pass to measure), got {type(fn).__name__}")
    with SavedTensorLog(exclude=exclude) as log:
        fn(*args, **kwargs)
    return log.total_bytes


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``y = c · x^p`` on log-log axes: ``log y = p log x + log c``; returns ``(p, c)``.

    Needs at least two pairs, every x and y finite and > 0 (a logarithm of 0 or of a negative number has no
    fit) and at least two distinct x (else the slope is undefined); anything else is a ValueError.
    """
    if isinstance(x, (str, bytes)) or isinstance(y, (str, bytes)):
        raise TypeError("x and y must be sequences of numbers, not strings")
    xt = torch.as_tensor(x, dtype=torch.float64).flatten()
    yt = torch.as_tensor(y, dtype=torch.float64).flatten()
    if xt.numel() < 2 or xt.shape != yt.shape:
        raise ValueError(f"fit_power_law needs at least two (x, y) pairs of equal length, got {xt.numel()} x and "
                         f"{yt.numel()} y")
    for name, t in (("x", xt), ("y", yt)):
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            bad = t[~(torch.isfinite(t) & (t > 0))][0].item()
            raise ValueError(f"every `{name}` must be finite and > 0 for a log-log fit, got {bad}; drop that point "
                             "(a size or a byte count of 0 has no logarithm)")
    if bool((xt == xt[0]).all()):
        raise ValueError(f"all x are equal ({xt[0].item()}): the exponent is undefined; measure at two or more sizes")
    lx, ly = torch.log(xt), torch.log(yt)
    A = torch.stack([lx, torch.ones_like(lx)], dim=1)
    sol = torch.linalg.lstsq(A, ly[:, None]).solution.flatten()
    return float(sol[0]), float(torch.exp(sol[1]))
